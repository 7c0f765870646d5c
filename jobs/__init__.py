"""Entry points users call (`varith <command>`): thin compositions of arith + analysis + hpc."""
