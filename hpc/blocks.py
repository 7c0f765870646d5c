"""The generic Dask block runner: verification, ablation and algorithm search farm their blocks through it.

A piece of work is a small frozen, picklable object (a `BlockWork`): it names its store group (`group`, a
`hpc.store.BlockGroup`) and its task keys, and calling it with a block index computes that block and writes
its rows and done flag (data first), returning `(k, counters)` with a few integers for the progress report.
Tasks are deterministic, so a task run twice (a lost worker, a retry, a restarted driver) rewrites the same
bytes.

`run_blocks` maps the pending blocks over a Dask client, drops each future as soon as its block is stored
(so a lost worker holds no results Dask would recompute), retries failed tasks and reports progress.
`run_checked` repeats "run what is pending, reduce with checks" until the reduction finds no damaged block,
so a result never comes from a hole. `worker_cached` keeps one value (a stage's model) per worker process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol, TypeVar

from arith.errors import InputError
from arith.progress import progress as progress_report
from hpc.store import BlockGroup, StoreDamage

DEFAULT_RETRIES = 2
REDO_ROUNDS = 3
T = TypeVar("T")


class BlockWork(Protocol):
    group: BlockGroup

    def key(self, k: int) -> str: ...

    def __call__(self, k: int) -> tuple[int, dict[str, int]]: ...


def done_counters(work, done) -> dict[str, int]:
    """The progress counters of the blocks already done (`done`: a mask), when the work can tell them
    (an optional `done_counters(done)` method), so the progress line counts what its block count counts."""
    method = getattr(work, "done_counters", None)
    if method is None or not done.any():
        return {}
    return {name: int(value) for name, value in method(done).items()}


def _run_one(k: int, work: BlockWork) -> tuple[int, dict[str, int]]:
    try:
        return work(k)
    except FileNotFoundError:  # zarr's ArrayNotFoundError included
        where = work.group.location
        raise InputError(f"store {where}: not found on this worker (is it on a shared filesystem?)") from None


_CACHE: dict[str, tuple[object, object]] = {}  # per worker process: slot -> (key, value)
_CACHE_LOCK = threading.Lock()


def worker_cached(slot: str, key, build: Callable[[], T]) -> T:
    """`build()`, made once per worker process for `key` and kept in `slot` (one value per slot: a new key
    replaces the old value, so a worker holds one model at a time)."""
    with _CACHE_LOCK:
        held = _CACHE.get(slot)
        if held is not None and held[0] == key:
            return held[1]
        _CACHE.pop(slot, None)
        value = build()
        _CACHE[slot] = (key, value)
        return value


def run_blocks(
    client,
    work: BlockWork,
    blocks: list[int],
    *,
    retries: int = DEFAULT_RETRIES,
    resources: dict | None = None,
    progress: bool = True,
    initial: int = 0,
    total: int | None = None,
    on_block: Callable[[int], None] | None = None,
    max_blocks: int | None = None,
    desc: str = "blocks",
    sums: dict[str, int] | None = None,
) -> int:
    """Run `work` for `blocks` on the cluster behind `client` (None: in this process, one after another);
    returns how many finished in this call. `initial` blocks (with counters `sums`) were done before.

    `on_block(done_in_this_call)` is called after each finished block (tests use it to kill a worker);
    `max_blocks` stops early (cancelling the rest) after that many, like an interrupted driver.
    """
    if not blocks:
        return 0
    if client is None:
        return _run_here(work, blocks, progress, initial, total, on_block, max_blocks, desc, sums)
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    futures = client.map(
        _run_one,
        blocks,
        work=work,
        key=[work.key(k) for k in blocks],
        pure=False,
        retries=retries,
        resources=resources,
    )
    live = {fut.key: fut for fut in futures}
    pending = as_completed(futures, with_results=True, loop=client.loop)
    del futures
    tally = _Tally(
        progress_report(total or len(blocks), desc=desc, unit="blocks", initial=initial, enabled=progress), sums
    )
    try:
        for fut, (_k, counters) in pending:
            live.pop(fut.key, None)
            del fut
            if tally.add(counters, on_block, max_blocks):
                break
    except KilledWorker as exc:
        raise RuntimeError(
            f"a block task kept killing its workers ({exc}); finished blocks are kept in "
            f"{work.group.location}, rerun to continue"
        ) from exc
    finally:
        tally.bar.close()
        if live:
            client.cancel(list(live.values()))
    return tally.finished


def _run_here(work, blocks, progress, initial, total, on_block, max_blocks, desc, sums=None) -> int:
    """The same blocks one after another in this process (no Dask): `--cluster none`, tests."""
    tally = _Tally(
        progress_report(total or len(blocks), desc=desc, unit="blocks", initial=initial, enabled=progress), sums
    )
    with tally.bar:
        for k in blocks:
            if tally.add(_run_one(k, work)[1], on_block, max_blocks):
                break
    return tally.finished


class _Tally:
    """Finished blocks and their summed counters, shown on the progress report."""

    def __init__(self, bar, sums: dict[str, int] | None = None):
        self.bar, self.finished, self.sums = bar, 0, dict(sums or {})

    def add(self, counters: dict[str, int], on_block, max_blocks: int | None) -> bool:
        """Count one finished block; True when `max_blocks` says to stop."""
        self.finished += 1
        for name, value in counters.items():
            self.sums[name] = self.sums.get(name, 0) + int(value)
        # formatted here (tqdm would print a number as 2e+04), and set before the update that prints it
        self.bar.set_postfix(**{name: f"{value:,}" for name, value in self.sums.items()}, refresh=False)
        self.bar.update(1)
        if on_block is not None:
            on_block(self.finished)
        return max_blocks is not None and self.finished >= max_blocks


def run_checked(
    client,
    work: BlockWork,
    reduce: Callable[[], T],
    *,
    retries: int = DEFAULT_RETRIES,
    resources: dict | None = None,
    progress: bool = True,
    on_block: Callable[[int], None] | None = None,
    max_blocks: int | None = None,
    desc: str = "blocks",
) -> T | None:
    """Run the pending blocks of `work.group`, then `reduce()` (which reads the store with its checks).

    Blocks the reduction finds damaged are made pending and redone, up to REDO_ROUNDS times, so the result is
    the true one or an InputError, never one from a hole. None when stopped early by `max_blocks`."""
    group = work.group
    damage: StoreDamage | None = None
    for _round in range(REDO_ROUNDS + 1):
        done = group.done_mask()
        pending = [int(k) for k in (~done).nonzero()[0]]
        finished = run_blocks(
            client,
            work,
            pending,
            retries=retries,
            resources=resources,
            progress=progress,
            initial=group.n_blocks - len(pending),
            total=group.n_blocks,
            on_block=on_block,
            max_blocks=max_blocks,
            desc=desc,
            sums=done_counters(work, done) if pending else None,
        )
        if max_blocks is not None and finished < len(pending):
            return None
        try:
            return reduce()
        except StoreDamage as exc:
            damage = exc
            group.repair(exc.problems)
    raise InputError(f"{damage}; they failed again after being redone {REDO_ROUNDS} times")
