"""One writer per store group: two runs on one store never corrupt each other (issue 19).

The audit's reproduction at the level a user meets it: `varith verify` twice on one store from a working
folder (relative paths), the second with `--fresh --seed 111` started while the first runs. Both results must
be the true ones (each equals a single run on a store of its own), or the second refuses with `--no-wait`;
never a wrong one. A run killed with SIGKILL leaves the store usable at once (the lock dies with its process).
Ablate and algo hold their groups the same way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arith.errors import InputError
from hpc.store import group_lock, lock_file
from tests.conftest import REPO, assert_one_line_error, varith
from tests.test_verify_dask import MIXED, make_random_model

BLOCKS = ["--block-size", "1000", "--ops", "add", "--no-progress"]  # 16,000 questions: 16 blocks
# an addition-only suite of a model trained on both: its own group beside the default one (verify_store.group_name)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """Random weights (every question fails, so the failing examples tell the seeds apart)."""
    return make_random_model(tmp_path_factory.mktemp("lock"), MIXED, d_model=32, d_head=8, seed=3)


def start(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "jobs", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_done_chunks(proc: subprocess.Popen, store: Path, n: int) -> None:
    """Until the run has finished `n` blocks (while it is still running)."""
    done = store / "verify" / "random-add" / "done" / "c"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and not (done.is_dir() and len(os.listdir(done)) >= n):
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()


def pause_holding_the_lock(proc: subprocess.Popen, store: Path, n_blocks: int) -> None:
    """Stop the run (SIGSTOP) while it is writing: it keeps its lock until `resume`. Not all its blocks are
    done yet, so it has not reached its reduction, which it finishes before it lets go of the group."""
    os.kill(proc.pid, signal.SIGSTOP)
    done = store / "verify" / "random-add" / "done" / "c"
    assert proc.poll() is None and len(os.listdir(done)) < n_blocks


def resume(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGCONT)


def single_run(cwd: Path, out: str, *args: str) -> bytes:
    """The true report of `varith verify ARGS` (weights first): one process, its own store."""
    r = varith("verify", *args, "--cluster", "none", "--store", f"{out}.zarr", "--out", out, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return (cwd / out).read_bytes()


class Holder:
    """Another process holding a store group's lock (as a run writing it does) until stopped or killed."""

    def __init__(self, store: Path, group: str):
        code = (
            "import sys, time\nfrom hpc.store import group_lock\n"
            "with group_lock(sys.argv[1], sys.argv[2]):\n    print('held', flush=True)\n    time.sleep(600)\n"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, str(store), group], cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout.readline().strip() == "held"

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: no clean-up of any kind
        self.proc.wait(timeout=30)


