"""The callable submitted once per run (`varith sweep`): trains `runs/<name>/` through `arith.train.train`.

It is a submitit Checkpointable: on preemption or timeout submitit calls `checkpoint()`, which marks the run
requeued and returns a *fresh* TrainTask; the requeued job starts over in this callable and
`train(resume=True)` picks up the newest accelerate checkpoint on disk (`runs/<name>/checkpoints/step_*`).
Nothing about progress lives in the pickle, so a node-failure requeue that reuses the original pickle
resumes the same way. Signals stay submitit's: SIGUSR2 requeues through `checkpoint()`, SIGTERM is logged and
bypassed (arith.train.Interrupts, which `varith train` uses, is not installed here).

The job log (`<id>_0_log.out`, which `varith status` names) gets a plain progress line about every 5% (step,
loss, steps/s, ETA) and "resuming from step N" once when the run resumes; a loss or gradient that stops being
finite fails the run with one line naming the step (arith.train.Diverged), and the sweep does not retry it.

Multi-task jobs (one task per GPU, or several CPU tasks) export the torch.distributed environment from
submitit's job environment, and accelerate runs DDP (nccl on GPUs, gloo on CPUs); only rank 0 writes markers
and the manifest.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from arith.train import tunable_fields
from hpc.launcher import backend
from jobs.runs import lifecycle as runs
from jobs.runs import markers
from jobs.runs.rundir import RunDir

# TrainConfig fields a sweep may override (the name carries op, digits, layers, heads, steps and seed)
TRAIN_OVERRIDES = tuple(f.name for f in tunable_fields())


@dataclass(frozen=True)
class RunSpec:
    """One training run: its full model name, where runs live, TrainConfig overrides, the ins* model's
    addition model (its weights are `runs/<insert>/<insert>.pth`) and the torch threads per task."""

    name: str
    runs_dir: str
    overrides: tuple[tuple[str, Any], ...] = ()
    insert: str | None = None
    threads: int = 1

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    @property
    def insert_weights(self) -> Path | None:
        if self.insert is None:
            return None
        return RunDir.of(self.runs_dir, self.insert).weights

    def train_config(self):
        """The arith.train TrainConfig for this run (validates the name and the overrides: InputError)."""
        from arith.train import TrainConfig

        extra = dict(self.overrides)
        unknown = sorted(set(extra) - set(TRAIN_OVERRIDES))
        if unknown:
            raise ValueError(f"unknown training override(s): {', '.join(unknown)}")
        weights = self.insert_weights
        return TrainConfig(name=self.name, insert_weights=str(weights) if weights else None, **extra)


def _job_environment():
    """submitit's JobEnvironment when running inside a submitit job, else None (a plain call)."""
    try:
        return submitit.JobEnvironment()
    except Exception:  # outside submitit: no environment variables to read
        return None


def _log(msg: str) -> None:
    print(f"[train {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class TrainTask(submitit.helpers.Checkpointable):
    """Train one run; returns a small summary dict. Raises on failure (so SLURM marks the job FAILED and
    afterok dependents are cancelled), except under the debug executor, where it returns {"state": "failed",
    ...} instead (submitit's debug job would otherwise open a post-mortem debugger)."""

    def __init__(self, spec: RunSpec):
        self.spec = spec

    def __call__(self) -> dict:
        spec = self.spec
        env = _job_environment()
        world = env.num_tasks if env is not None else 1
        rank = env.global_rank if env is not None else 0
        cluster = env.cluster if env is not None else None
        job_id = env.job_id if env is not None else None
        if world > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
            # accelerate sets torch's threads from this in multi-process runs (and warns when it is unset)
            os.environ.setdefault("OMP_NUM_THREADS", str(max(1, spec.threads)))
        stdout = stderr = None
        if env is not None:
            try:
                stdout, stderr = str(env.paths.stdout), str(env.paths.stderr)
            except KeyError:  # SUBMITIT_FOLDER unset (debug executor)
                pass
        _log(f"{spec.name}: rank {rank}/{world} on {os.uname().nodename}, job {job_id}, cluster {cluster}")
        if rank == 0:
            markers.mark_running(spec.run_dir, job_id, cluster, stdout, stderr)
        import torch  # after the marker: "running" means the job started, not that torch finished importing

        old_threads = torch.get_num_threads()
        torch.set_num_threads(max(1, spec.threads))
        try:
            in_process = cluster is None or backend(cluster).in_process
            progress = not in_process  # the debug executor runs in the sweep's own process
            if spec.insert is not None:
                self._ensure_insert(rank, progress)
            summary = _train(spec, rank, progress)
            _log(f"{spec.name}: done, {summary['steps_done']} steps, final loss {summary['final_loss']}")
            return summary
        except Exception as exc:
            error = runs.error_line(exc)
            if rank == 0:
                runs.fail_run(spec.run_dir, exc)
            _log(f"{spec.name}: failed: {error}")
            if cluster is not None and backend(cluster).in_process:
                traceback.print_exc(file=sys.stderr)
                return {"name": spec.name, "state": "failed", "error": error}
            raise
        finally:
            torch.set_num_threads(old_threads)

    def _ensure_insert(self, rank: int, progress: bool) -> None:
        """An ins* run needs its addition model; train it here, first, when its weights are missing or stale.
        (A sweep normally trains it as its own job before this one starts: this is the fallback.)"""
        spec = self.spec
        insert_dir = Path(spec.runs_dir) / spec.insert
        if markers.artifacts_ok(insert_dir):
            return
        _log(f"{spec.name}: addition model {spec.insert} is missing; training it first")
        ins_spec = RunSpec(name=spec.insert, runs_dir=spec.runs_dir, overrides=spec.overrides, threads=spec.threads)
        if rank == 0:
            markers.update_marker(
                insert_dir,
                state="running",
                started_at=time.time(),
                error=None,
                host=os.uname().nodename,
                pid=os.getpid(),
            )
        try:
            _train(ins_spec, rank, progress)
        except Exception as exc:
            if rank == 0:
                runs.fail_run(insert_dir, exc)
            raise RuntimeError(f"addition model {spec.insert} failed: {exc}") from exc

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Preempted or timed out (rank 0, inside submitit's signal handler): requeue a fresh instance,
        which resumes from the newest checkpoint on disk."""
        try:
            markers.mark_requeued(self.spec.run_dir, lock_timeout=5.0)
        except TimeoutError:  # the marker is being written right now: the requeued job rewrites it anyway
            pass
        _log(f"{self.spec.name}: checkpoint requested; requeueing (resumes from the newest checkpoint)")
        return submitit.helpers.DelayedSubmission(TrainTask(self.spec), *args, **kwargs)


def _train(spec: RunSpec, rank: int, progress: bool) -> dict:
    """Train (or resume) the run. `progress`: plain progress lines in the job log (stdout; a job of its own,
    not the debug executor, which runs in the sweep's process). "resuming from step N" goes there too."""
    cfg = spec.train_config()
    run = RunDir(spec.run_dir)
    result = runs.train_run(run, cfg, resume=True, progress=progress, progress_stream=sys.stdout)
    if not result.complete:
        raise RuntimeError(f"training stopped at step {result.steps_done} before the end")
    if rank == 0:
        runs.finish_run(spec.run_dir, result, cfg, insert=spec.insert)
    return {
        "name": spec.name,
        "state": "done",
        "steps_done": result.steps_done,
        "final_loss": result.final_loss,
        "weights": str(result.weights),
    }
