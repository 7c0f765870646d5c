"""`varith verify`'s output file and operations, as a user meets them: an --out that is not an accuracy file is
refused before any work and left as it is; an operation the model never learned gets predict's warning."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from analysis.accuracy import MAX_ACCURACY_BYTES
from tests.conftest import DEMO_NAME, assert_one_line_error, varith

WEIGHTS = f"m/{DEMO_NAME}.pth"
TRAIN_JSON = f"m/{DEMO_NAME}_train.json"


@pytest.fixture
def work(demo_model, tmp_path, monkeypatch) -> Path:
    """A working folder holding a copy of the demo model in m/ (so a test may aim --out at its files)."""
    (tmp_path / "m").mkdir()
    for suffix in (".pth", "_train.json"):
        shutil.copy(Path(demo_model).with_name(DEMO_NAME + suffix), tmp_path / "m" / (DEMO_NAME + suffix))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def verify(work: Path, *args: str):
    return varith("verify", WEIGHTS, "--suite", "handpicked", *args, cwd=work)


def assert_refused_before_work(proc, *fragments: str) -> None:
    assert_one_line_error(proc, *fragments, "left as it is", "--out")
    assert proc.stdout == ""  # no table: nothing was scored


@pytest.mark.parametrize("text", ["my notes\nkeep these\n", '{"a": 1}\n', "[1, 2, 3]\n", "\xff\xfe not utf-8"])
def test_an_out_file_that_is_not_an_accuracy_file_is_refused_and_kept(work, text):
    notes = work / "notes.txt"
    notes.write_bytes(text.encode("latin-1"))
    proc = verify(work, "--out", "notes.txt")
    assert_refused_before_work(proc, "notes.txt", "not an accuracy file")
    assert notes.read_bytes() == text.encode("latin-1")
    assert sorted(p.name for p in work.iterdir()) == ["m", "notes.txt"]  # no temporary file left either


def test_out_aimed_at_the_models_train_json_leaves_the_model_usable(work):
    before = (work / TRAIN_JSON).read_bytes()
    proc = verify(work, "--out", TRAIN_JSON)
    assert_refused_before_work(proc, f"{DEMO_NAME}_train.json", "not an accuracy file")
    assert (work / TRAIN_JSON).read_bytes() == before
    assert varith("predict", "--model", WEIGHTS, "12+34", cwd=work).returncode == 0


def test_a_damaged_default_accuracy_file_is_refused_not_replaced(work):
    damaged = work / f"m/{DEMO_NAME}_accuracy.json"
    damaged.write_text('{"random": {"model": "x", "suite": {"suite": "random"}')  # cut short
    proc = verify(work)
    assert_refused_before_work(proc, f"{DEMO_NAME}_accuracy.json", "not an accuracy file")
    assert damaged.read_text() == '{"random": {"model": "x", "suite": {"suite": "random"}'


def test_out_that_is_a_folder_is_one_line(work):
    (work / "ro").mkdir()
    proc = verify(work, "--out", "ro")
    assert_refused_before_work(proc, "ro", "is a folder")
    assert list((work / "ro").iterdir()) == [] and sorted(p.name for p in work.iterdir()) == ["m", "ro"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_out_that_is_a_device_is_refused_without_reading_it(work):
    # /dev/full reads zeros without end: reading it whole once grew the process to 23 GB
    assert_refused_before_work(verify(work, "--out", "/dev/full"), "/dev/full", "not a regular file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs fifos")
def test_out_that_is_a_fifo_is_refused_without_opening_it(work):
    os.mkfifo(work / "pipe")  # opening it would block for ever: the refusal must come from its type
    assert_refused_before_work(verify(work, "--out", "pipe"), "pipe", "not a regular file")


def test_an_oversized_out_file_is_refused_not_read(work):
    big = work / "big.json"
    with open(big, "wb") as f:  # sparse: takes no disk
        f.truncate(MAX_ACCURACY_BYTES + 1)
    assert_refused_before_work(verify(work, "--out", "big.json"), "big.json", "MiB")
    assert big.stat().st_size == MAX_ACCURACY_BYTES + 1


def test_an_empty_or_old_layout_out_file_takes_the_report(work):
    (work / "empty.json").write_text("")
    proc = verify(work, "--out", "empty.json", "--cluster", "none", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert list(json.loads((work / "empty.json").read_text())) == ["handpicked"]
    # an accuracy file in the old layout (one report at the top level) keeps that report under its suite's key
    old = json.loads((work / "empty.json").read_text())["handpicked"] | {"suite": {"suite": "random", "n_digits": 2}}
    (work / "old.json").write_text(json.dumps(old))
    proc = verify(work, "--out", "old.json", "--cluster", "none", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    data = json.loads((work / "old.json").read_text())
    assert list(data) == ["random", "handpicked"] and data["random"] == old


def test_verify_warns_about_an_operation_the_model_was_never_trained_on(work):
    args = ("verify", WEIGHTS, "--questions", "100", "--cluster", "none", "--no-progress")
    proc = varith(*args, "--ops", "mul", cwd=work)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("varith verify: warning: multiplication questions")
    assert DEMO_NAME in lines[0] and "addition only" in lines[0]
    # the operations it was trained on (the default, or named): no warning
    assert varith(*args, cwd=work).stderr == ""
    assert varith(*args, "--ops", "add", cwd=work).stderr == ""


def test_cluster_none_runs_the_same_blocks_into_the_same_store_and_a_rerun_reuses_them(work):
    """One meaning of `--cluster none` for every stage: no Dask, the blocks in this process, into the store (a
    rerun, or a run on any cluster, reuses them); the report equals a Dask run's."""
    args = ("verify", WEIGHTS, "--questions", "3000", "--block-size", "1000", "--no-progress")
    first = varith(*args, "--cluster", "none", "--out", "a.json", cwd=work)
    assert first.returncode == 0, first.stderr
    assert "random: 3 blocks (0 already done)" in first.stdout and (work / "m" / f"{DEMO_NAME}.zarr").is_dir()
    again = varith(*args, "--workers", "1", "--out", "b.json", cwd=work)  # a local Dask cluster this time
    assert again.returncode == 0, again.stderr
    assert "random: 3 blocks (3 already done)" in again.stdout
    a, b = (json.loads((work / f).read_text())["random"] for f in ("a.json", "b.json"))
    assert {k: v for k, v in a.items() if k != "scoring"} == {k: v for k, v in b.items() if k != "scoring"}
    # --dry-run says where the blocks would run, and starts and writes nothing
    dry = varith(*args, "--cluster", "none", "--dry-run", "--out", "c.json", cwd=work)
    assert dry.returncode == 0 and "blocks run in this process" in dry.stdout and not (work / "c.json").exists()