def test_second_run_with_fresh_and_another_seed_waits_and_both_are_true(model, tmp_path):
    """The audit's case: both exited 0 with wrong verdicts. Now the second waits, then starts its own."""
    a_args = [str(model), "--questions", "16000", *BLOCKS, "--store", "s.zarr"]
    first = start(tmp_path, "verify", *a_args, "--workers", "1", "--out", "a.json")
    wait_for_done_chunks(first, tmp_path / "s.zarr", 1)
    pause_holding_the_lock(first, tmp_path / "s.zarr", 16)  # (so that the second surely starts meanwhile)
    try:
        second = start(tmp_path, "verify", *a_args, "--fresh", "--seed", "111", "--workers", "1", "--out", "b.json")
        waiting = second.stderr.readline()  # the second has reached the store: it waits
    finally:
        resume(first)
    out_b, err_b = second.communicate(timeout=300)
    second = subprocess.CompletedProcess(second.args, second.returncode, out_b, waiting + err_b)
    _out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 0, second.stderr
    waited = [ln for ln in second.stderr.splitlines() if "another run" in ln]
    assert waited == [
        f"store {tmp_path}/s.zarr/verify/random-add: another run (pid {first.pid} on {os.uname().nodename}) is "
        "writing it; waiting (--no-wait to refuse)"
    ], second.stderr
    truth_a = single_run(tmp_path, "ta.json", *a_args[:-2])
    truth_b = single_run(tmp_path, "tb.json", *a_args[:-2], "--seed", "111")
    assert truth_a != truth_b  # (the seeds' reports differ, so a mix-up would show)
    assert (tmp_path / "a.json").read_bytes() == truth_a
    assert (tmp_path / "b.json").read_bytes() == truth_b
    # the store now holds the second run's blocks: a default run of seed 111 reuses every one of them
    again = varith("verify", *a_args, "--seed", "111", "--workers", "1", "--out", "c.json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "random: 16 blocks (16 already done), 16,000 questions" in again.stdout
    assert without_scoring(tmp_path / "c.json") == without_scoring(tmp_path / "tb.json")
    # the reusing run reports the precision the blocks were scored in, and that an earlier run scored them
    scoring = json.loads((tmp_path / "c.json").read_text())["random"]["scoring"]
    truth_scoring = json.loads((tmp_path / "tb.json").read_text())["random"]["scoring"]
    assert scoring["precision"] == truth_scoring["precision"] and scoring["requested"] == truth_scoring["requested"]
    assert scoring["reason"].startswith("every block was scored by an earlier run"), scoring


def without_scoring(path: Path) -> dict:
    """The report without its `scoring` field (how many questions were re-scored, the precision's reason: what a
    run that reuses every block cannot equal byte for byte)."""
    report = json.loads(path.read_text())
    report["random"].pop("scoring")
    return report


def test_second_run_with_no_wait_is_refused_and_the_first_is_true(model, tmp_path):
    args = [str(model), "--questions", "16000", *BLOCKS, "--store", "s.zarr"]
    first = start(tmp_path, "verify", *args, "--workers", "1", "--out", "a.json")
    wait_for_done_chunks(first, tmp_path / "s.zarr", 1)
    pause_holding_the_lock(first, tmp_path / "s.zarr", 16)
    try:
        refused = varith("verify", *args, "--fresh", "--seed", "111", "--no-wait", "--out", "b.json", cwd=tmp_path)
    finally:
        resume(first)
    assert_one_line_error(refused, f"store {tmp_path}/s.zarr/verify/random-add: another run", "is writing it")
    assert f"(pid {first.pid} on " in refused.stderr and "--no-wait" in refused.stderr
    assert not (tmp_path / "b.json").exists()
    _out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert (tmp_path / "a.json").read_bytes() == single_run(tmp_path, "t.json", *args[:-2])


def test_a_killed_run_leaves_the_store_usable_at_once(model, tmp_path):
    args = [str(model), "--questions", "16000", *BLOCKS, "--store", "s.zarr"]
    first = start(tmp_path, "verify", *args, "--workers", "1", "--out", "a.json")
    wait_for_done_chunks(first, tmp_path / "s.zarr", 2)
    first.kill()  # SIGKILL: the driver never gets to let go of anything
    first.communicate(timeout=60)
    again = varith("verify", *args, "--no-wait", "--workers", "1", "--out", "a.json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "another run" not in again.stderr
    assert "already done" in again.stdout and "(0 already done)" not in again.stdout
    assert (tmp_path / "a.json").read_bytes() == single_run(tmp_path, "t.json", *args[:-2])


def test_the_lock_waits_for_another_process_and_dies_with_it(tmp_path):
    store = tmp_path / "s.zarr"
    holder = Holder(store, "verify/random")
    assert lock_file(store, "verify/random") == store / "verify" / "random.lock"
    with pytest.raises(InputError, match=r"another run \(pid \d+ on .*\) is writing it"):
        with group_lock(store, "verify/random", wait=False):
            pass
    with group_lock(store, "verify/exhaustive", wait=False):  # another group of the store: free
        pass
    holder.kill()
    with group_lock(store, "verify/random", wait=False):  # at once: the kernel dropped the dead holder's lock
        with group_lock(store, "verify/random", wait=False):  # re-entrant in one process
            pass


def test_a_waiting_run_says_so_once_and_goes_on_when_the_other_ends(model, tmp_path):
    holder = Holder(tmp_path / "s.zarr", "verify/random-add")
    run = start(tmp_path, "verify", str(model), "--questions", "2000", *BLOCKS, "--store", "s.zarr", "--workers", "1",
                "--out", "a.json")  # fmt: skip
    line = run.stderr.readline()
    assert line.startswith(f"store {tmp_path}/s.zarr/verify/random-add: another run (pid {holder.proc.pid} on "), line
    assert line.rstrip().endswith("is writing it; waiting (--no-wait to refuse)"), line
    assert run.poll() is None and not (tmp_path / "a.json").exists()
    holder.kill()
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    assert "random: 2 blocks (0 already done), 2,000 questions" in out


def test_fresh_never_clears_a_group_another_run_holds(model, tmp_path):
    args = [str(model), "--questions", "2000", *BLOCKS, "--store", "s.zarr", "--workers", "1"]
    assert varith("verify", *args, "--out", "a.json", cwd=tmp_path).returncode == 0
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "s.zarr" / "verify" / "random-add").rglob("*"))
    holder = Holder(tmp_path / "s.zarr", "verify/random-add")
    try:
        refused = varith("verify", *args, "--fresh", "--no-wait", "--out", "b.json", cwd=tmp_path)
        assert_one_line_error(refused, "another run", "is writing it")
        after = sorted(p.relative_to(tmp_path) for p in (tmp_path / "s.zarr" / "verify" / "random-add").rglob("*"))
        assert after == before
    finally:
        holder.kill()


