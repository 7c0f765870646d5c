"""The README's commands as a new user types them: from a working folder, relative paths, default flags."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, assert_one_line_error

BIN = Path(sys.executable).parent
VARITH = BIN / "varith"
TINY = "add_d2_l1_h3_t300_s123456"


def user(*args: str, cwd: Path, umask: int = 0o022, timeout: float = 600) -> subprocess.CompletedProcess:
    """The `varith` console script, started the way a shell starts it (its own umask, its working folder)."""

    def setup():
        os.umask(umask)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV_"))}
    return subprocess.run(
        [str(VARITH), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=setup,
        env=env,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`varith train NAME --out runs` in a fresh working folder, with the progress report on (not a terminal)."""
    work = tmp_path_factory.mktemp("work")
    proc = user(
        "train",
        TINY,
        "--out",
        "runs",
        "--d-model",
        "32",
        "--d-head",
        "8",
        "--lr",
        "3e-3",
        "--log-every",
        "10",
        cwd=work,
    )
    return work, proc


def test_train_with_a_relative_out_finishes_the_run(trained):
    work, proc = trained
    assert proc.returncode == 0, proc.stderr
    run = work / "runs" / TINY
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["files"]) == {f"{TINY}.pth", f"{TINY}_train.json"}
    assert json.loads((run / "state.json").read_text())["state"] == "done"
    status = user("status", "--json", cwd=work)
    assert status.returncode == 0, status.stderr
    rows = [json.loads(line) for line in status.stdout.splitlines()]
    assert [(r["name"], r["state"]) for r in rows] == [(TINY, "done")]


def test_progress_in_a_log_is_plain_lines(trained):
    _work, proc = trained
    assert "\r" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith(f"{TINY}: ")]
    assert 15 <= len(lines) <= 24, proc.stderr  # about one line per 5%
    assert lines[-1].startswith(f"{TINY}: 300/300 step (100%)"), lines[-1]
    assert "e+" not in "".join(lines)


def test_artifacts_follow_the_umask(trained):
    work, _proc = trained
    run = work / "runs" / TINY
    for name in (f"{TINY}.pth", f"{TINY}_train.json", "manifest.json", "state.json"):
        mode = stat.S_IMODE((run / name).stat().st_mode)
        assert mode == 0o644, (name, oct(mode))


def test_verify_from_the_working_folder(trained):
    work, _proc = trained
    weights = f"runs/{TINY}/{TINY}.pth"
    proc = user("verify", weights, "--exhaustive", "--workers", "1", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert (work / "runs" / TINY / f"{TINY}_accuracy.json").is_file()
    assert "10,000 questions" in proc.stdout


def test_an_unwritable_out_is_refused_before_training(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    proc = user("train", TINY, "--out", "afile/runs", "--d-model", "32", "--d-head", "8", cwd=tmp_path)
    assert_one_line_error(proc, "--out", "afile/runs", "not writable")
    assert not (tmp_path / "runs").exists()


def test_make_demo_from_a_copy_of_the_repository(tmp_path):
    """`make demo` in a checkout whose venv exists: the Makefile's own commands, relative `runs` folder."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if files.returncode != 0:
        pytest.skip("not a git checkout")
    copy = tmp_path / "repo"
    for rel in files.stdout.splitlines():
        if (REPO / rel).is_file():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, copy / rel)
    venv = BIN.parent
    installed = venv / ".installed"
    proc = subprocess.run(
        ["make", "demo", f"VENV={venv}", f"DEMO_MODEL={TINY}", "-o", str(installed)],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = copy / "runs" / TINY
    assert (run / f"{TINY}_accuracy.json").is_file()
    assert "done" in proc.stdout.splitlines()[-1] or any(TINY in ln and "done" in ln for ln in proc.stdout.splitlines())


def test_a_misspelt_marker_field_is_named_not_swallowed(tmp_path):
    from arith.errors import InputError
    from jobs.runs import markers

    run = tmp_path / "runs" / TINY
    markers.mark_running(run, None, "cli", None, None)
    data = json.loads((run / "state.json").read_text())
    data["stpes_done"] = 3
    (run / "state.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="unknown marker field.*stpes_done"):
        markers.read_marker(run)
    proc = user("status", cwd=tmp_path)
    assert_one_line_error(proc, "stpes_done")


def test_an_unwritable_runs_dir_is_refused_before_any_job(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    proc = user(
        "sweep", "--seeds", "123456", "--archs", "add_d2_l1_h3_t40", "--cluster", "local", "--runs-dir", "afile/runs",
        cwd=tmp_path,
    )  # fmt: skip
    assert_one_line_error(proc, "--runs-dir", "not writable")
