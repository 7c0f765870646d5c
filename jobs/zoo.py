"""`varith zoo FOLDER... [--out DIR]`: one table over every model found in the folders (analysis.zoo).

FOLDER: a regeneration's `--out` folder (runs/ and hub/), run folders, hub folders of either layout, a folder of
published (fetched) models, the fetch cache. Per model: per question class (ADD, SUB, NEG) the questions tested
and failed, failures per million and the exact one-sided 95% upper bound; useful heads and MLPs (behaviour
file); nodes with an Algo tag (maths file); the final training loss; the stages whose artifacts exist. Written as
`zoo.md`, `zoo.csv` and `zoo.png` (accuracy per model and class) in `--out`; the Markdown is printed too.
"""

from __future__ import annotations

import argparse

HELP = "one table (Markdown, CSV, picture) over every model in run, hub or fetched folders of either layout"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folders", nargs="+", metavar="FOLDER", help="regeneration output, run, hub or fetched folders")
    p.add_argument("--out", default=".", help="where zoo.md, zoo.csv and zoo.png go (default: here)")
    p.add_argument("--stem", default="zoo", help="the files' name before .md/.csv/.png (default: zoo)")


def run(args: argparse.Namespace) -> int:
    from analysis.zoo import to_markdown, write_zoo, zoo_rows
    from arith.files import require_writable_dir

    rows = zoo_rows(args.folders)
    require_writable_dir(args.out, "--out")
    files = write_zoo(rows, args.out, args.stem)
    print(to_markdown(rows), end="")
    print(f"{len(rows)} model(s): {files.markdown} {files.csv} {files.picture}")
    return 0
