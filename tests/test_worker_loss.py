"""A Dask worker lost at any moment never fails `varith verify`: start-up, plugin set-up, mid-run.

`varith verify` runs as a user starts it, with 2 local worker processes; one worker process (a child of the
driver) is killed with SIGKILL at a given moment after the worker processes appear, or once blocks are
finishing. The accuracy json must equal an undisturbed run's (computed in one process).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from arith.verify import RandomSuite
from arith.vocab import ADD
from hpc.cluster import register_plugin
from tests.conftest import REPO
from tests.test_verify_dask import TINY, make_random_model, reference_report

SUITE = RandomSuite(2, (ADD,), 150_000, block_size=5_000)  # 30 blocks


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_random_model(tmp_path_factory.mktemp("loss"), TINY)


@pytest.fixture(scope="module")
def truth(model) -> dict:
    return json.loads(json.dumps({"random": reference_report(model, SUITE)}))


def worker_processes(driver: psutil.Process) -> list[psutil.Process]:
    """The driver's worker processes (multiprocessing children started by the nannies)."""
    found = []
    for child in driver.children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


@pytest.mark.parametrize("moment", [0.5, 1.5, 3.0, "mid-run"])
def test_worker_killed_at_any_moment_changes_nothing(model, truth, tmp_path, moment):
    out, store = tmp_path / "acc.json", tmp_path / "s.zarr"
    cmd = [sys.executable, "-m", "jobs", "verify", str(model), "--questions", str(SUITE.n_questions)]
    cmd += ["--block-size", str(SUITE.block_size), "--ops", "add", "--workers", "2"]
    cmd += ["--store", str(store), "--out", str(out), "--no-progress", "--precision", "fp32"]  # as reference_report
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        driver = psutil.Process(proc.pid)
        deadline = time.time() + 120
        while not worker_processes(driver) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        done = store / "verify" / "random" / "done" / "c"

        def blocks_done() -> int:
            return len(os.listdir(done)) if done.is_dir() else 0

        # at the moment, or at the latest once half the blocks are done (a fast machine may finish in 3 s)
        until = deadline if moment == "mid-run" else time.time() + moment
        enough = 3 if moment == "mid-run" else SUITE.n_blocks // 2
        while proc.poll() is None and time.time() < until and blocks_done() < enough:
            time.sleep(0.02)
        victims = worker_processes(driver)
        assert proc.poll() is None and victims, "the run ended before a worker could be killed"
        os.kill(victims[0].pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    assert json.loads(out.read_text()) == truth
    assert "random: 30 blocks" in stdout


class _FlakyClient:
    """A client whose plugin broadcast meets a dying worker `fails` times."""

    def __init__(self, fails: int, error: Exception):
        self.fails, self.error, self.calls = fails, error, 0

    def register_plugin(self, plugin):
        self.calls += 1
        if self.calls <= self.fails:
            raise self.error


def test_plugin_registration_retries_a_broadcast_that_met_a_dying_worker():
    from distributed.comm.core import CommClosedError

    from hpc.cluster import TorchSetup

    plugin = TorchSetup(1)
    client = _FlakyClient(2, CommClosedError("in <TCP (closed) ConnectionPool.register_worker_plugin>"))
    assert register_plugin(client, plugin, pause=0.0) is True and client.calls == 3
    # every attempt failed: the scheduler still holds the plugin for workers that join later; the run goes on
    client = _FlakyClient(99, CommClosedError("Stream is closed"))
    assert register_plugin(client, plugin, attempts=3, pause=0.0) is False and client.calls == 3
    # an error of the plugin's own set-up is no lost worker: it propagates
    with pytest.raises(ImportError):
        register_plugin(_FlakyClient(1, ImportError("no module named x")), plugin, pause=0.0)
