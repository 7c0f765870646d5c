"""Running `varith train` / `varith sweep` again on a run folder that already holds training, and what
`varith status` says about it: a finished run with the same settings is left alone, one with other settings
is refused (one rule for train and sweep: the recorded `Config` vs the requested one), a checkpoint that
does not fit or is damaged is one error line, and a deliberate `--stop-after` is not a failure."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error
from tests.test_new_user import user

DONE = "add_d2_l1_h3_t40_s123456"  # trained to the end with SMALL into done/
STOPPED = "add_d2_l1_h3_t40_s222222"  # stopped at step 20 with SMALL into stopped/
SMALL = ("--d-model", "32", "--d-head", "8", "--no-progress")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A folder with `done/<DONE>/` (finished) and `stopped/<STOPPED>/` (--stop-after 20, checkpoint at 20)."""
    work = tmp_path_factory.mktemp("rerun")
    done = user("train", DONE, *SMALL, "--out", "done", cwd=work)
    assert done.returncode == 0, done.stderr
    stopped = user(
        "train", STOPPED, *SMALL, "--out", "stopped", "--checkpoint-every", "20", "--stop-after", "20", cwd=work
    )
    assert stopped.returncode == 0, stopped.stderr
    return work


@pytest.fixture
def work(trained, tmp_path) -> Path:
    """A private copy of the trained folders, as the test's working folder."""
    for name in ("done", "stopped"):
        shutil.copytree(trained / name, tmp_path / name)
    return tmp_path


def test_a_finished_run_with_the_same_settings_is_left_alone(work):
    weights = work / "done" / DONE / f"{DONE}.pth"
    before = sha(weights)
    proc = user("train", DONE, *SMALL, "--out", "done", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "already done" in proc.stdout and len(proc.stdout.strip().splitlines()) == 1, proc.stdout
    assert sha(weights) == before


def test_a_finished_run_with_other_settings_is_refused_and_kept(work):
    run = work / "done" / DONE
    weights = run / f"{DONE}.pth"
    before = sha(weights)
    proc = user("train", DONE, "--out", "done", "--no-progress", cwd=work)  # the default widths: 510 / 170
    assert_one_line_error(proc, "d_model 32 != 510", "d_head 8 != 170", "--out", "--force")
    assert sha(weights) == before
    assert json.loads((run / f"{DONE}_train.json").read_text())["Config"]["d_model"] == 32


def test_force_retrains_and_names_the_stale_files_of_the_old_weights(work):
    run = work / "done" / DONE
    accuracy = run / f"{DONE}_accuracy.json"
    accuracy.write_text('{"made from": "the old weights"}')
    other = ("--d-model", "16", "--d-head", "4", "--no-progress")
    proc = user("train", DONE, *other, "--out", "done", "--force", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / f"{DONE}_train.json").read_text())["Config"]["d_model"] == 16
    assert "stale" in proc.stderr and accuracy.name in proc.stderr
    assert accuracy.exists()  # kept: the user decides
    status = user("status", "--runs-dir", "done", "--json", cwd=work)
    assert json.loads(status.stdout)["state"] == "done"


def test_a_sweep_does_not_count_a_run_of_other_settings_as_done(work):
    sweep = ("sweep", "--seeds", "123456", "--archs", "add_d2_l1_h3_t300", "--steps", "40", "--cluster", "debug")
    proc = user(*sweep, "--d-model", "64", "--d-head", "16", "--lr", "1e-2", "--runs-dir", "done", cwd=work)
    assert_one_line_error(proc, DONE, "d_model 32 != 64", "lr 8e-05 != 0.01", "--force")
    assert "skip" not in proc.stdout
    # the same rule says the same settings are done
    same = user(*sweep, "--d-model", "32", "--d-head", "8", "--runs-dir", "done", cwd=work)
    assert same.returncode == 0, same.stderr
    assert f"skip {DONE}: done" in same.stdout


def test_resuming_a_checkpoint_of_other_settings_is_refused_before_loading(work):
    proc = user("train", STOPPED, "--d-model", "64", "--d-head", "16", "--out", "stopped", "--no-progress", cwd=work)
    assert_one_line_error(proc, "step_00000020", "d_model 32 != 64", "--no-resume")
    assert (work / "stopped" / STOPPED / "checkpoints" / "step_00000020" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "damage",
    ["truncated weights", "no optimizer", "older checkpoint of other widths"],
)
def test_a_checkpoint_that_cannot_be_loaded_is_one_error_line(work, damage):
    ckpt = work / "stopped" / STOPPED / "checkpoints" / "step_00000020"
    flags = SMALL
    if damage == "truncated weights":
        data = (ckpt / "model.safetensors").read_bytes()
        (ckpt / "model.safetensors").write_bytes(data[:100])
    elif damage == "no optimizer":
        (ckpt / "optimizer.bin").unlink()
    else:  # a checkpoint without its settings record (older versions): loading itself must fail cleanly
        (ckpt / "train_config.json").unlink()
        flags = ("--d-model", "64", "--d-head", "16", "--no-progress")
    proc = user("train", STOPPED, *flags, "--out", "stopped", cwd=work)
    assert_one_line_error(proc, str(Path("stopped") / STOPPED / "checkpoints" / "step_00000020"), "--no-resume")


def test_status_shows_a_deliberate_stop_as_stopped_not_failed(work):
    proc = user("status", "--runs-dir", "stopped", cwd=work)
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith(STOPPED))
    assert "stopped" in row and "failed" not in row
    rows = json.loads(user("status", "--runs-dir", "stopped", "--json", cwd=work).stdout)
    assert rows["state"] == "stopped" and rows["step"] == 20


def test_status_of_a_missing_runs_dir_is_an_error(tmp_path):
    assert_one_line_error(user("status", "--runs-dir", "nonexist", cwd=tmp_path), "nonexist", "no such folder")
    (tmp_path / "empty").mkdir()
    proc = user("status", "--runs-dir", "empty", cwd=tmp_path)
    assert proc.returncode == 0 and "no runs under empty" in proc.stdout
