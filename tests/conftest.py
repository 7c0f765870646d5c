"""Shared fixtures: a tiny trained model (2-digit addition, reaches 100%) and helpers to run the CLI."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO_NAME = "add_d2_l1_h3_t3K_s123456"
DEMO_KW = dict(d_model=64, d_head=16, lr=3e-3, log_every=500, checkpoint_every=10**9)


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory) -> Path:
    """Weights of a trained 2-digit addition model (about 20 s on 2 cores). Returns the .pth path."""
    from arith.train import TrainConfig

    out = tmp_path_factory.mktemp("runs") / DEMO_NAME
    result = train_in(TrainConfig(DEMO_NAME, **DEMO_KW), out, resume=False, progress=False)
    assert result.complete
    return result.weights


def train_in(cfg, folder: Path, **kw):
    """arith.train.train into `folder` laid out as a run folder (`folder/<name>.pth`, ...)."""
    from arith.train import train
    from jobs.runs.rundir import RunDir

    return train(cfg, RunDir(folder, cfg.name).train_paths(), **kw)


def varith(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `python -m jobs ARGS` as a user would, capturing output."""
    return subprocess.run(
        [sys.executable, "-m", "jobs", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        timeout=600,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for frag in fragments:
        assert frag in lines[0], lines[0]


@contextlib.contextmanager
def worker_killed_when(client, done_chunks: Path):
    """Kill one Dask worker process (SIGKILL) as soon as the first chunk appears under `done_chunks` (a done
    array's `c/` folder), while the body runs its stage on `client`."""
    import os
    import threading
    import time

    pids = list(client.run(os.getpid).values())

    def kill():
        deadline = time.time() + 120
        while time.time() < deadline and not (done_chunks.is_dir() and any(done_chunks.iterdir())):
            time.sleep(0.01)
        os.kill(pids[0], 9)

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    try:
        yield
    finally:
        killer.join(timeout=5)
