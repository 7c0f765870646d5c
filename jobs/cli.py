"""`varith` command line: one subcommand per module in `jobs/`.

Each subcommand module provides `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`. Only the
module of the subcommand being run is imported, so `varith --help` and `varith classify` start without torch,
submitit or Dask; `varith --help` reads each module's `HELP` line from its source without importing it.
Bad input anywhere raises `arith.errors.InputError`; it is printed as one line and the exit code is 2.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import errno
import importlib
import importlib.util
import os
import sys

from arith.errors import InputError

# subcommand -> module
COMMANDS: dict[str, str] = {
    "train": "jobs.train",
    "predict": "jobs.predict",
    "classify": "jobs.classify",
    "verify": "jobs.verify",
    "ablate": "jobs.ablate",
    "algo": "jobs.algo",
    "sweep": "jobs.sweep",
    "status": "jobs.status",
    "regenerate": "jobs.regenerate",
    "publish": "jobs.publish",
    "fetch": "jobs.fetch",
    "compare": "jobs.compare",
    "zoo": "jobs.zoo",
    "study": "jobs.study",
}


class _Parser(argparse.ArgumentParser):
    """argparse already exits 2 on bad arguments; make its message exactly one line."""

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"{self.prog}: error: {message}\n")


def help_line(module_name: str) -> str:
    """The module's `HELP = "..."` constant, read from its source (no import)."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        return ""
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read(), spec.origin)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "HELP" for t in node.targets):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                return node.value.value
    return ""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with `only`, just that subcommand's module is imported and given its arguments (the
    others are listed by their help line)."""
    parser = _Parser(prog="varith", description="Train, verify and dissect arithmetic transformers.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, module_name in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_line(module_name))
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _prog=p.prog)
    return parser


def _chosen(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the first word that is one), else None."""
    for word in argv:
        if word in COMMANDS:
            return word
        if not word.startswith("-"):
            return None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = _chosen(argv)
    parser = build_parser(only=chosen or "")
    args = parser.parse_args(argv)
    try:
        code = int(args._run(args) or 0)
        sys.stdout.flush()  # a full disk shows here, not in the interpreter's last flush
        return code
    except InputError as exc:
        print(f"{args._prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{args._prog}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno not in _FULL:
            raise
        _drop_stdout()
        where = f": {exc.filename}" if exc.filename else ""
        print(f"{args._prog}: error: cannot write ({exc.strerror}){where}", file=sys.stderr)
        return 1


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # the disk (or quota) is full: one line, not a traceback


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush of what could not be written stays quiet."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
