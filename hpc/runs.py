"""Finishing a run: one owner for what `varith train` and the sweep's TrainTask do when training ends.

`finish_run` records the weights and train json in the run's manifest (sha256, sizes, seed, config) and then
marks the run done; `fail_run` marks it failed with the first line of the error. Both are called by rank 0
only. The artifact paths may be relative to the current directory or absolute: they are resolved here, so
`varith train --out runs` and an absolute `--out` land the same manifest.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from hpc import markers


def error_line(exc: BaseException) -> str:
    """`Type: first line of the message`, the form markers keep."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


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
    markers.mark_failed(run_dir, reason if isinstance(reason, str) else error_line(reason))
