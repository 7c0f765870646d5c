"""`varith classify`: print the complexity class (S0..S5, M0..M4+, N1..N4+) of each question, one per line."""

from __future__ import annotations

import argparse
import sys

HELP = "print the complexity class (S0..S5, M0..M4+, N1..N4+; UNKNOWN for *) of each question"

DEFAULT_DIGITS = 6


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--n-digits",
        type=int,
        default=DEFAULT_DIGITS,
        metavar="N",
        help=f"digits per operand; shorter operands are left-padded with zeros (default {DEFAULT_DIGITS})",
    )
    parser.add_argument(
        "questions",
        nargs="*",
        metavar="QUESTION",
        help="questions like 555+445 or 099004-000008 (an '=...' tail is ignored); "
        "read one per line from standard input when none are given (blank lines are skipped)",
    )


def run(args: argparse.Namespace) -> int:
    from arith.complexity import class_names, classify
    from arith.vocab import parse_questions

    if args.questions:
        lines = list(args.questions)
    else:
        lines = [line for line in sys.stdin.read().splitlines() if line.strip()]
    x, y, op = parse_questions(lines, args.n_digits)
    labels = class_names(classify(x, y, op))
    if labels:
        sys.stdout.write("\n".join(labels) + "\n")
    return 0
