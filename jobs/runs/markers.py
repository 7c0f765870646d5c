"""Per-run state markers and artifact manifests under `runs/<name>/`.

- `runs/<name>/state.json`: where a run stands: `submitted`, `running`, `done`, `failed` or `stopped` (on
  purpose, by `varith train --stop-after`, or by Ctrl-C/SIGTERM with a checkpoint at that step: `stopped_by`
  says which; it resumes), plus the job id, the cluster, the log paths, the
  attempt count, timestamps and the last error. Several processes write it (the sweep driver, the job itself,
  a requeue hook), so every change is a read-modify-write under an `flock` on `runs/<name>/.state.lock`, and
  the file itself is replaced atomically (readers never see half a file).
- `runs/<name>/manifest.json`: sha256 and size of every artifact, code and package versions, seed and
  command line. `artifacts_ok(run_dir)` says whether the training artifacts are listed there and still match
  byte for byte.
- `runs/<name>/progress.json` is written while training (step, steps, loss); `read_progress` reads it.
File names come from `jobs.runs.rundir.RunDir`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from arith.errors import InputError
from arith.files import atomic_write_json
from arith.manifest import file_entry, files_problem, listed_files, provenance
from jobs.runs import rundir
from jobs.runs.rundir import RunDir

STATES = ("submitted", "running", "done", "failed", "stopped")  # stopped: --stop-after or a signal, resumable
_MAX_EVENTS = 50


@dataclass(frozen=True)
class Marker:
    name: str
    state: str
    attempts: int = 0
    job_id: str | None = None
    cluster: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    host: str | None = None
    pid: int | None = None
    driver_host: str | None = None
    driver_pid: int | None = None
    error: str | None = None
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float | None = None
    steps_done: int | None = None
    final_loss: float | None = None
    stopped_by: str | None = None  # what stopped a `stopped` run: --stop-after, SIGINT, SIGTERM
    retryable: bool = True  # False: the same request would fail again (SLURM never starts it, it diverged)
    events: tuple[tuple[float, str, str | None], ...] = field(default=())

    @classmethod
    def from_dict(cls, d: dict) -> Marker:
        """Strict: an unknown field (a misspelling, a marker of another program) is an error, not dropped."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown marker field(s) {', '.join(map(repr, unknown))}")
        kw = dict(d)
        kw["events"] = tuple(tuple(e) for e in kw.get("events", ()))
        return cls(**kw)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["events"] = [list(e) for e in self.events]
        return d


@contextlib.contextmanager
def _locked(run_dir: Path, timeout: float | None = None) -> Iterator[None]:
    """Exclusive flock on the run's lock file; TimeoutError after `timeout` seconds (None: wait as long as
    needed)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(RunDir(run_dir).lock, "a+") as lock:
        if timeout is None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{RunDir(run_dir).lock} stayed locked for {timeout}s") from None
                    time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_json(path: Path) -> dict | None:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_marker(run_dir: str | Path) -> Marker | None:
    """The run's marker, or None when it has none (or it is unreadable: half-written files never exist, they
    are replaced atomically). A marker with unknown fields or state raises InputError naming them."""
    path = RunDir(run_dir).marker
    data = _read_json(path)
    if data is None:
        return None
    if data.get("state") not in STATES:
        raise InputError(f"marker {path}: unknown state {data.get('state')!r} (expected one of {', '.join(STATES)})")
    try:
        return Marker.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise InputError(f"marker {path}: {exc}") from None


def update_marker(
    run_dir: str | Path,
    *,
    state: str | None = None,
    bump_attempt: bool = False,
    only_if_state: Iterable[str] | None = None,
    lock_timeout: float | None = None,
    **changes,
) -> Marker | None:
    """Change the marker under the run's lock. `only_if_state`: change nothing unless the current state is
    one of these (returns None then). A state change is appended to the marker's event history."""
    run_dir = Path(run_dir)
    if state is not None and state not in STATES:
        raise ValueError(f"unknown run state {state!r}")
    with _locked(run_dir, lock_timeout):
        old = read_marker(run_dir)
        if only_if_state is not None and (old is None or old.state not in set(only_if_state)):
            return None
        d = old.to_dict() if old else {"name": run_dir.name, "state": state or "submitted"}
        now = time.time()
        d.update(changes)
        if bump_attempt:
            d["attempts"] = int(d.get("attempts") or 0) + 1
        if state is not None:
            d["state"] = state
            events = list(d.get("events") or [])
            events.append([now, state, d.get("job_id")])
            d["events"] = events[-_MAX_EVENTS:]
        d["updated_at"] = now
        new = Marker.from_dict(d)
        atomic_write_json(RunDir(run_dir).marker, new.to_dict(), indent=1)
        return new


def mark_submitted(run_dir: str | Path, cluster: str) -> Marker:
    """Before a submission: a new attempt, no job id yet (the job may start before submit() returns). The
    sweep driver's host and pid are kept: a local run queued by a driver that died shows as failed, not
    pending."""
    return update_marker(
        run_dir,
        state="submitted",
        bump_attempt=True,
        cluster=cluster,
        job_id=None,
        stdout=None,
        stderr=None,
        error=None,
        host=None,
        pid=None,
        submitted_at=time.time(),
        started_at=None,
        finished_at=None,
        driver_host=socket.gethostname(),
        driver_pid=os.getpid(),
    )


