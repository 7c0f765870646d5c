"""`varith verify` through Dask: real LocalClusters, the Zarr store, faults, the SLURM job script, bad input.

The distributed result must equal `verify_in_process` (the single-process reference) exactly, also after a
worker process is killed mid-run and after the driver is stopped and run again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.accuracy import accuracy_report
from arith.errors import InputError
from arith.files import sha256_file
from arith.scoring import PrecisionChoice
from arith.verify import BlockCounts, ExhaustiveSuite, RandomSuite, evaluate_block
from arith.vocab import ADD, SUB
from arith.weights import load_model, model_info
from hpc.cluster import ClusterSpec, job_script, lifetimes, open_cluster
from hpc.profile import load_profile
from jobs.stages.verify import VerifyWork, verify_distributed, verify_in_process
from jobs.stages.verify_store import DATA_ARRAYS, make_fingerprint, prepare_suite
from tests.conftest import REPO, assert_one_line_error
from tests.conftest import varith as _varith


def varith(*args: str) -> subprocess.CompletedProcess:
    """`python -m jobs verify ARGS`."""
    return _varith("verify", *args)


TINY = "add_d2_l1_h2_t1K_s000001"  # random weights, d_model 16: every question fails, so examples get stored
MIXED = "mix_d2_l1_h2_t1K_s000002"  # addition and subtraction


def make_random_model(root: Path, name: str, d_model: int = 16, d_head: int = 4, seed: int = 0) -> Path:
    """Random-weight weights + train json (the shape comes from the json, as for a trained model)."""
    from arith.model import Transformer
    from arith.train import TrainConfig, config_record
    from arith.weights import save_weights

    cfg = TrainConfig(name, d_model=d_model, d_head=d_head)
    run = root / name
    run.mkdir(parents=True, exist_ok=True)
    model = Transformer(cfg.shape)
    model.reset_parameters(torch.Generator().manual_seed(seed))
    save_weights(model, run / f"{name}.pth")
    (run / f"{name}_train.json").write_text(json.dumps({"Config": config_record(cfg)}))
    return run / f"{name}.pth"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_random_model(tmp_path_factory.mktemp("tiny"), TINY)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    return make_random_model(tmp_path_factory.mktemp("mixed"), MIXED, d_model=32, d_head=8, seed=3)


@pytest.fixture(scope="module")
def cluster2():
    """A real 2-worker LocalCluster (processes, one thread each) from the cluster factory."""
    with open_cluster(ClusterSpec(kind="local", workers=2, torch_threads=1, preload=("jobs.stages.verify",))) as handle:
        yield handle


def task_spec(weights: Path, suite, store_root: Path, fresh: bool = False, mode: str = "reference") -> VerifyWork:
    shape, _n, _cfg = model_info(weights)
    sha = sha256_file(weights)
    fp = make_fingerprint(sha, suite.fingerprint(), mode, "fp32", 16)
    store = prepare_suite(store_root, suite.name, fp, suite.n_blocks, suite.n_digits, 16, fresh=fresh, suite=suite)
    return VerifyWork(str(weights.resolve()), sha, shape, suite, store, mode=mode, precision="fp32")


def reference_report(weights: Path, suite, mode: str = "reference") -> dict:
    shape, _n, _cfg = model_info(weights)
    counts = verify_in_process(load_model(weights, shape), suite, mode, precision="fp32", progress=False)
    return accuracy_report(counts, suite, weights.stem, extra={"weights_sha256": sha256_file(weights), "mode": mode})


FP32 = PrecisionChoice("fp32", "--precision fp32", "fp32")  # what `run_dask` records for --precision fp32


def dask_report(spec: VerifyWork, counts, weights: Path) -> dict:
    """The report of a distributed run of `spec` (fp32, as `reference_report`; run_dask records the choice)."""
    counts.choice = FP32
    return accuracy_report(
        counts, spec.suite, weights.stem, extra={"weights_sha256": spec.weights_sha256, "mode": spec.mode}
    )


# ------------------------------------------------------------------------------------------------ equality


def test_exhaustive_demo_model_two_workers_equals_in_process(demo_model, cluster2, tmp_path):
    suite = ExhaustiveSuite(2, (ADD,), block_size=500)  # 20 blocks over 2 workers
    spec = task_spec(demo_model, suite, tmp_path / "demo.zarr")
    counts = verify_distributed(cluster2.client, spec, progress=False)
    report = dask_report(spec, counts, demo_model)
    assert report == reference_report(demo_model, suite)
    assert report["tested"] == 10_000 and "every one of the 10,000" in report["exhaustive"]
    assert len(cluster2.client.scheduler_info()["workers"]) == 2


def test_exhaustive_mixed_ops_with_failures_equals_in_process(mixed, cluster2, tmp_path):
    """Random weights: thousands of failures, capped examples per block, ADD/SUB/NEG rows all exercised."""
    suite = ExhaustiveSuite(2, (ADD, SUB), block_size=700)
    spec = task_spec(mixed, suite, tmp_path / "mixed.zarr", mode="exact")
    counts = verify_distributed(cluster2.client, spec, progress=False)
    report = dask_report(spec, counts, mixed)
    ref = reference_report(mixed, suite, mode="exact")
    assert report == ref
    assert set(report["by_operation"]) == {"ADD", "SUB", "NEG"}
    assert report["failed"] > 1000 and len(report["failures"]) == 100


def test_million_random_questions(tiny, cluster2, tmp_path):
    suite = RandomSuite(2, (ADD,), 1_000_000)  # 50 blocks of 20,000
    spec = task_spec(tiny, suite, tmp_path / "million.zarr")
    counts = verify_distributed(cluster2.client, spec, progress=False)
    report = dask_report(spec, counts, tiny)
    assert report["tested"] == 1_000_000 and report["by_operation"]["ADD"]["tested"] == 1_000_000
    assert report["nines"] == {"+": "fewer than two 9s"}  # random weights fail everything
    assert spec.group.done_mask().all()
    # spot-check two blocks against the kernel called directly
    model = load_model(tiny, spec.shape)
    for k in (0, 49):
        direct = evaluate_block(model, suite, k)
        assert int(spec.group._array("tested", "r")[k].sum()) == int(direct.tested.sum())
        np.testing.assert_array_equal(spec.group._array("failed", "r")[k], direct.failed)
    import zarr

    consolidated = zarr.open_group(spec.group.root, mode="r", use_consolidated=True)  # written once, at the end
    assert consolidated["verify/random/done"].shape == (50,)


def test_cli_joins_an_existing_scheduler(mixed, cluster2, tmp_path):
    """`--scheduler tcp://HOST:PORT` runs on a cluster that is already up (here the module's LocalCluster)."""
    out_d, out_s = tmp_path / "dask.json", tmp_path / "single.json"
    args = [str(mixed), "--suite", "tricase", "--store", str(tmp_path / "t.zarr"), "--no-progress"]
    r = varith(*args, "--scheduler", cluster2.cluster.scheduler_address, "--out", str(out_d))
    assert r.returncode == 0, r.stderr
    assert "scheduler tcp://" in r.stdout and "dask dashboard:" in r.stdout
    assert varith(*args[:3], "--cluster", "none", "--out", str(out_s), "--no-progress").returncode == 0
    assert out_d.read_bytes() == out_s.read_bytes()
    assert len(cluster2.client.scheduler_info()["workers"]) == 2  # joined, not closed


# ------------------------------------------------------------------------------------------------ faults


def test_worker_killed_mid_run_loses_and_double_counts_nothing(tiny, tmp_path):
    suite = RandomSuite(2, (ADD,), 200_000, seed=7, block_size=5_000)  # 40 blocks
    spec = task_spec(tiny, suite, tmp_path / "kill.zarr")
    killed: list[int] = []
    with open_cluster(ClusterSpec(kind="local", workers=2, torch_threads=1, preload=("jobs.stages.verify",))) as handle:
        client = handle.client
        pids = client.run(os.getpid)

        def kill_one(done: int) -> None:
            if done == 4 and not killed:
                busy = [addr for addr, keys in client.processing().items() if keys and addr in pids]
                victim = busy[0] if busy else next(iter(pids))
                os.kill(pids[victim], signal.SIGKILL)
                killed.append(pids[victim])

        counts = verify_distributed(client, spec, progress=False, on_block=kill_one)
        assert killed, "no worker was killed"
        assert killed[0] not in client.run(os.getpid).values()  # the nanny started a fresh process
    report = dask_report(spec, counts, tiny)
    assert report == reference_report(tiny, suite)
    assert report["tested"] == 200_000


def test_driver_stopped_and_rerun_gives_identical_result(tiny, cluster2, tmp_path):
    suite = RandomSuite(2, (ADD,), 150_000, seed=11, block_size=5_000)  # 30 blocks
    root = tmp_path / "restart.zarr"
    spec = task_spec(tiny, suite, root)
    assert verify_distributed(cluster2.client, spec, progress=False, max_blocks=5) is None
    done_first = int(spec.group.done_mask().sum())
    assert 5 <= done_first <= 30  # (tasks running at the stop may finish; how many depends on the machine)
    ran = []
    spec2 = task_spec(tiny, suite, root)  # a new driver: the same store is accepted, done blocks are skipped
    counts = verify_distributed(cluster2.client, spec2, progress=False, on_block=ran.append)
    assert len(ran) <= 30 - done_first  # done blocks are skipped
    assert dask_report(spec2, counts, tiny) == reference_report(tiny, suite)


def test_driver_interrupted_from_the_command_line_then_rerun(mixed, tmp_path):
    out_a, store = tmp_path / "a.json", tmp_path / "cli.zarr"
    common = [
        str(mixed),
        "--questions",
        "150000",
        "--block-size",
        "5000",
        "--ops",
        "add",
        "--store",
        str(store),
        "--no-progress",
        "--precision",
        "fp32",  # (auto probes bf16's speed on runs this large: the reference must make the same choice)
    ]
    cmd = [sys.executable, "-m", "jobs", "verify", *common, "--workers", "1", "--out", str(out_a)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = store / "verify" / "random-add" / "done" / "c"  # addition only, of a mixed model: its own group
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None and not (done.is_dir() and len(os.listdir(done)) >= 2):
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert not out_a.exists()
    n_done = len(os.listdir(done))
    assert 2 <= n_done <= 30
    again = varith(*common, "--workers", "2", "--out", str(out_a))
    assert again.returncode == 0, again.stderr
    assert f"{n_done} already done" in again.stdout
    # byte for byte what `--cluster none` writes (the report under its suite's key, atomic_write_json(indent=1))
    single = reference_report(mixed, RandomSuite(2, (ADD,), 150_000, block_size=5000))
    assert out_a.read_text() == json.dumps({"random": single}, indent=1) + "\n"


# ------------------------------------------------------------------------------------------------ the store


def test_store_rewrite_is_byte_identical_and_refuses_other_settings(tiny, tmp_path):
    suite = RandomSuite(2, (ADD,), 3000, block_size=1000)
    spec = task_spec(tiny, suite, tmp_path / "s.zarr")
    model = load_model(tiny, spec.shape)
    counts = evaluate_block(model, suite, 1)
    spec.group.write_block(1, counts)
    files = sorted(p for p in Path(spec.group.location).rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in files}
    spec.group.write_block(1, evaluate_block(model, suite, 1))  # a re-executed task
    assert {p: p.read_bytes() for p in files} == before
    assert spec.group.pending() == [0, 2]
    # every data chunk of a written row exists, zeros included (write_empty_chunks=True), and `done` last
    assert (Path(spec.group.location) / "done" / "c" / "1").is_file()
    for name in ("failed", "wrong_pos", "fail_x", "n_fail_kept"):
        assert spec.group.chunk_path(name, 1, spec.group._array(name, "r").ndim).is_file(), name
    assert not (Path(spec.group.location) / "done" / "c" / "0").exists()
    spec.group.write_block(2, BlockCounts.empty(2))  # an all-zero row: its chunks exist too ...
    for name in DATA_ARRAYS:
        assert spec.group.chunk_path(name, 2, spec.group._array(name, "r").ndim).is_file(), name
    _done, problems, _data = spec.group.scan()  # ... but it is not the 1,000 questions block 2 holds
    assert problems == {2: "tested 0 ADD questions, the block has 1,000"}

    other_seed = RandomSuite(2, (ADD,), 3000, seed=1, block_size=1000)
    with pytest.raises(InputError, match="other settings.*seed"):
        task_spec(tiny, other_seed, tmp_path / "s.zarr")
    fp = make_fingerprint("0" * 64, suite.fingerprint(), "reference", "fp32", 16)
    with pytest.raises(InputError, match="other weights"):
        prepare_suite(tmp_path / "s.zarr", suite.name, fp, suite.n_blocks, 2, 16)
    fresh = prepare_suite(tmp_path / "s.zarr", suite.name, fp, suite.n_blocks, 2, 16, fresh=True)
    assert fresh.pending() == [0, 1, 2]


# ------------------------------------------------------------------------------------------------ SLURM


def _profile(tmp_path: Path, slurm: str, dask: str = "") -> Path:
    path = tmp_path / "profile.toml"
    path.write_text(f"[slurm]\n{slurm}\n" + (f"\n[dask]\n{dask}\n" if dask else ""))
    return path


def test_slurm_dry_run_prints_the_job_script_and_submits_nothing(tiny, tmp_path):
    profile = _profile(
        tmp_path,
        'partition = "gpu"\naccount = "arith"\nqos = "normal"\ntime = "02:00:00"\nmem = "32G"\n'
        'cpus_per_task = 8\ngpus_per_node = 1\nsetup = ["module load cuda"]\n'
        'extra_sbatch = ["--constraint=a100"]',
        'interface = "ib0"\nmax_jobs = 4\nlifetime_margin = "10m"\nlifetime_stagger = "4m"',
    )
    store = tmp_path / "never.zarr"
    r = varith(
        str(tiny),
        "--questions",
        "100000",
        "--cluster",
        "slurm",
        "--profile",
        str(profile),
        "--dry-run",
        "--store",
        str(store),
    )
    assert r.returncode == 0, r.stderr
    script = r.stdout
    for line in (
        "#SBATCH -p gpu",
        "#SBATCH -A arith",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32G",
        "#SBATCH -t 02:00:00",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --qos=normal",
        "#SBATCH --constraint=a100",
        "module load cuda",
    ):
        assert line in script, line
    assert "--resources GPU=1" in script and "--interface ib0" in script and "--nthreads 8" in script
    lifetime = int(re.search(r"--lifetime (\d+)s", script).group(1))
    stagger = int(re.search(r"--lifetime-stagger (\d+)s", script).group(1))
    assert lifetime + stagger + 600 == 2 * 3600  # retire (at the latest) 10 min before the walltime
    assert "adapt 1..4 jobs" in script
    assert not store.exists()


def test_slurm_cpu_profile_one_thread_per_worker_process(tmp_path):
    profile = _profile(tmp_path, 'partition = "cpu"\ntime = 30\nmem = "8G"\ncpus_per_task = 4\ngpus_per_node = 0')
    loaded = load_profile(profile)
    settings, prof = loaded.slurm, loaded.dask
    assert lifetimes(settings.time_min, prof) == (30 - 1.5 - 3.0, 1.5)
    script = job_script(ClusterSpec(kind="slurm", profile=str(profile)))
    assert "--nthreads 1" in script and "--nworkers 4" in script and "gres" not in script
    with pytest.raises(InputError, match="unknown key"):
        load_profile(
            _profile(
                tmp_path,
                'partition = "x"\ntime = 5\nmem = 1\ncpus_per_task = 1\ngpus_per_node = 0',
                "lifetime = 3",
            )
        )
    with pytest.raises(InputError, match="no worker lifetime"):
        lifetimes(3, prof)


def test_what_a_profile_leaves_unset_comes_from_the_sites_dask_config(tmp_path):
    """A site's jobqueue.yaml (dask.config) sets the worker jobs' name and death timeout unless the profile does,
    as dask-jobqueue's own classes do."""
    import dask

    slurm = 'partition = "cpu"\ntime = 30\nmem = "8G"\ncpus_per_task = 2\ngpus_per_node = 0'
    site = {"jobqueue.slurm.name": "site-workers", "jobqueue.slurm.death-timeout": 123}
    with dask.config.set(site):
        script = job_script(ClusterSpec(kind="slurm", profile=str(_profile(tmp_path, slurm))))
        assert "#SBATCH -J site-workers" in script and "--death-timeout 123" in script, script
        named = _profile(tmp_path, slurm, 'job_name = "mine"\ndeath_timeout = 7')
        script = job_script(ClusterSpec(kind="slurm", profile=str(named)))
        assert "#SBATCH -J mine" in script and "--death-timeout 7" in script, script


@pytest.mark.slurm
def test_real_slurm_cluster(tiny, tmp_path):
    """dask-jobqueue workers as jobs on the local single-node SLURM (tools/slurm_local.sh)."""
    if not shutil.which("sbatch") or not shutil.which("sinfo"):
        pytest.skip("no SLURM here (sbatch/sinfo absent)")
    try:
        state = subprocess.run(["sinfo", "-h", "-o", "%a"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        pytest.skip("no SLURM controller answering")
    if state.returncode != 0 or "up" not in state.stdout:
        pytest.skip("no SLURM controller answering")
    profile = _profile(
        tmp_path,
        'partition = "debug"\ntime = 10\nmem = "2G"\ncpus_per_task = 1\ngpus_per_node = 0',
        f'interface = "lo"\nmax_jobs = 2\nlog_directory = "{tmp_path / "logs"}"',
    )
    out = tmp_path / "acc.json"
    args = [str(tiny), "--questions", "60000", "--block-size", "10000", "--store", str(tmp_path / "s.zarr")]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs",
            "verify",
            *args,
            "--cluster",
            "slurm",
            "--profile",
            str(profile),
            "--out",
            str(out),
            "--no-progress",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr
    ref = tmp_path / "ref.json"
    assert varith(*args[:5], "--cluster", "none", "--out", str(ref), "--no-progress").returncode == 0
    assert out.read_bytes() == ref.read_bytes()


# ------------------------------------------------------------------------------------------------ bad input


def test_missing_weights(tmp_path):
    r = varith(str(tmp_path / f"{TINY}.pth"), "--questions", "1000")
    assert_one_line_error(r, "no such file")


def test_weights_of_another_shape(tiny, tmp_path):
    other = make_random_model(tmp_path, TINY, d_model=32, d_head=8)  # the train json says 32 ...
    shutil.copy(tiny, other)  # ... the weights are d_model 16
    r = varith(str(other), "--questions", "1000", "--store", str(tmp_path / "x.zarr"))
    assert_one_line_error(r, "shape", "expected")
    assert not (tmp_path / "x.zarr").exists()


def test_unreachable_scheduler(tiny, tmp_path):
    r = varith(
        str(tiny),
        "--questions",
        "1000",
        "--scheduler",
        "tcp://127.0.0.1:9",
        "--connect-timeout",
        "1",
        "--store",
        str(tmp_path / "x.zarr"),
    )
    assert_one_line_error(r, "scheduler tcp://127.0.0.1:9", "unreachable")


def test_store_from_other_weights(tiny, tmp_path):
    suite = RandomSuite(2, (ADD,), 1000)
    fp = make_fingerprint("f" * 64, suite.fingerprint(), "reference", "fp32", 16)
    prepare_suite(tmp_path / "other.zarr", suite.name, fp, suite.n_blocks, 2, 16)
    r = varith(str(tiny), "--questions", "1000", "--store", str(tmp_path / "other.zarr"))
    assert_one_line_error(r, "other weights", "--fresh")


def test_bad_profile_and_flag_combinations(tiny, tmp_path):
    r = varith(
        str(tiny),
        "--questions",
        "1000",
        "--cluster",
        "slurm",
        "--profile",
        str(tmp_path / "nope.toml"),
        "--dry-run",
    )
    assert_one_line_error(r, "nope.toml", "no such file")
    r = varith(str(tiny), "--questions", "1000", "--cluster", "slurm", "--scheduler", "tcp://127.0.0.1:9")
    assert_one_line_error(r, "--scheduler")


def test_unwritable_out_or_store_is_refused_before_any_work(tiny, tmp_path):
    """A path under a regular file cannot be written by anyone (root included): one line, nothing started."""
    blocker = tmp_path / "somefile"
    blocker.write_text("not a folder")
    store = tmp_path / "s.zarr"
    r = varith(str(tiny), "--questions", "1000", "--store", str(store), "--out", str(blocker / "acc.json"))
    assert_one_line_error(r, "--out", str(blocker))
    assert not store.exists() and "cluster" not in r.stdout
    r = varith(str(tiny), "--questions", "1000", "--store", str(blocker / "s.zarr"), "--out", str(tmp_path / "a.json"))
    assert_one_line_error(r, "--store", str(blocker))
    assert not (tmp_path / "a.json").exists()
    r = varith(str(tiny), "--questions", "1000", "--cluster", "none", "--out", str(blocker / "acc.json"))
    assert_one_line_error(r, "--out", str(blocker))


def test_every_flag_has_help_with_its_choices():
    import argparse

    from jobs.verify import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = action.option_strings[0] if action.option_strings else action.dest
        assert action.help, f"{name} has no help"
        for choice in action.choices or ():
            assert str(choice) in action.help, f"{name}: choice {choice} not in its help"
        for word in re.findall(r"[\w./-]+\.(?:toml|md|py|json|yaml)\b", action.help):
            if "/" in word and "<" not in word:  # a file named in the help is one of the repository's
                assert (REPO / word).is_file(), f"{name} points to {word}, not in the repository"
    text = parser.format_help()
    assert "%%" not in text  # (format_help raises on a stray %)


# ------------------------------------------------------------------------------------------------ issue 19


def test_another_question_count_of_the_same_seed_reuses_the_stored_blocks(mixed, tmp_path):
    """Blocks are addressed by (seed, operation, j): 3,000 then 5,500 then 2,500 questions per operation on one
    store, each equal to a single run of its own, reporting exactly its own questions."""
    common = [str(mixed), "--block-size", "1000", "--store", "s.zarr", "--workers", "1", "--no-progress"]

    def truth(n: int) -> bytes:
        r = _varith("verify", str(mixed), "--questions", str(n), "--block-size", "1000", "--cluster", "none",
                    "--no-progress", "--out", f"t{n}.json", cwd=tmp_path)  # fmt: skip
        assert r.returncode == 0, r.stderr
        return (tmp_path / f"t{n}.json").read_bytes()

    first = _varith("verify", *common, "--questions", "3000", "--out", "a.json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "random: 6 blocks (0 already done), 6,000 questions -> " in first.stdout  # add and sub
    assert (tmp_path / "a.json").read_bytes() == truth(3000)
    larger = _varith("verify", *common, "--questions", "5500", "--out", "b.json", cwd=tmp_path)
    assert larger.returncode == 0, larger.stderr
    assert "random: 12 blocks (6 already done), 11,000 questions -> " in larger.stdout, larger.stdout
    assert larger.stderr == ""  # nothing refused, nothing "damaged"
    assert (tmp_path / "b.json").read_bytes() == truth(5500)
    # smaller: blocks 0 and 1 of each operation reused, the last (500 questions, 1,000 stored) redone quietly
    smaller = _varith("verify", *common, "--questions", "2500", "--out", "c.json", cwd=tmp_path)
    assert smaller.returncode == 0, smaller.stderr
    assert "random: 6 blocks (4 already done), 5,000 questions -> " in smaller.stdout, smaller.stdout
    assert smaller.stderr == ""
    report = json.loads((tmp_path / "c.json").read_text())["random"]
    assert report["tested"] == 5000 and report["by_operation"]["ADD"]["tested"] == 2500
    assert (tmp_path / "c.json").read_bytes() == truth(2500)
    # another seed is still other settings
    other = _varith("verify", *common, "--questions", "2500", "--seed", "5", "--out", "d.json", cwd=tmp_path)
    assert_one_line_error(other, "other settings", "seed", "--fresh")


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--seed", "-1"], "argument --seed: must be at least 0, got -1"),
        (["--seed", "1.5"], "argument --seed: '1.5' is not a whole number"),
        (["--questions", "0"], "argument --questions: must be at least 1"),
        (["--questions", "-5"], "argument --questions: must be at least 1"),
        (["--block-size", "0"], "argument --block-size: must be at least 1"),
        (["--cap", "-1"], "argument --cap: must be at least 0"),
        (["--workers", "0"], "argument --workers: must be at least 1"),
        (["--torch-threads", "-2"], "argument --torch-threads: must be at least 1"),
        (["--retries", "-1"], "argument --retries: must be at least 0"),
        (["--connect-timeout", "nan"], "argument --connect-timeout: must be a positive number of seconds"),
        (["--connect-timeout", "0"], "argument --connect-timeout: must be a positive number of seconds"),
        (["--ops", ""], "--ops is empty"),
        (["--ops", " "], "--ops is empty"),
    ],
)
def test_bad_numbers_are_one_line_naming_the_flag_before_anything_is_written(tiny, tmp_path, flags, fragment):
    args = ["--questions", "1000", *flags] if flags[0] != "--questions" else flags
    r = _varith("verify", str(tiny), *args, "--store", "s.zarr", "--out", "a.json", cwd=tmp_path)
    assert_one_line_error(r, fragment)
    assert not (tmp_path / "s.zarr").exists() and not (tmp_path / "a.json").exists()


def test_one_block_one_worker_is_said_in_the_singular(tiny, tmp_path):
    r = _varith("verify", str(tiny), "--questions", "10", "--store", "s.zarr", "--workers", "1", "--torch-threads",
                "1", "--no-progress", "--out", "a.json", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "random: 1 block (0 already done), 10 questions -> " in r.stdout, r.stdout
    assert "local cluster: 1 worker process (1 torch thread each)" in r.stdout, r.stdout
    # a resumed run's progress line counts the questions of every block it counts
    more = _varith("verify", str(tiny), "--questions", "25", "--block-size", "10", "--store", "b.zarr",
                   "--workers", "1", "--out", "b.json", cwd=tmp_path)  # fmt: skip
    assert more.returncode == 0, more.stderr
    again = _varith("verify", str(tiny), "--questions", "40", "--block-size", "10", "--store", "b.zarr",
                    "--workers", "1", "--out", "b.json", cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "random: 4 blocks (2 already done), 40 questions -> " in again.stdout, again.stdout
    assert "blocks: 4/4 blocks (100%), questions 40, failed 40" in again.stderr, again.stderr
