"""`varith` command line: one subcommand per module in `jobs/`, imported lazily so `--help` stays fast.

Each subcommand module provides `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`.
Bad input anywhere raises `arith.errors.InputError`; it is printed as one line and the exit code is 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from arith.errors import InputError

# subcommand -> module; the module is imported only when that subcommand (or `--help`) needs it.
COMMANDS: dict[str, str] = {
    "train": "jobs.train",
    "predict": "jobs.predict",
    "classify": "jobs.classify",
    "verify": "jobs.verify",
    "sweep": "jobs.sweep",
    "status": "jobs.status",
}


class _Parser(argparse.ArgumentParser):
    """argparse already exits 2 on bad arguments; make its message exactly one line."""

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="varith", description="Train, verify and dissect arithmetic transformers.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a subcommand still being written must not break the others
            if exc.name != module_name:
                raise
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _prog=p.prog)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except InputError as exc:
        print(f"{args._prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{args._prog}: interrupted", file=sys.stderr)
        return 130
