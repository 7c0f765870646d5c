"""Verdicts that never lie (issue 19): a run whose loss turns nan fails at that step with one line and keeps
its last good checkpoint; Ctrl-C and SIGTERM stop a run with a checkpoint at the step it reached (`stopped`,
not `failed`), and running the same command again ends bit-identical to an uninterrupted run; training and
sweeps say how far they are; a --runs-dir that is a file is refused even with --dry-run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import assert_one_line_error
from tests.test_new_user import VARITH, user

TINY = "add_d2_l1_h3_t300_s123456"
SMALL = ("--d-model", "32", "--d-head", "8")


def non_progress_lines(text: str, name: str) -> list[str]:
    """stderr without the plain progress lines (`NAME: 15/300 step (5%), ...`)."""
    return [ln for ln in text.splitlines() if ln.strip() and not re.match(rf"{name}: [\d,]+/[\d,]+ step \(", ln)]


def status_row(work: Path, runs: str) -> dict:
    proc = user("status", "--runs-dir", runs, "--json", cwd=work)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 1, rows
    return rows[0]


def status_table(work: Path, runs: str) -> str:
    proc = user("status", "--runs-dir", runs, cwd=work)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# ------------------------------------------------------------------------------------------------ divergence


def test_a_nan_loss_fails_the_run_at_that_step_and_keeps_the_last_good_checkpoint(tmp_path):
    proc = user("train", TINY, "--lr", "1e6", *SMALL, "--checkpoint-every", "1", "--out", "badruns", cwd=tmp_path)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "final loss" not in proc.stdout
    lines = non_progress_lines(proc.stderr, TINY)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    m = re.search(r"loss is (nan|inf) at step (\d+).*the last good checkpoint \(step (\d+)\) is kept", lines[0])
    assert m, lines[0]
    step, kept = int(m.group(2)), int(m.group(3))
    assert kept == step - 1  # a checkpoint every step: the one before the bad step
    run = tmp_path / "badruns" / TINY
    assert not (run / f"{TINY}.pth").exists() and not (run / f"{TINY}_train.json").exists()
    assert not (run / "manifest.json").exists()
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("step_*"))
    assert ckpts[-1] == f"step_{kept:08d}", ckpts  # nothing written from the non-finite state
    from safetensors.torch import load_file

    kept_weights = load_file(run / "checkpoints" / ckpts[-1] / "model.safetensors")
    params = {k: t for k, t in kept_weights.items() if t.is_floating_point() and not k.endswith("IGNORE")}
    assert params and all(torch.isfinite(t).all() for t in params.values())  # (IGNORE: the mask's -inf)

    row = status_row(tmp_path, "badruns")
    assert row["state"] == "failed" and f"at step {step}" in row["detail"], row
    table = status_table(tmp_path, "badruns")
    assert re.search(rf"{TINY}\s+failed \(.*loss is (nan|inf) at step {step}", table), table


@pytest.mark.parametrize(
    "flag, value, words",
    [
        ("--lr", "inf", ("--lr", "finite", "inf")),
        ("--lr", "-inf", ("--lr", "finite")),
        ("--lr", "nan", ("--lr", "finite", "nan")),
        ("--lr", "1e999", ("--lr", "finite", "inf")),
        ("--weight-decay", "inf", ("--weight-decay", "finite")),
        ("--weight-decay", "nan", ("--weight-decay", "finite")),
        ("--weight-decay", "-0.1", ("--weight-decay", "0 or more")),
    ],
)
def test_a_setting_that_is_not_a_finite_number_is_refused_up_front(tmp_path, flag, value, words):
    proc = user("train", TINY, f"{flag}={value}", *SMALL, "--out", "runs", cwd=tmp_path)
    assert_one_line_error(proc, *words)
    assert not (tmp_path / "runs").exists()


def test_a_diverging_run_in_a_sweep_fails_once_and_is_not_retried(tmp_path):
    sweep = ("sweep", "--seeds", "123456", "--archs", "add_d2_l1_h3_t300", "--steps", "40", "--cluster", "debug")
    proc = user(*sweep, *SMALL, "--lr", "1e6", "--retries", "2", "--runs-dir", "runs", cwd=tmp_path)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    name = "add_d2_l1_h3_t40_s123456"
    failed = [ln for ln in proc.stdout.splitlines() if ln.startswith(f"failed {name}: ")]
    assert len(failed) == 1 and re.search(r"loss is (nan|inf) at step \d+", failed[0]), proc.stdout
    assert "retry" not in proc.stdout
    row = status_row(tmp_path, "runs")
    assert row["state"] == "failed" and "Diverged" in row["detail"], row


# ------------------------------------------------------------------------------------------------ signals


def start(*args: str, cwd: Path) -> subprocess.Popen:
    """`varith ARGS` started like `user(...)` does, left running."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV_"))}
    return subprocess.Popen(
        [str(VARITH), *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def signal_after_step(proc: subprocess.Popen, progress: Path, step: int, sig: int) -> tuple[str, str]:
    """Send `sig` once progress.json says `step` steps are done; the process's (stdout, stderr)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads(progress.read_text()).get("step", 0) >= step:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    return proc.communicate(timeout=300)


def test_sigterm_checkpoints_shows_stopped_and_the_same_command_resumes_bit_identically(tmp_path):
    cmd = ("train", TINY, "--steps", "100", *SMALL, "--log-every", "5")
    name = "add_d2_l1_h3_t100_s123456"  # --steps renames the run
    whole = user(*cmd, "--out", "whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr

    # the job log's progress: a plain line about every 5% with the step, the loss, the rate and the time left
    lines = [ln for ln in whole.stderr.splitlines() if ln.startswith(f"{name}: ")]
    assert 15 <= len(lines) <= 24, whole.stderr
    for line in lines[:-1]:
        assert re.match(rf"{name}: \d+/100 step \(\d+%\), loss [\d.e-]+, [\d.,]+ step/s, .*, ETA \d", line), line
    assert lines[-1].startswith(f"{name}: 100/100 step (100%)") and "ETA" not in lines[-1]

    part = start(*cmd, "--no-progress", "--out", "part", cwd=tmp_path)
    out, err = signal_after_step(part, tmp_path / "part" / name / "progress.json", 20, signal.SIGTERM)
    assert part.returncode == 143, (part.returncode, out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    m = re.search(r"interrupted by SIGTERM at step (\d+); checkpoint (\S+); run the same command again", err)
    assert m, err
    step = int(m.group(1))
    assert 20 <= step < 100
    run = tmp_path / "part" / name
    assert Path(tmp_path / m.group(2)) == run / "checkpoints" / f"step_{step:08d}"  # no step lost
    assert (run / "checkpoints" / f"step_{step:08d}" / "model.safetensors").is_file()
    assert not (run / f"{name}.pth").exists()

    row = status_row(tmp_path, "part")
    assert row["state"] == "stopped" and row["step"] == step and "SIGTERM" in row["detail"], row
    table = status_table(tmp_path, "part")
    assert f"stopped (at step {step} by SIGTERM; run again to continue)" in table and "failed" not in table

    again = user(*cmd, "--no-progress", "--out", "part", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("resuming from step") == 1 and f"resuming from step {step} " in again.stderr
    assert status_row(tmp_path, "part")["state"] == "done"
    a = torch.load(tmp_path / "whole" / name / f"{name}.pth", weights_only=True)
    b = torch.load(run / f"{name}.pth", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    la = json.loads((tmp_path / "whole" / name / f"{name}_train.json").read_text())["TrainingLoss"]
    lb = json.loads((run / f"{name}_train.json").read_text())["TrainingLoss"]
    assert la == lb


def test_ctrl_c_stops_with_a_checkpoint_and_exit_130(tmp_path):
    part = start("train", TINY, *SMALL, "--log-every", "5", "--no-progress", "--out", "runs", cwd=tmp_path)
    out, err = signal_after_step(part, tmp_path / "runs" / TINY / "progress.json", 10, signal.SIGINT)
    assert part.returncode == 130, (part.returncode, out, err)
    assert len(err.strip().splitlines()) == 1 and "interrupted by SIGINT at step" in err, err
    step = int(re.search(r"at step (\d+)", err).group(1))
    assert (tmp_path / "runs" / TINY / "checkpoints" / f"step_{step:08d}").is_dir()
    row = status_row(tmp_path, "runs")
    assert row["state"] == "stopped" and row["step"] == step and "SIGINT" in row["detail"], row


def test_signals_someone_else_handles_are_left_to_them():
    """Inside a submitit job SIGTERM (and SIGUSR2) are submitit's: Interrupts takes over default handlers only."""
    from arith.train import Interrupts

    def theirs(signum, frame):
        pass

    old = signal.signal(signal.SIGTERM, theirs)
    try:
        with Interrupts() as interrupts:
            assert signal.getsignal(signal.SIGTERM) is theirs
            assert signal.getsignal(signal.SIGINT) == interrupts._handle
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            assert interrupts.caught == "SIGINT"  # noted, not raised
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, old)


# ------------------------------------------------------------------------------------------------ sweeps


def test_a_sweep_shows_each_runs_progress_and_the_job_log_has_it(tmp_path):
    proc = user(
        "sweep", "--seeds", "123456", "--archs", "add_d2_l1_h3_t300", "--cluster", "local", *SMALL,
        "--log-every", "10", "--poll", "0.1", "--runs-dir", "runs", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shown = [ln for ln in proc.stdout.splitlines() if ln.startswith(f"progress {TINY}: ")]
    assert 1 <= len(shown) <= 20, proc.stdout  # at most one per 5% of the steps
    for line in shown:
        assert re.match(rf"progress {TINY}: step [\d,]+/300 \(\d+%\), loss [\d.e-]+, [\d.,]+ step/s, ETA \d", line)
    steps = [int(re.search(r"step (\d+)/", ln).group(1)) for ln in shown]
    assert steps == sorted(set(steps))
    lines = proc.stdout.splitlines()
    assert lines.index(shown[-1]) < next(i for i, ln in enumerate(lines) if ln.startswith(f"done {TINY}"))

    log = Path(status_row(tmp_path, "runs")["log"])
    text = log.read_text()
    plain = [ln for ln in text.splitlines() if ln.startswith(f"{TINY}: ") and " step (" in ln]
    assert 10 <= len(plain) <= 24, text
    assert "ETA" in plain[0] and "loss" in plain[0] and "step/s" in plain[0]


def test_a_dry_run_refuses_a_runs_dir_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    base = ("sweep", "--seeds", "123456", "--archs", "add_d2_l1_h3_t40", "--cluster", "local", "--dry-run")
    assert_one_line_error(user(*base, "--runs-dir", "afile", cwd=tmp_path), "--runs-dir afile", "not a folder")
    assert_one_line_error(user(*base, "--runs-dir", "afile/runs", cwd=tmp_path), "afile/runs", "not a folder")
    assert (tmp_path / "afile").read_text() == "not a folder"
    ok = user(*base, "--runs-dir", "new/runs", cwd=tmp_path)  # a folder still to be made is fine
    assert ok.returncode == 0, ok.stderr
    assert not (tmp_path / "new").exists()
