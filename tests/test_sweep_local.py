"""`varith sweep` / `varith status` on the local and debug backends (no SLURM needed), plus the pieces under
them: profiles, sbatch rendering, markers and manifests, the local concurrency cap, crash detection."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arith.errors import InputError
from hpc import launcher, profile
from hpc.launcher import LaunchConfig, Launcher, Task
from hpc.scheduler import QueueEntry, job_fate
from jobs.cli import main
from jobs.runs import lifecycle as run_state
from jobs.runs import markers

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "hpc" / "profiles"
TINY = ["--d-model", "32", "--d-head", "8", "--poll", "0.2"]
ARCH = "add_d2_l1_h3_t40"


def sweep(runs: Path, *args: str) -> int:
    return main(["sweep", "--runs-dir", str(runs), *TINY, *args])


def marker(runs: Path, name: str) -> markers.Marker:
    m = markers.read_marker(runs / name)
    assert m is not None, f"no marker for {name}"
    return m


def statuses(runs: Path) -> dict[str, run_state.RunStatus]:
    return {s.name: s for s in run_state.collect(runs)}


# ------------------------------------------------------------------------------------------------ local
# backend


def test_local_sweep_lands_artifacts_then_skips_done(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert sweep(runs, "--cluster", "local", "--seeds", "123456", "654321", "--archs", ARCH) == 0
    names = [f"{ARCH}_s123456", f"{ARCH}_s654321"]
    for name in names:
        m = marker(runs, name)
        assert m.state == "done" and m.attempts == 1 and m.cluster == "local"
        assert m.job_id and m.job_id.isdigit()
        assert m.stdout and Path(m.stdout).is_file()
        assert "%j" not in m.stdout
        assert m.steps_done == 40 and m.final_loss is not None
        assert markers.artifacts_ok(runs / name)
        manifest = markers.read_manifest(runs / name)
        assert set(manifest["files"]) == {f"{name}.pth", f"{name}_train.json"}
        assert manifest["seed"] == int(name[-6:]) and manifest["packages"]["torch"]
    # submitit's local runner does not expand %j: no folder of that literal name is left behind
    assert not [p for p in (runs / ".submitit").rglob("*") if "%" in p.name]
    capsys.readouterr()

    # again: both are done and check out, nothing is submitted
    assert sweep(runs, "--cluster", "local", "--seeds", "123456", "654321", "--archs", ARCH) == 0
    out = capsys.readouterr().out
    assert out.count(": done") == 2 and "submitted" not in out
    assert all(marker(runs, n).attempts == 1 for n in names)

    assert main(["status", "--runs-dir", str(runs)]) == 0
    table = capsys.readouterr().out
    for name in names:
        line = next(ln for ln in table.splitlines() if ln.startswith(name))
        assert " done " in line and "40/40" in line and ".submitit" in line


def test_local_launcher_caps_concurrency(tmp_path):
    """submitit's LocalExecutor starts every job at once; the Launcher keeps at most max_parallel alive."""
    import submitit

    stamps = tmp_path / "stamps"
    stamps.mkdir()
    code = (
        "import sys, time, pathlib; p = pathlib.Path(sys.argv[1]); t0 = time.time(); time.sleep(1.5); "
        "p.write_text(f'{t0} {time.time()}')"
    )
    cfg = LaunchConfig(cluster="local", folder=tmp_path / "sub" / "%j", max_parallel=2)
    tasks = [
        Task(f"t{i}", submitit.helpers.CommandFunction([sys.executable, "-c", code, str(stamps / f"{i}")]))
        for i in range(4)
    ]
    launcher = Launcher(cfg)
    launcher.submit(tasks)
    assert sum(h.job is not None for h in launcher.handles.values()) == 2  # two started, two queued
    ended = []
    launcher.wait(on_end=ended.append, poll_s=0.1, timeout_s=60)
    assert sorted(h.key for h in ended) == ["t0", "t1", "t2", "t3"]
    spans = [tuple(map(float, (stamps / f"{i}").read_text().split())) for i in range(4)]
    most = max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans)
    assert most <= 2, spans  # never more than the cap alive (two were started together, above)


