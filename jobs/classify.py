"""`varith classify`: print the complexity class (S0..S5, M0..M4+, N1..N4+) of each question, one per line.

Standard input is read batch by batch (one output line per input line; a blank line gives a blank line).
"""

from __future__ import annotations

import argparse

HELP = "print the complexity class (S0..S5, M0..M4+, N1..N4+; UNKNOWN for *) of each question"

DEFAULT_DIGITS = 6


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--n-digits",
        type=int,
        default=DEFAULT_DIGITS,
        metavar="N",
        help=f"digits per operand, 1 to 20; shorter operands are left-padded with zeros (default {DEFAULT_DIGITS})",
    )
    parser.add_argument(
        "questions",
        nargs="*",
        metavar="QUESTION",
        help="questions like 555+445 or 099004-000008 (ASCII digits; an '=...' tail is ignored); "
        "read one per line from standard input when none are given, where a blank line gives a blank output line",
    )


def run(args: argparse.Namespace) -> int:
    from arith.complexity import class_names, classify
    from arith.vocab import Layout, answer_stream

    Layout(args.n_digits)  # a bad --n-digits fails before any input is read
    answer_stream(args.questions, args.n_digits, lambda x, y, op: class_names(classify(x, y, op)))
    return 0