def set_job(
    run_dir: str | Path,
    job_id: str,
    stdout: str | None,
    stderr: str | None,
    submitted_at: float | None = None,
) -> Marker | None:
    """After a submission: the job id, log paths and submission time (the job may have started, even finished,
    already and written its own state: that state is kept). Nothing changes when the marker belongs to
    another job."""
    run_dir = Path(run_dir)
    with _locked(run_dir):
        old = read_marker(run_dir)
        if old is None or old.job_id not in (None, job_id):
            return None
        d = old.to_dict()
        d.update(job_id=job_id, stdout=stdout, stderr=stderr, updated_at=time.time())
        if submitted_at is not None:
            d["submitted_at"] = submitted_at
        new = Marker.from_dict(d)
        atomic_write_json(RunDir(run_dir).marker, new.to_dict(), indent=1)
        return new


def mark_running(
    run_dir: str | Path, job_id: str | None, cluster: str | None, stdout: str | None, stderr: str | None
) -> Marker:
    changes = dict(host=socket.gethostname(), pid=os.getpid(), started_at=time.time(), error=None, stopped_by=None)
    if job_id is not None:
        changes["job_id"] = job_id
    if stdout is not None:
        changes.update(stdout=stdout, stderr=stderr)
    if cluster is not None:
        changes["cluster"] = cluster
    return update_marker(run_dir, state="running", **changes)


def mark_requeued(run_dir: str | Path, lock_timeout: float | None = None) -> Marker | None:
    """Preempted or timed out: the job goes back to the queue with the same id and resumes from its
    checkpoint."""
    return update_marker(
        run_dir, state="submitted", only_if_state=("running", "submitted"), pid=None, lock_timeout=lock_timeout
    )


def mark_done(run_dir: str | Path, steps_done: int, final_loss: float | None) -> Marker:
    return update_marker(
        run_dir,
        state="done",
        finished_at=time.time(),
        steps_done=steps_done,
        final_loss=final_loss,
        error=None,
    )


def mark_stopped(
    run_dir: str | Path, steps_done: int, final_loss: float | None, stopped_by: str = "--stop-after"
) -> Marker:
    """Stopped before the end, with a checkpoint at `steps_done` to continue from: on purpose (`varith train
    --stop-after`) or by a signal (`stopped_by`: SIGINT, SIGTERM)."""
    return update_marker(
        run_dir,
        state="stopped",
        finished_at=time.time(),
        steps_done=steps_done,
        final_loss=final_loss,
        error=None,
        stopped_by=stopped_by,
    )


def mark_failed(run_dir: str | Path, error: str, retryable: bool = True) -> Marker:
    """The run failed with `error`; `retryable` False when the same request would fail again (a sweep does not
    resubmit it)."""
    return update_marker(run_dir, state="failed", finished_at=time.time(), error=error[:2000], retryable=retryable)


def clear_run(run_dir: str | Path) -> None:
    """Forget a run's training outputs (for --force): checkpoints, weights, train json, progress and manifest.
    The marker is kept (its attempt count and history continue)."""
    import shutil

    rd = RunDir(run_dir)
    shutil.rmtree(rd.checkpoints, ignore_errors=True)
    for p in (*rd.training_artifacts, rd.progress, rd.manifest):
        p.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------ manifest


def record_artifacts(run_dir: str | Path, paths: Iterable[str | Path], **meta) -> dict:
    """Add (or refresh) artifacts in the run's manifest: sha256 and size of each file (a path, absolute or
    relative to the current directory, inside `run_dir`), keyed by its path relative to the run dir. `meta`
    (seed, train config, ...) is merged at the top level. Returns the manifest."""
    run_dir = Path(run_dir)
    with _locked(run_dir):
        manifest = _read_json(RunDir(run_dir).manifest) or {}
        manifest.setdefault("name", run_dir.name)
        arts = listed_files(manifest) or {}
        manifest.pop("artifacts", None)  # the older key of the same entries
        root = run_dir.resolve()
        for p in paths:
            full = Path(p).resolve()  # relative paths are relative to the current directory, like open()
            try:
                rel = str(full.relative_to(root))
            except ValueError:
                raise ValueError(f"artifact {p} is not inside the run directory {run_dir}") from None
            arts[rel] = file_entry(full)
        manifest["files"] = arts
        manifest.update(meta)
        manifest.update(provenance())
        atomic_write_json(RunDir(run_dir).manifest, manifest, indent=1)
        return manifest


def read_manifest(run_dir: str | Path) -> dict | None:
    return _read_json(RunDir(run_dir).manifest)


def artifacts_problem(run_dir: str | Path) -> str | None:
    """None when the run's weights and train json are in its manifest and every listed file matches its
    sha256 (arith.manifest.files_problem); otherwise one line saying what does not."""
    run_dir = Path(run_dir)
    required = [p.name for p in RunDir(run_dir).training_artifacts]
    return files_problem(run_dir, read_manifest(run_dir), required)


def artifacts_ok(run_dir: str | Path) -> bool:
    return artifacts_problem(run_dir) is None


def read_progress(run_dir: str | Path) -> dict | None:
    return _read_json(RunDir(run_dir).progress)


def run_dirs(runs_dir: str | Path) -> list[Path]:
    """Run directories (those with a marker or a manifest), sorted by name; hidden folders excluded."""
    return [r.path for r in rundir.run_dirs(runs_dir)]
