"""`python -m bench` (`make bench`): every benchmark, one JSON line per figure."""

import importlib
import sys

MODULES = (
    "bench.bench_core",
    "bench.bench_verify",
    "bench.bench_sweep",
    "bench.bench_ablate",
    "bench.bench_algo",
    "bench.bench_study",
    "bench.bench_precision",
    "bench.bench_gpu",
    "bench.bench_shapes",
)

for name in MODULES if len(sys.argv) < 2 else sys.argv[1:]:
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        continue
    module.main()
