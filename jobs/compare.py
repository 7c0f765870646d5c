"""`varith compare A_behavior.json B_behavior.json` (or two maths files): shared useful nodes (Jaccard),
agreement per tag group, nodes only in A or only in B (analysis.compare)."""

from __future__ import annotations

import argparse
import json

HELP = "compare two behaviour (or maths) files: shared nodes (Jaccard), per-tag agreement, nodes only in one"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", metavar="A", help="a behaviour or maths JSON file")
    p.add_argument("b", metavar="B", help="the file to compare it with")
    p.add_argument("--json", action="store_true", help="print the comparison as one JSON object")


def run(args: argparse.Namespace) -> int:
    from analysis.compare import compare_files, format_comparison

    c = compare_files(args.a, args.b)
    print(json.dumps(c.to_dict()) if args.json else format_comparison(c, args.a, args.b))
    return 0
