"""`varith` itself: lazy imports, help for every subcommand and flag, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jobs.cli import COMMANDS, build_parser, help_line
from tests.conftest import REPO

HEAVY = ("torch", "submitit", "dask", "distributed", "zarr", "accelerate")


@pytest.mark.parametrize("argv", [["--help"], ["classify", "12+34"], ["classify", "--help"]])
def test_light_commands_start_without_the_heavy_packages(argv):
    code = (
        "import sys\nfrom jobs.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_top_level_help_lists_every_subcommand_with_its_line():
    proc = subprocess.run([sys.executable, "-m", "jobs", "--help"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for name, module in COMMANDS.items():
        line = help_line(module)
        assert line, name
        assert name in text and " ".join(line.split())[:30] in text


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_flag_is_documented(command):
    parser = build_parser(only=command)
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    for action in sub._actions:
        assert action.help and action.help != "==SUPPRESS==", f"{command} {action.option_strings or action.dest}"
        assert "DESIGN.md" not in action.help and "spec " not in action.help, (command, action.help)
        if action.choices:
            assert action.metavar is None or all(str(c) in action.help for c in action.choices), action.dest
