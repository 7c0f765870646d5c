"""The one shape every Dask stage has (verify, ablate, algo, and the studies built on them).

A stage is a class with a `name`, the module of its block work (`preload`, named from the work class itself so a
file move cannot break it), and two methods:

- `run(job, blocks)`: prepare (or reopen and check) the job's store groups under one lock, run their pending blocks
  through `blocks` (a `hpc.cluster.BlockRunner`: a Dask client, or this process), reduce the store to a result;
- `reduce(job)`: the result from a store whose blocks are all done, computing nothing.

`run_stage(stage, jobs, settings, cluster)` opens the cluster once (any `hpc.cluster.Cluster` kind, `InProcess`
included) and runs every job on it. `StageSettings` holds what every stage shares. `worker_model` is the model
a block task scores, loaded once per worker process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic, Protocol, TypeVar

from arith.errors import InputError
from arith.files import sha256_file
from hpc.blocks import DEFAULT_RETRIES, worker_cached
from hpc.cluster import ClusterHandle, ClusterSpec, open_cluster

J = TypeVar("J")
R = TypeVar("R")


@dataclass(frozen=True)
class StageSettings:
    """What every stage shares: the device of its block tasks, task retries, the progress report, --fresh, and
    whether to wait for another run holding the same store group (False: refuse)."""

    device: str = "auto"
    retries: int = DEFAULT_RETRIES
    progress: bool = True
    fresh: bool = False
    wait: bool = True


class Stage(Protocol, Generic[J, R]):
    """A Dask stage: its block work classes (`work`, whose modules the workers import as they start), how many
    block tasks a job has at most (sizes a SLURM cluster), `run` and `reduce` (module docstring)."""

    name: ClassVar[str]
    work: ClassVar[tuple[type, ...]]

    def tasks(self, job: J) -> int: ...

    def run(self, job: J, cluster: ClusterHandle) -> R: ...

    def reduce(self, job: J) -> R: ...


class FunctionStage:
    """A stage made of two module functions: `analyse(client, job, settings, resources)` (prepare, run the
    pending blocks on `client` or here, reduce) and `reduce_store(job, settings)`; subclasses set them (as
    staticmethods), `name`, `work` and `MAX_TASKS` (the block tasks a SLURM cluster is sized for)."""

    name: ClassVar[str]
    work: ClassVar[tuple[type, ...]]
    MAX_TASKS: ClassVar[int]
    analyse: ClassVar[Callable]
    reduce_store: ClassVar[Callable]

    def __init__(self, settings: StageSettings):
        self.settings = settings

    def tasks(self, job) -> int:
        return self.MAX_TASKS

    def run(self, job, cluster: ClusterHandle):
        return self.analyse(cluster.client, job, self.settings, cluster.task_resources)

    def reduce(self, job):
        return self.reduce_store(job, self.settings)


def preload(stage: Stage | type) -> tuple[str, ...]:
    """The modules of a stage's block work classes (named from the classes: a file move cannot break them)."""
    return tuple(dict.fromkeys(w.__module__ for w in stage.work))


def run_stage(stage: Stage[J, R], jobs: Sequence[J], spec: ClusterSpec) -> list[tuple[J, R]]:
    """Every job of `stage` on one cluster (`spec`: any kind, `none` = this process): opened once, announced,
    closed at the end (also on Ctrl-C, when the store keeps every finished block)."""
    # distributed's sync() logs a spurious callback error through tornado when Ctrl-C lands mid-call
    logging.getLogger("tornado.application").setLevel(logging.CRITICAL)
    with open_cluster(spec) as handle:
        handle.announce()
        return [(job, stage.run(job, handle)) for job in jobs]


def worker_model(weights: str, weights_sha256: str, shape, device: str = "auto"):
    """The model at `weights`, loaded once per worker process (checked against the driver's sha256) and kept;
    one model per process at a time."""

    def load():
        from arith.device import choose_device
        from arith.weights import load_model

        if not Path(weights).is_file():
            raise InputError(f"weights {weights}: no such file on this worker (is it on a shared filesystem?)")
        if sha256_file(weights) != weights_sha256:
            raise InputError(f"weights {weights} changed since this run started; run it again")
        return load_model(weights, shape, choose_device(device))

    return worker_cached("model", (weights, weights_sha256, device), load)