@pytest.mark.parametrize("command, group", [("ablate", "ablate/corrected"), ("algo", "ablate/corrected")])
def test_ablate_and_algo_hold_their_groups(model, tmp_path, command, group):
    """A run of ablate (or algo, which ablates first when there is no behaviour file) on a group another run
    writes: refused with --no-wait, one line, nothing written."""
    holder = Holder(tmp_path / "s.zarr", group)
    try:
        r = varith(command, str(model), "--store", "s.zarr", "--cluster", "none", "--no-wait", cwd=tmp_path)
        assert_one_line_error(r, f"{group}", "another run", "is writing it")
        assert not (tmp_path / "s.zarr" / group).exists()
    finally:
        holder.kill()


def test_a_task_of_a_cleared_group_writes_nothing_into_the_new_one(tmp_path):
    """A task still running for a run whose group another run has since cleared (--fresh) and built again
    (a SLURM worker outliving its killed driver) writes nothing there: the group's generation differs."""
    from arith.verify import BlockCounts, RandomSuite
    from arith.vocab import ADD
    from jobs.stages.verify_store import make_fingerprint, prepare_suite

    suite = RandomSuite(2, (ADD,), 3000, block_size=1000)
    fp = make_fingerprint("0" * 64, suite.fingerprint(), "reference", "fp32", 16)
    old = prepare_suite(tmp_path / "s.zarr", suite.name, fp, suite.n_blocks, 2, 16, suite=suite)
    new = prepare_suite(tmp_path / "s.zarr", suite.name, fp, suite.n_blocks, 2, 16, fresh=True, suite=suite)
    assert old.generation and new.generation != old.generation
    with pytest.raises(InputError, match="cleared or rebuilt by another run since block 1 was handed out"):
        old.write_block(1, BlockCounts.empty(2))
    assert new.pending() == [0, 1, 2]
    assert not (tmp_path / "s.zarr" / "verify" / "random" / "tested" / "c").exists()
    reopened = prepare_suite(tmp_path / "s.zarr", suite.name, fp, suite.n_blocks, 2, 16, suite=suite)
    assert reopened.generation == new.generation
