"""Finishing a run: one owner for what `varith train` and the sweep's TrainTask do when training ends.

`finish_run` records the weights and train json in the run's manifest (sha256, sizes, seed, config) and then
marks the run done; `fail_run` marks it failed with the first line of the error. Both are called by rank 0
only. The artifact paths may be relative to the current directory or absolute: they are resolved here, so
`varith train --out runs` and an absolute `--out` land the same manifest.

The run state `varith status` shows (and the sweep's skip/retry decisions use): `resolve_runs` reads each
run's marker first; a submitted or running slurm job is then judged by `hpc.scheduler.job_fate` (one squeue
and at most one sacct call for all runs), a local or debug one by the processes its marker names. A crash
never shows as a hang. States: pending, running, done, failed, stopped (on purpose, `--stop-after`; it
resumes; or by Ctrl-C/SIGTERM, with a checkpoint at that step), stale (marked done but its artifacts no longer
match the manifest).

`recorded_settings` is the one rule for "a run with the same settings": `varith train` and the sweep ask it
before training into an existing run folder.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from arith.files import atomic_write_json
from hpc import scheduler
from hpc.launcher import is_queued, recorded
from jobs.runs import markers
from jobs.runs.rundir import RunDir


def error_line(exc: BaseException) -> str:
    """`Type: first line of the message`, the form markers keep."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def train_run(
    run: RunDir,
    cfg,
    *,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
    interrupts=None,
    progress_stream=None,
):
    """Train `cfg` into the run folder (arith.train.train with its paths; progress.json kept up to date, which
    `varith status` and the sweep's progress lines read). `interrupts` (arith.train.Interrupts) and
    `progress_stream` go to arith.train.train."""
    from arith.train import train

    def write_progress(record: dict) -> None:
        atomic_write_json(run.progress, record)

    return train(
        cfg,
        run.train_paths(),
        resume=resume,
        progress=progress,
        stop_after=stop_after,
        on_progress=write_progress,
        interrupts=interrupts,
        progress_stream=progress_stream,
    )


def finish_run(run_dir: str | Path, result, cfg, **meta) -> None:
    """Training of `run_dir` completed with `result` (arith.train.TrainResult) under `cfg` (TrainConfig):
    manifest first, then the done marker (a run marked done always has its manifest)."""
    markers.record_artifacts(
        run_dir,
        [result.weights, result.train_json],
        seed=cfg.model_name.seed,
        train_config=asdict(cfg),
        **meta,
    )
    markers.mark_done(run_dir, result.steps_done, result.final_loss)


def fail_run(run_dir: str | Path, reason: BaseException | str) -> None:
    """Mark the run failed; a diverged run (arith.train.Diverged) is marked not worth retrying."""
    from arith.train import Diverged

    text = reason if isinstance(reason, str) else error_line(reason)
    markers.mark_failed(run_dir, text, retryable=not isinstance(reason, Diverged))


def clear_for_retrain(run_dir: str | Path) -> None:
    """--force (train and sweep): forget the run's training outputs (jobs.runs.markers.clear_run) and say on stderr
    which files made from the old weights are now stale (they are kept: each names the weights' sha256)."""
    import sys

    run = RunDir(run_dir)
    stale = [p.name for p in run.derived_artifacts if p.exists()]
    markers.clear_run(run.path)
    if stale:
        print(
            f"warning: {run.path}: made from the old weights, now stale: {', '.join(stale)} "
            "(rerun verify/ablate/algo, or delete them)",
            file=sys.stderr,
        )


def stop_run(run_dir: str | Path, result) -> None:
    """Training stopped before the end with a checkpoint at its last step, on purpose (`--stop-after`) or by a
    signal (`result.stopped_by`): resumable, not a failure."""
    markers.mark_stopped(run_dir, result.steps_done, result.final_loss, result.stopped_by or "--stop-after")


# ------------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class Recorded:
    """What a run folder already holds of training, judged against a requested TrainConfig: `finished`
    (weights and train json on disk), the file or checkpoint folder its settings were read from (None: none),
    and the settings that differ (`d_model 30 != 510`, recorded != requested; empty: the same settings)."""

    finished: bool
    source: Path | None
    differences: tuple[str, ...]

    def other_settings(self, run: RunDir) -> str:
        """One line: the run folder and the settings it was trained (or checkpointed) with that differ."""
        what = "was trained" if self.finished else f"has a checkpoint ({self.source.name})"
        return f"{run.path} {what} with other settings (run != asked: {', '.join(self.differences)})"


def recorded_settings(run: RunDir, cfg) -> Recorded:
    """The one rule for "same settings", shared by `varith train` and `varith sweep`: the `Config` of the run's
    `<name>_train.json` when it finished, else the one kept with its newest checkpoint, compared with `cfg`
    (arith.train.settings_differences)."""
    import json

    from arith.train import checkpoint_config, newest_checkpoint, settings_differences

    finished = run.weights.is_file() and run.train_json.is_file()
    record: dict | None = None
    source: Path | None = None
    if finished:
        source = run.train_json
        try:
            data = json.loads(source.read_text())
        except (OSError, ValueError):
            data = None
        record = data.get("Config") if isinstance(data, dict) else None
    elif (ckpt := newest_checkpoint(run.checkpoints)) is not None:
        source, record = ckpt, checkpoint_config(ckpt)
    diff = tuple(settings_differences(record, cfg)) if isinstance(record, dict) else ()
    return Recorded(finished, source, diff)


# ------------------------------------------------------------------------------------------------ status


