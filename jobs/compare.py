"""`varith compare A_behavior.json B_behavior.json` (or two maths files): shared useful nodes (Jaccard),
agreement per tag group, nodes only in A or only in B (analysis.compare). Numbers agree within a tolerance the
output states (`--fail-tol`, `--attn-tol`); files of models with different digit counts are refused; a maths
file older than the behaviour file beside it (stale) gets a warning."""

from __future__ import annotations

import argparse
import json
import sys

from analysis.compare import DEFAULT_ATTN_TOL, DEFAULT_FAIL_TOL

HELP = "compare two behaviour (or maths) files: shared nodes (Jaccard), per-tag agreement, nodes only in one"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", metavar="A", help="a behaviour or maths JSON file")
    p.add_argument("b", metavar="B", help="the file to compare it with")
    p.add_argument(
        "--fail-tol",
        type=float,
        default=DEFAULT_FAIL_TOL,
        metavar="POINTS",
        help=f"Fail%% values agree within this many percentage points (default {DEFAULT_FAIL_TOL:g})",
    )
    p.add_argument(
        "--attn-tol",
        type=float,
        default=DEFAULT_ATTN_TOL,
        metavar="POINTS",
        help="Attn tags agree when every attended position's share is within this many points (a position one "
        f"file does not list counts as 0%%; default {DEFAULT_ATTN_TOL:g})",
    )
    p.add_argument("--json", action="store_true", help="print the comparison as one JSON object")


def run(args: argparse.Namespace) -> int:
    from analysis.compare import compare_files, format_comparison, stale_warnings

    c = compare_files(args.a, args.b, args.fail_tol, args.attn_tol)
    for warning in stale_warnings(args.a, args.b):
        print(f"varith compare: warning: {warning}", file=sys.stderr)
    print(json.dumps(c.to_dict()) if args.json else format_comparison(c, args.a, args.b))
    return 0