def test_local_slots_default_to_cores_over_job_size():
    cfg = LaunchConfig(cluster="local", folder=Path("x"), slurm=profile.SlurmSettings(tasks_per_node=2))
    assert cfg.local_slots == max(1, (os.cpu_count() or 1) // 2)
    assert LaunchConfig(cluster="local", folder=Path("x"), max_parallel=3).local_slots == 3


# ------------------------------------------------------------------------------------------------ debug
# backend


def test_force_retrains_to_identical_weights(tmp_path, capsys):
    runs = tmp_path / "runs"
    name = f"{ARCH}_s111111"
    assert sweep(runs, "--cluster", "debug", "--seeds", "111111", "--archs", ARCH) == 0
    first = (runs / name / f"{name}.pth").read_bytes()
    assert sweep(runs, "--cluster", "debug", "--seeds", "111111", "--archs", ARCH) == 0
    assert marker(runs, name).attempts == 1
    assert sweep(runs, "--cluster", "debug", "--seeds", "111111", "--archs", ARCH, "--force") == 0
    m = marker(runs, name)
    assert m.state == "done" and m.attempts == 2
    assert (runs / name / f"{name}.pth").read_bytes() == first  # training is deterministic
    assert markers.artifacts_ok(runs / name)


def test_tampered_artifact_is_retrained(tmp_path):
    runs = tmp_path / "runs"
    name = f"{ARCH}_s222222"
    assert sweep(runs, "--cluster", "debug", "--seeds", "222222", "--archs", ARCH) == 0
    weights = runs / name / f"{name}.pth"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert markers.artifacts_problem(runs / name) == f"{name}.pth does not match its sha256"
    assert statuses(runs)[name].state == "stale"
    assert sweep(runs, "--cluster", "debug", "--seeds", "222222", "--archs", ARCH) == 0
    assert marker(runs, name).attempts == 2 and markers.artifacts_ok(runs / name)


def _failing_train(monkeypatch, fail_times: int, only: str = ""):
    import arith.train

    real = arith.train.train
    calls = {"n": 0}

    def flaky(cfg, *args, **kwargs):
        if cfg.name.startswith(only):
            calls["n"] += 1
            if calls["n"] <= fail_times:
                raise RuntimeError(f"injected failure {calls['n']}")
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(arith.train, "train", flaky)
    return calls


def test_failed_run_is_retried(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    _failing_train(monkeypatch, fail_times=1)
    assert sweep(runs, "--cluster", "debug", "--seeds", "333333", "--archs", ARCH, "--retries", "1") == 0
    out = capsys.readouterr().out
    assert "failed add_d2_l1_h3_t40_s333333: RuntimeError: injected failure 1" in out
    assert "retry 1/1" in out
    m = marker(runs, f"{ARCH}_s333333")
    assert m.state == "done" and m.attempts == 2


def test_retries_are_bounded(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    calls = _failing_train(monkeypatch, fail_times=99)
    assert sweep(runs, "--cluster", "debug", "--seeds", "444444", "--archs", ARCH, "--retries", "2") == 1
    assert calls["n"] == 3
    m = marker(runs, f"{ARCH}_s444444")
    assert m.state == "failed" and m.attempts == 3 and "injected failure 3" in m.error
    capsys.readouterr()
    assert main(["status", "--runs-dir", str(runs)]) == 0
    assert "failed (RuntimeError: injected failure 3)" in capsys.readouterr().out


def test_ins_run_waits_for_its_addition_model(tmp_path, capsys):
    runs = tmp_path / "runs"
    arch = "ins1_mix_d2_l2_h3_t40,add_d2_l1_h3_t40"
    assert sweep(runs, "--cluster", "debug", "--seeds", "555555", "--archs", arch) == 0
    add, ins = marker(runs, "add_d2_l1_h3_t40_s555555"), marker(runs, "ins1_mix_d2_l2_h3_t40_s555555")
    assert add.state == ins.state == "done"
    assert add.finished_at <= ins.started_at
    assert markers.read_manifest(runs / ins.name)["insert"] == add.name


def test_ins_run_fails_without_running_when_its_addition_model_fails(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    calls = _failing_train(monkeypatch, fail_times=99, only="add_")
    arch = "ins1_mix_d2_l2_h3_t40,add_d2_l1_h3_t40"
    assert sweep(runs, "--cluster", "debug", "--seeds", "555556", "--archs", arch, "--retries", "0") == 1
    assert calls["n"] == 1
    ins = marker(runs, "ins1_mix_d2_l2_h3_t40_s555556")
    assert ins.state == "failed" and "dependency failed: add_d2_l1_h3_t40_s555556" in ins.error
    assert ins.started_at is None


def test_sweep_file(tmp_path, capsys):
    runs = tmp_path / "out"
    f = tmp_path / "sweep.toml"
    f.write_text(
        f'seeds = [666666, "066666"]\narchs = ["{ARCH}"]\ncluster = "debug"\nruns_dir = "out"\n'
        "[train]\nd_model = 32\nd_head = 8\n"
    )
    assert main(["sweep", "--file", str(f)]) == 0
    assert {s.name: s.state for s in run_state.collect(runs)} == {
        f"{ARCH}_s066666": "done",
        f"{ARCH}_s666666": "done",
    }


# ------------------------------------------------------------------------------------------------ dry run


def test_dry_run_renders_sbatch_and_submits_nothing(tmp_path, capsys):
    runs = tmp_path / "runs"
    args = ["--cluster", "slurm", "--profile", str(PROFILES / "ci.toml"), "--seeds", "123456", "654321"]
    assert sweep(runs, *args, "--archs", ARCH, "--dry-run") == 0
    out = capsys.readouterr().out
    assert not runs.exists()
    assert out.count("#!/bin/bash") == 1
    for line in (
        "#SBATCH --array=0-1%2",
        "#SBATCH --partition=debug",
        "#SBATCH --time=10",
        "#SBATCH --mem=1GB",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --signal=USR2@30",
        f"#SBATCH --output={runs.absolute()}/.submitit/%A_%a/%A_%a_0_log.out",
    ):
        assert line in out, line
    assert f"-u -m submitit.core._submit {runs.absolute()}/.submitit/%j" in out
    # the text is submitit's own rendering of the executor's parameters
    settings = profile.load_slurm(PROFILES / "ci.toml")
    cfg = LaunchConfig(cluster="slurm", folder=runs.absolute() / ".submitit" / "%j", slurm=settings)
    assert launcher.render_sbatch(cfg, 2, job_name="varith_x2") in out


def test_dry_run_gpu_profile_and_overrides(tmp_path, capsys):
    runs = tmp_path / "runs"
    args = ["--cluster", "slurm", "--profile", str(PROFILES / "example.toml"), "--seeds", "123456"]
    args += ["--archs", ARCH, "--partition", "big", "--time", "1:30:00", "--sbatch=--exclusive", "--dry-run"]
    assert sweep(runs, *args) == 0
    out = capsys.readouterr().out
    for line in (
        "#SBATCH --partition=big",
        "#SBATCH --time=90",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --account=my_project",
        "#SBATCH --qos=normal",
        "#SBATCH --mem=64GB",
        "#SBATCH --constraint=a100",
        "#SBATCH --exclusive",
        "#SBATCH --signal=USR2@120",
        "module load cuda/12.4",
    ):
        assert line in out, line
    assert "--array" not in out  # one run: a plain job
    assert not runs.exists()


def test_dry_run_ins_depends_on_addition_model(tmp_path, capsys):
    runs = tmp_path / "runs"
    args = [
        "--cluster",
        "slurm",
        "--profile",
        str(PROFILES / "ci.toml"),
        "--seeds",
        "123456",
        "--steps",
        "40",
    ]
    assert sweep(runs, *args, "--archs", "ins1_mix_d2_l2_h3_t15K", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "# run add_d2_l2_h3_t40_s372001 (addition model, trained first)" in out
    assert "#SBATCH --dependency='afterok:<job of add_d2_l2_h3_t40_s372001>'" in out
    assert "#SBATCH --kill-on-invalid-dep=yes" in out
    assert out.count("#!/bin/bash") == 2


def test_dry_run_local_plan(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert sweep(runs, "--cluster", "local", "--seeds", "123456", "--archs", ARCH, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "# run add_d2_l1_h3_t40_s123456" in out and "# local: at most" in out
    assert not runs.exists()


# ------------------------------------------------------------------------------------------------ bad input


def _fake_slurm(tmp_path: Path, monkeypatch) -> Path:
    """sbatch/squeue/scontrol/srun that cannot reach a controller; sbatch leaves a mark when called."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    called = tmp_path / "sbatch_called"
    msg = "slurm_load_partitions: Unable to contact slurm controller (connect failure)"
    for tool in ("sbatch", "squeue", "scontrol", "srun", "sacct"):
        p = bin_dir / tool
        extra = f"touch {called}\n" if tool == "sbatch" else ""
        p.write_text(f"#!/bin/sh\n{extra}echo '{msg}' >&2\nexit 1\n")
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return called


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seeds", "123456", "--archs", "foo_d2_l1_h3_t40"], "unknown architecture 'foo_d2_l1_h3_t40'"),
        (["--seeds", "123456", "--archs", "add_d2_l1_h3"], "missing _t<steps>"),
        (["--seeds", "123456", "--archs", f"{ARCH}_s123456"], "give it without the seed"),
        (["--seeds", "12345", "--archs", ARCH], "seed '12345' is not 6 digits"),
        (["--seeds", "1234567", "--archs", ARCH], "seed '1234567' is not 6 digits"),
        (["--seeds", "12a456", "--archs", ARCH], "seed '12a456' is not 6 digits"),
        (["--seeds", "123456", "--archs", ARCH, "--tasks-per-node", "3"], "does not split evenly across 3"),
        (["--seeds", "123456", "--archs", ARCH, "--cluster", "local", "--no-wait"], "--no-wait needs"),
        (["--seeds", "123456", "--archs", "ins1_mix_d2_l1_h3_t40"], "does not fit into"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_submitted(tmp_path, capsys, extra, message):
    runs = tmp_path / "runs"
    cluster = [] if "--cluster" in extra else ["--cluster", "debug"]
    assert sweep(runs, *cluster, *extra) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("varith sweep: error:") and message in err, err
    assert not runs.exists()


def test_profile_missing_keys(tmp_path, capsys):
    prof = tmp_path / "p.toml"
    prof.write_text('[slurm]\npartition = "debug"\ncpus_per_task = 1\n')
    runs = tmp_path / "runs"
    args = ["--cluster", "slurm", "--profile", str(prof), "--seeds", "123456", "--archs", ARCH, "--dry-run"]
    assert sweep(runs, *args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "missing key(s) time, mem, gpus_per_node" in err
    prof.write_text(
        '[slurm]\npartition = "debug"\ntime = 5\nmem = "1G"\ncpus_per_task = 1\ngpus_per_node = 0\nfoo = 1\n'
    )
    assert sweep(runs, *args) == 2
    assert "unknown key(s) 'foo';" in capsys.readouterr().err
    prof.write_text(prof.read_text().replace("foo = 1", "cpus_per_tsak = 2"))
    assert sweep(runs, *args) == 2
    assert "unknown key(s) 'cpus_per_tsak' (did you mean 'cpus_per_task'?)" in capsys.readouterr().err
    assert sweep(runs, "--cluster", "slurm", "--profile", str(tmp_path), "--seeds", "123456", "--archs", ARCH) == 2
    assert "is a folder, not a TOML file" in capsys.readouterr().err
    assert not runs.exists()


def test_unreachable_controller(tmp_path, monkeypatch, capsys):
    called = _fake_slurm(tmp_path, monkeypatch)
    runs = tmp_path / "runs"
    args = [
        "--cluster",
        "slurm",
        "--profile",
        str(PROFILES / "ci.toml"),
        "--seeds",
        "123456",
        "--archs",
        ARCH,
    ]
    assert sweep(runs, *args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "SLURM controller not reachable: slurm_load_partitions: Unable to contact slurm controller" in err
    assert not called.exists()
    assert not runs.exists()


def test_no_sbatch_on_path(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    runs = tmp_path / "runs"
    args = ["--cluster", "slurm", "--seeds", "123456", "--archs", ARCH]
    assert sweep(runs, *args) == 2
    assert "sbatch not found" in capsys.readouterr().err
    assert launcher.resolve_cluster("auto") == "local"


def test_cli_subprocess_bad_seed_one_line():
    r = subprocess.run(
        [sys.executable, "-m", "jobs", "sweep", "--seeds", "99", "--archs", ARCH, "--dry-run"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not 6 digits" in r.stderr


# ------------------------------------------------------------------------------------------------ pieces


def test_profile_values():
    assert profile.parse_time_min(90) == 90
    assert profile.parse_time_min("90") == 90
    assert profile.parse_time_min("01:30:00") == 90
    assert profile.parse_time_min("1-00:00:00") == 1440
    assert profile.parse_time_min("2-3") == 2 * 1440 + 180
    assert profile.parse_mem_gb("16G") == 16 and profile.parse_mem_gb("512M") == 0.5 and profile.parse_mem_gb(2) == 2
    s = profile.slurm_from_dict(
        {
            "partition": "p",
            "time": "00:05:00",
            "mem": "512M",
            "cpus_per_task": 2,
            "gpus_per_node": 2,
            "extra_sbatch": ["#SBATCH --mail-type END", "--exclusive"],
        }
    )
    assert s.ntasks_per_node == 2 and s.time_min == 5
    assert s.extra_options == {"mail-type": "END", "exclusive": True}
    text = launcher.render_sbatch(LaunchConfig("slurm", Path("/r/%j"), s), 1, dependency="afterok:1", job_name="j")
    for line in ("--mem=512MB", "--gpus-per-node=2", "--mail-type=END", "--exclusive", "--dependency=afterok:1"):
        assert f"#SBATCH {line}\n" in text, line
    assert "#SBATCH --kill-on-invalid-dep=yes" in text
    with pytest.raises(InputError, match="long form"):
        profile.slurm_from_dict(
            {
                "partition": "p",
                "time": 5,
                "mem": 1,
                "cpus_per_task": 1,
                "gpus_per_node": 0,
                "extra_sbatch": ["-C a100"],
            }
        )
    with pytest.raises(InputError, match="one task per GPU"):
        profile.SlurmSettings(gpus_per_node=2, tasks_per_node=3)
    assert (
        profile.override_settings(s, {"mem": "2G", "extra_sbatch": ["--qos=x"]}, "flags").extra_sbatch[-1] == "--qos=x"
    )


def test_slurm_groups_put_dependents_after():
    tasks = [
        Task("a", print),
        Task("b", print),
        Task("x", print, after=("a",)),
        Task("y", print, after=("a",)),
        Task("z", print, after=("b", "elsewhere"), after_jobs=("77",)),
    ]
    groups = [([t.key for t in g.tasks], g.after, g.after_jobs) for g in launcher.slurm_groups(tasks)]
    assert groups == [(["a", "b"], (), ()), (["x", "y"], ("a",), ()), (["z"], ("b",), ("77",))]


def test_markers_and_manifest(tmp_path):
    run = tmp_path / "add_d2_l1_h3_t40_s000001"
    assert markers.read_marker(run) is None
    markers.mark_submitted(run, "local")
    markers.set_job(run, "42", "/x/out", "/x/err", submitted_at=1.0)
    assert markers.set_job(run, "43", None, None) is None  # another job's id does not overwrite
    markers.mark_running(run, "42", "local", None, None)
    m = markers.read_marker(run)
    assert (m.state, m.job_id, m.stdout, m.attempts, m.pid) == ("running", "42", "/x/out", 1, os.getpid())
    assert [e[1] for e in m.events] == ["submitted", "running"]
    assert not markers.artifacts_ok(run)
    (run / f"{run.name}.pth").write_bytes(b"w")
    (run / f"{run.name}_train.json").write_text("{}")
    markers.record_artifacts(run, [run / f"{run.name}.pth", run / f"{run.name}_train.json"], seed=1)
    assert markers.artifacts_ok(run)
    (run / f"{run.name}_train.json").write_text("{ }")
    assert markers.artifacts_problem(run) == f"{run.name}_train.json does not match its sha256"
    (run / f"{run.name}_train.json").unlink()
    assert markers.artifacts_problem(run) == f"{run.name}_train.json is missing"
    assert json.loads((run / "manifest.json").read_text())["seed"] == 1


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _fates(queue, acct) -> dict:
    """What hpc.scheduler.Watcher gives `varith status` for job 17_1, from squeue's and sacct's answers."""
    return {"17_1": job_fate("17_1", queue, acct, None)}


def test_status_never_shows_a_crash_as_a_hang(tmp_path):
    runs = tmp_path / "runs"
    # local: the process that marked the run running is gone
    run = runs / "add_d2_l1_h3_t40_s000002"
    markers.mark_submitted(run, "local")
    markers.mark_running(run, "1", "local", None, None)
    assert run_state.resolve(run, {}).state == "running"
    markers.update_marker(run, pid=_dead_pid())
    st = run_state.resolve(run, {})
    assert st.state == "failed" and "is gone" in st.detail
    # local: queued by a sweep driver that died
    run = runs / "add_d2_l1_h3_t40_s000003"
    markers.mark_submitted(run, "local")
    assert run_state.resolve(run, {}).state == "pending"
    markers.update_marker(run, driver_pid=_dead_pid())
    assert run_state.resolve(run, {}).state == "failed"
    # slurm: the queue and accounting decide
    run = runs / "add_d2_l1_h3_t40_s000004"
    markers.mark_submitted(run, "slurm")
    markers.set_job(run, "17_1", None, None)
    assert run_state.resolve(run, _fates({"17_1": QueueEntry("PENDING", "Resources")}, {})).state == "pending"
    assert run_state.resolve(run, _fates({"17_1": QueueEntry("RUNNING")}, {})).state == "running"
    st = run_state.resolve(run, _fates({"17_1": QueueEntry("PENDING", "PartitionConfig")}, {}))
    assert st.state == "pending" and "will never start it; scancel 17_1" in st.detail
    st = run_state.resolve(run, _fates({}, {"17_1": "FAILED"}))
    assert (st.state, st.detail) == ("failed", "sacct: FAILED")
    assert run_state.resolve(run, _fates({}, {"17_1": "NODE_FAIL"})).state == "failed"
    st = run_state.resolve(run, _fates({}, None))  # no accounting, not in squeue, no result pickle
    assert st.state == "failed" and "no result" in st.detail
    st = run_state.resolve(run, _fates(None, None))  # squeue itself unavailable: say so, from the marker
    assert st.state == "pending" and "squeue unavailable" in st.detail


def test_status_json_and_empty(tmp_path, capsys):
    assert main(["status", "--runs-dir", str(tmp_path / "none")]) == 2  # no such folder: an error
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["status", "--runs-dir", str(tmp_path / "empty")]) == 0
    assert "no runs under" in capsys.readouterr().out
    run = tmp_path / "runs" / "add_d2_l1_h3_t40_s000005"
    markers.mark_submitted(run, "debug")
    markers.mark_failed(run, "boom")
    assert main(["status", "--runs-dir", str(tmp_path / "runs"), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["state"] == "failed" and row["detail"] == "boom" and row["attempts"] == 1


def test_wait_does_not_spin_forever_on_debug(tmp_path):
    """A debug launcher with nothing to do returns at once."""
    t0 = time.time()
    Launcher(LaunchConfig(cluster="debug", folder=tmp_path / "%j")).wait(poll_s=0.01)
    assert time.time() - t0 < 1


def test_render_sbatch_is_what_submitit_submits(tmp_path, monkeypatch):
    """--dry-run's text against a real submission through submitit (stand-in sbatch), in a folder whose path
    needs shell quoting."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    got = tmp_path / "got.sh"
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncat "$1" > "{got}"\necho "Submitted batch job 7"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    settings = profile.load_slurm(PROFILES / "example.toml")
    cfg = LaunchConfig(cluster="slurm", folder=tmp_path / "my runs" / ".submitit" / "%j", slurm=settings)
    for n in (1, 3):
        ex = launcher.slurm_executor(cfg.folder, settings, "jn", "afterok:5")
        if n == 1:
            ex.submit(print)
        else:
            with ex.batch():
                for _ in range(n):
                    ex.submit(print)
        assert got.read_text() == launcher.render_sbatch(cfg, n, dependency="afterok:5", job_name="jn")
