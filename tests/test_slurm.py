"""Real SLURM: submits jobs to a running controller (start one with `bash tools/slurm_local.sh start`).

Skipped where `sbatch` is not installed or the controller does not answer. Tiny models (d_model 32) keep
each job at a few seconds; the preemption test waits for SLURM's requeue (~2 minutes on Slurm 22.05).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hpc import launcher, profile, scheduler
from jobs.cli import main
from jobs.runs import lifecycle as run_state
from jobs.runs import markers
from jobs.runs.rundir import RunDir
from tests.conftest import train_in

ROOT = Path(__file__).resolve().parents[1]
CI_PROFILE = ROOT / "hpc" / "profiles" / "ci.toml"
TINY = ["--d-model", "32", "--d-head", "8"]
ARCH = "add_d2_l1_h3_t40"

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(shutil.which("sbatch") is None, reason="sbatch not found: no SLURM on this machine"),
]


@pytest.fixture(scope="module", autouse=True)
def controller():
    try:
        scheduler.check_controller(timeout=15)
    except Exception as exc:  # InputError with the reason
        pytest.skip(f"SLURM controller does not answer: {exc}")


def sweep(runs: Path, *args: str) -> int:
    return main(
        [
            "sweep",
            "--cluster",
            "slurm",
            "--profile",
            str(CI_PROFILE),
            "--runs-dir",
            str(runs),
            "--poll",
            "1",
            *TINY,
            *args,
        ]
    )


def wait_for(predicate, timeout: float, what: str, every: float = 0.5):
    t0 = time.time()
    while time.time() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def single_process_weights(tmp_path: Path, name: str, **overrides) -> dict[str, torch.Tensor]:
    """The same run trained here, in one process, uninterrupted."""
    from arith.train import TrainConfig

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = train_in(
            TrainConfig(name=name, d_model=32, d_head=8, **overrides),
            tmp_path / "ref" / name,
            resume=False,
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    return torch.load(res.weights, weights_only=True)


def load(runs: Path, name: str) -> dict[str, torch.Tensor]:
    return torch.load(RunDir.of(runs, name).weights, weights_only=True)


def test_two_seed_sweep_lands_artifacts(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert sweep(runs, "--seeds", "123456", "654321", "--archs", ARCH) == 0
    ids = []
    for seed in ("123456", "654321"):
        name = f"{ARCH}_s{seed}"
        m = markers.read_marker(runs / name)
        assert m.state == "done" and m.cluster == "slurm" and m.attempts == 1
        assert markers.artifacts_ok(runs / name)
        assert Path(m.stdout).is_file() and "Job completed successfully" in Path(m.stdout).read_text()
        ids.append(m.job_id)
    # one array of two
    array = {i.split("_")[0] for i in ids}
    assert len(array) == 1 and sorted(i.split("_")[1] for i in ids) == ["0", "1"]
    # the sweep returns once the results are written; SLURM closes the jobs a moment later
    wait_for(lambda: scheduler.accounting(ids) == {i: "COMPLETED" for i in ids}, 60, "sacct COMPLETED")
    # what was submitted is what --dry-run renders
    array_id = array.pop()
    submitted = (runs / ".submitit" / array_id / f"{array_id}_submission.sh").read_text()
    cfg = launcher.LaunchConfig(
        cluster="slurm", folder=runs.absolute() / ".submitit" / "%j", slurm=profile.load_slurm(CI_PROFILE)
    )
    assert submitted == launcher.render_sbatch(cfg, 2, job_name="varith_x2")
    capsys.readouterr()
    assert sweep(runs, "--seeds", "123456", "654321", "--archs", ARCH) == 0
    assert "submitted" not in capsys.readouterr().out  # done runs are skipped


def test_ins_run_waits_for_addition_model_with_afterok(tmp_path):
    runs = tmp_path / "runs"
    assert sweep(runs, "--seeds", "777777", "--archs", "ins1_mix_d2_l2_h3_t40,add_d2_l1_h3_t40") == 0
    add = markers.read_marker(runs / "add_d2_l1_h3_t40_s777777")
    ins = markers.read_marker(runs / "ins1_mix_d2_l2_h3_t40_s777777")
    assert add.state == ins.state == "done" and add.finished_at <= ins.started_at
    script = (Path(ins.stdout).parent / f"{ins.job_id}_submission.sh").read_text()
    assert f"#SBATCH --dependency=afterok:{add.job_id}" in script


def test_two_task_ddp_over_gloo_matches_single_process(tmp_path):
    runs = tmp_path / "runs"
    name = f"{ARCH}_s246810"
    assert sweep(runs, "--seeds", "246810", "--archs", ARCH, "--tasks-per-node", "2") == 0
    m = markers.read_marker(runs / name)
    logs = sorted(Path(m.stdout).parent.glob("*_log.out"))
    assert len(logs) == 2 and "rank 1/2" in logs[1].read_text()  # two ranks really trained
    ddp, ref = load(runs, name), single_process_weights(tmp_path, name)
    assert ddp.keys() == ref.keys()
    for k in ref:
        if k.endswith("attn.b_K"):
            # the key bias cancels in the softmax: its gradient is zero up to rounding, and Adam turns that
            # rounding noise into steps of size ~lr. It drifts by at most lr per step and never changes the
            # model's output, so it is only bounded here.
            assert (ddp[k] - ref[k]).abs().max() <= 2 * 8e-5 * 40, k
            continue
        torch.testing.assert_close(ddp[k], ref[k], rtol=1e-4, atol=1e-5, msg=k)
    ddp_loss = json.loads((runs / name / f"{name}_train.json").read_text())["TrainingLoss"]
    ref_loss = json.loads((tmp_path / "ref" / name / f"{name}_train.json").read_text())["TrainingLoss"]
    assert ddp_loss == pytest.approx(ref_loss, rel=1e-5)


def test_preempted_job_requeues_resumes_and_matches_uninterrupted(tmp_path):
    import submitit

    runs = tmp_path / "runs"
    name = "add_d2_l1_h3_t2K_s135791"
    ck = ["--checkpoint-every", "100", "--log-every", "50"]
    assert sweep(runs, "--seeds", "135791", "--archs", "add_d2_l1_h3_t2K", *ck, "--no-wait") == 0
    m = markers.read_marker(runs / name)
    wait_for(lambda: (markers.read_progress(runs / name) or {}).get("step", 0) >= 300, 120, "step 300")
    assert (runs / name / "checkpoints").is_dir()
    job = submitit.SlurmJob(folder=runs.absolute() / ".submitit" / "%j", job_id=m.job_id)
    job._interrupt()  # SIGTERM + USR2, as a preemption
    # requeued: the marker goes back to submitted with the same job id, then the job resumes and finishes
    wait_for(lambda: markers.read_marker(runs / name).state == "submitted", 60, "requeue marker", every=0.2)
    ref = single_process_weights(tmp_path, name, checkpoint_every=100, log_every=50)  # meanwhile
    wait_for(lambda: markers.read_marker(runs / name).state in ("done", "failed"), 400, "the requeued job", every=2)
    m = markers.read_marker(runs / name)
    assert m.state == "done" and m.job_id == job.job_id and m.attempts == 1
    assert [e[1] for e in m.events] == ["submitted", "running", "submitted", "running", "done"]
    log = Path(m.stdout).read_text()
    assert "Caught signal SIGUSR2" in log and "requeue" in log.lower()
    got = load(runs, name)
    for k in ref:
        assert torch.equal(got[k], ref[k]), k  # bit-identical to an uninterrupted run
    assert run_state.collect(runs)[0].state == "done"


def test_crashed_job_is_reported_failed(tmp_path):
    runs = tmp_path / "runs"
    name = "add_d2_l1_h3_t2K_s864200"
    cmd = [
        sys.executable,
        "-m",
        "jobs",
        "sweep",
        "--cluster",
        "slurm",
        "--profile",
        str(CI_PROFILE),
        "--runs-dir",
        str(runs),
        "--poll",
        "1",
        "--retries",
        "0",
        *TINY,
        "--seeds",
        "864200",
        "--archs",
        "add_d2_l1_h3_t2K",
    ]
    driver = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        m = wait_for(
            lambda: (x := markers.read_marker(runs / name)) and x.state == "running" and x.pid and x,
            120,
            "the job to start",
        )
        os.kill(m.pid, signal.SIGKILL)  # a hard crash: no Python exception, no result pickle
        out, _ = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 1, out
    assert f"failed {name}" in out
    r = subprocess.run(
        [sys.executable, "-m", "jobs", "status", "--runs-dir", str(runs), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    row = json.loads(r.stdout.splitlines()[0])
    assert row["state"] == "failed" and row["job_id"] == m.job_id, row
    assert scheduler.accounting([m.job_id])[m.job_id] in scheduler.FAILED_STATES


def test_unreachable_controller_exit_2_nothing_submitted(tmp_path, monkeypatch, capsys):
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf"))
    if not conf.is_file():
        pytest.skip(f"no slurm.conf at {conf}")
    bad = tmp_path / "slurm.conf"
    bad.write_text(f"SlurmctldPort=6999\n{conf.read_text()}")  # nobody listens there
    bad.write_text("\n".join(ln for ln in bad.read_text().splitlines() if not ln.startswith("Include")))
    before = scheduler.queue()
    monkeypatch.setenv("SLURM_CONF", str(bad))
    runs = tmp_path / "runs"
    assert sweep(runs, "--seeds", "123456", "--archs", ARCH) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SLURM controller not reachable" in err, err
    assert not runs.exists()
    monkeypatch.delenv("SLURM_CONF")
    assert before is None or scheduler.queue() == before


def test_job_slurm_will_never_start_is_cancelled_not_waited_for(tmp_path, capsys):
    runs = tmp_path / "runs"
    name = f"{ARCH}_s975310"
    # 4 GPUs (one task each) on a node with 2: accepted by sbatch, then pending forever (PartitionConfig)
    assert sweep(runs, "--seeds", "975310", "--archs", ARCH, "--gpus-per-node", "4") == 1
    m = markers.read_marker(runs / name)
    assert m.state == "failed" and m.attempts == 1, m  # not retried: the same request would wait again
    assert m.error.startswith(f"slurm will never start job {m.job_id} (")
    assert scheduler.queue([m.job_id]) == {}
