"""`varith classify` through the real command line (python -m jobs classify ...)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def varith(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs", "classify", *args],
        cwd=ROOT,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_questions_as_arguments():
    r = varith("555+445", "54545+45455", "99004-8", "100000-1", "100-200", "3111-3117", "12*3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["S3", "S5", "M3", "M4+", "N1", "N4+", "UNKNOWN"]
    assert r.stderr == ""


def test_questions_on_stdin_keep_blank_lines_aligned():
    text = "12345+33333\n\n   \n22222-11113=+0011109\n 0100 - 0200 \n99111-99111\n"
    r = varith("--n-digits", "5", stdin=text)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["S0", "", "", "M1", "N1", "M0"]


def test_empty_stdin_prints_nothing_and_blank_stdin_prints_blank_lines():
    r = varith(stdin="")
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""
    r = varith(stdin="\n\n")
    assert r.returncode == 0 and r.stdout == "\n\n" and r.stderr == ""


def test_crlf_lines_and_a_last_line_without_newline():
    r = varith("--n-digits", "3", stdin="555+445\r\n100-200")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["S3", "N1"]


def test_n_digits_limits_operand_width():
    assert varith("--n-digits", "7", "1234567+1").stdout.splitlines() == ["S0"]
    r = varith("1234567+1")  # default is 6 digits
    assert r.returncode == 2
    assert "1234567" in r.stderr and "6 digits" in r.stderr


def test_help():
    r = varith("--help")
    assert r.returncode == 0
    assert "--n-digits" in r.stdout and "QUESTION" in r.stdout and "standard input" in r.stdout


@pytest.mark.parametrize(
    "args, stdin, fragment",
    [
        (["abc"], None, "question 'abc'"),
        (["555+445", "12/4"], None, "question '12/4'"),
        (["１２+3"], None, "character '１' (U+FF11) is not an ASCII digit"),
        (["12+3", ""], None, "argument 2 is an empty question"),
        (["--n-digits", "3", "1000+1"], None, "operand 1000 has more than 3 digits"),
        (["--n-digits", "0", "1+1"], None, "n_digits must be between 1 and 20"),
        (["--n-digits", "six", "1+1"], None, "invalid int value"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, stdin, fragment):
    r = varith(*args, stdin=stdin)
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("varith classify: error:")
    assert fragment in lines[0]
    assert "Traceback" not in r.stderr
    assert r.stdout == ""


def test_a_bad_line_on_stdin_comes_after_the_answers_before_it():
    r = varith(stdin="555+445\n\n12/4\n1+1\n")
    assert r.returncode == 2
    assert r.stdout == "S3\n\n"
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "line 3: question '12/4'" in lines[0], r.stderr