@dataclass(frozen=True)
class RunStatus:
    """What `varith status` shows for one run."""

    name: str
    state: str  # pending | running | done | failed | stopped | stale
    job_id: str | None
    step: int | None
    steps: int | None
    loss: float | None
    log: str | None
    detail: str | None
    attempts: int
    cluster: str | None
    stage: str | None = None  # `varith regenerate`'s pipeline stage (runs/<name>/stage.json), if any


def resolve(run_dir: str | Path, fates: Mapping[str, scheduler.Fate]) -> RunStatus:
    """The effective state of one run: its marker first, then (for a submitted or running job of a queued
    backend) its fate from the scheduler (`fates`, by job id, from `hpc.scheduler.Watcher`), or (local, debug) the
    processes the marker names."""
    run_dir = Path(run_dir)
    m = markers.read_marker(run_dir)
    progress = markers.read_progress(run_dir) or {}
    step, steps, loss = progress.get("step"), progress.get("steps"), progress.get("loss")
    if m is None:
        problem = markers.artifacts_problem(run_dir)
        state = "done" if problem is None else "stale"
        return RunStatus(run_dir.name, state, None, step, steps, loss, None, problem, 0, None, read_stage(run_dir))

    state, detail = m.state, m.error
    if m.state == "done":
        if m.steps_done is not None:
            step = m.steps_done
            steps = steps or m.steps_done
        loss = m.final_loss if m.final_loss is not None else loss
        problem = markers.artifacts_problem(run_dir)
        if problem is not None:
            state, detail = "stale", problem
    elif m.state == "stopped":
        step = m.steps_done if m.steps_done is not None else step
        detail = f"at step {step} by {m.stopped_by or '--stop-after'}; run again to continue"
    elif m.state in ("submitted", "running"):
        if is_queued(m.cluster):
            state, detail = _queued_state(m, fates, run_dir)
        else:
            state, detail = _process_state(m)
    return RunStatus(
        run_dir.name, state, m.job_id, step, steps, loss, m.stdout, detail, m.attempts, m.cluster, read_stage(run_dir)
    )


def read_stage(run_dir: str | Path) -> str | None:
    """`stage.json`'s stage as one word with its state (`verify running`, `hub done`); None without one."""
    import json

    try:
        data = json.loads(RunDir(Path(run_dir)).stage.read_text())
        return f"{data['stage']} {data['state']}"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _queued_state(m: markers.Marker, fates: Mapping[str, scheduler.Fate], run_dir: Path) -> tuple[str, str | None]:
    """submitted/running marker of a slurm job -> pending | running | done | failed, with a reason."""
    if not m.job_id:
        return ("pending", "being submitted")
    fate = fates.get(m.job_id) or scheduler.Fate("unknown")
    if fate.phase == "unknown":
        return (m.state if m.state == "running" else "pending", "squeue unavailable: state from the marker only")
    if fate.never_starts:
        return ("pending", f"{fate.reason}: SLURM will never start it; scancel {m.job_id}")
    if fate.phase in ("pending", "running"):
        return (fate.phase, fate.reason)
    # it ended one way or another, and did not mark its run done: unless it did so since the first look
    latest = markers.read_marker(run_dir)
    if latest is not None and latest.state in ("done", "failed"):
        ok = markers.artifacts_ok(run_dir) or latest.state == "failed"
        return (latest.state if ok else "stale", latest.error)
    r = fate.result
    why = None if r is None else (r.error if not r.ok else "job returned without marking the run done")
    if fate.acct == "COMPLETED" and (r is None or r.ok):
        return ("failed", "sacct: COMPLETED but the run was not marked done")
    if fate.acct is not None:
        return ("failed", f"sacct: {fate.acct}" + (f"; {why}" if why else ""))
    return ("failed", f"not in squeue; {why}" if why else "not in squeue and no result (job crashed)")


def _process_state(m: markers.Marker) -> tuple[str, str | None]:
    """submitted/running marker of a local or debug job: the process recorded in the marker (or the local
    job's controller, or the sweep driver)."""
    here = socket.gethostname()
    if m.host and m.host != here:
        return (m.state if m.state == "running" else "pending", f"on {m.host}: cannot check from {here}")
    if m.state == "running":
        if scheduler.pid_alive(m.pid):
            return ("running", None)
        return ("failed", f"process {m.pid} is gone (crashed or killed)")
    if getattr(recorded(m.cluster), "job_id_is_pid", False) and m.job_id and m.job_id.isdigit():
        if scheduler.pid_alive(int(m.job_id)):
            return ("pending", "starting")
        return ("failed", f"local job {m.job_id} is gone before it started")
    if m.driver_host == here and m.driver_pid and not scheduler.pid_alive(m.driver_pid):
        return ("failed", f"sweep driver {m.driver_pid} is gone before the job started")
    return ("pending", "queued by the sweep driver")


def resolve_runs(dirs: Sequence[str | Path]) -> list[RunStatus]:
    """resolve() for each run dir, with one squeue and at most one sacct call for all of them."""
    live = {}
    for d in dirs:
        m = markers.read_marker(Path(d))
        if m is not None and is_queued(m.cluster) and m.state in ("submitted", "running") and m.job_id:
            pkl = scheduler.result_path_for_log(m.stdout)
            live[m.job_id] = scheduler.read_result(pkl) if pkl else None
    fates = scheduler.Watcher().look(live) if live else {}
    return [resolve(d, fates) for d in dirs]


def resolve_one(run_dir: str | Path) -> RunStatus:
    """resolve() for one run, asking squeue/sacct only when its marker names a live slurm job."""
    return resolve_runs([Path(run_dir)])[0]


def collect(runs_dir: str | Path) -> list[RunStatus]:
    """The status of every run under runs_dir (one squeue and at most one sacct call in all)."""
    return resolve_runs(markers.run_dirs(Path(runs_dir)))
