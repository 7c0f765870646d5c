"""Verification runs: the suite's blocks in this process, or farmed over Dask into the Zarr store.

Each Dask task gets only (block index, a small `VerifyWork`): it generates its questions from (suite, block
index), loads the model once per worker process (`jobs.stages.template.worker_model`), scores, and writes its own rows,
then its done flag (`jobs.stages.verify_store`). A killed worker's task is simply run again (same bytes); a restarted
driver skips done blocks; the reduction checks every block and redoes damaged ones (`hpc.blocks.run_checked`).
A worker lost while the cluster starts is survived too (`hpc.cluster`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from arith.device import resolve_precision
from arith.errors import InputError, plural
from arith.files import sha256_file
from arith.model import ModelShape
from arith.progress import progress as progress_report
from arith.scoring import PrecisionChoice
from arith.verify import DEFAULT_CAP, BlockCounts, Suite, evaluate_block
from hpc.blocks import DEFAULT_RETRIES, run_checked
from hpc.cluster import ClusterHandle
from hpc.store import StoreDamage, consolidate, group_lock
from jobs.stages.template import StageSettings, worker_model
from jobs.stages.verify_store import VERIFY_GROUP, SuiteStore, make_fingerprint, prepare_suite, suite_block


@dataclass(frozen=True)
class VerifyWork:
    """Everything a verification block task needs besides its index; small (well under a kilobyte pickled)."""

    weights: str  # absolute path, readable from every worker
    weights_sha256: str
    shape: ModelShape
    suite: Suite
    group: SuiteStore
    mode: str = "reference"
    precision: str = "auto"  # auto: bf16 where the worker's device has it, else fp32 (same verdicts either way)
    cap: int = DEFAULT_CAP
    device: str = "auto"

    @property
    def token(self) -> str:
        """Names this piece of work: same weights, suite, settings and store -> same task keys."""
        text = json.dumps(
            [self.weights_sha256, self.suite.fingerprint(), self.mode, self.precision, self.cap, self.group.location],
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def key(self, k: int) -> str:
        return f"verify-{self.suite.name}-{self.token}-{k}"

    def done_counters(self, done) -> dict[str, int]:
        """The progress counters of the blocks (rows) already done, from the store (they were checked)."""
        tested, _bad = self.group._read("tested")
        failed, _bad = self.group._read("failed")
        return {"questions": int(tested[done].sum()), "failed": int(failed[done].sum())}

    def choose_precision(self):
        """What `precision` resolves to on a worker (arith.verify.choose_precision: auto probes bf16 there)."""
        from arith.verify import choose_precision

        model = worker_model(self.weights, self.weights_sha256, self.shape, self.device)
        return choose_precision(model, self.suite, self.mode, self.precision)

    def __call__(self, k: int) -> tuple[int, dict[str, int]]:
        """Score the block of store row k (questions generated here from (suite, its block index)), write its
        rows then its done flag. Deterministic: running it again rewrites the same bytes."""
        model = worker_model(self.weights, self.weights_sha256, self.shape, self.device)
        precision = resolve_precision(self.precision, next(model.parameters()).device)
        block = suite_block(self.suite, k)
        counts = evaluate_block(model, self.suite, block, mode=self.mode, cap=self.cap, precision=precision)
        self.group.write_block(k, counts)
        return k, {"questions": int(counts.tested.sum()), "failed": int(counts.failed.sum())}


def verify_in_process(
    model, suite: Suite, mode: str = "reference", precision: str = "auto", progress: bool = True, cap: int = DEFAULT_CAP
) -> BlockCounts:
    """Score every block of the suite in this process; the sum of the block counts. `precision` auto, bf16 or
    fp32 (arith.verify.choose_precision, once for the run): the verdicts are fp32's whichever (arith.scoring)."""
    from arith.verify import choose_precision

    choice = choose_precision(model, suite, mode, precision)
    precision = choice.precision
    total = BlockCounts.empty(suite.n_digits)
    with progress_report(suite.n_blocks, desc="blocks", unit="blocks", enabled=progress) as bar:
        for k in range(suite.n_blocks):
            total = total + evaluate_block(model, suite, k, mode=mode, cap=cap, precision=precision)
            bar.set_postfix(questions=f"{int(total.tested.sum()):,}", failed=f"{int(total.failed.sum()):,}")
            bar.update(1)
    total.choice = choice
    return total


def _reduce(group: SuiteStore) -> BlockCounts:
    counts = group.read_counts()
    consolidate(group.root)
    return counts


def verify_distributed(
    client,
    work: VerifyWork,
    *,
    retries: int = DEFAULT_RETRIES,
    resources: dict | None = None,
    progress: bool = True,
    on_block=None,
    max_blocks: int | None = None,
) -> BlockCounts | None:
    """Run the blocks of `work.group` not yet done and reduce the store to counts (checked; damaged blocks
    are redone). None when stopped early by `max_blocks` (the store keeps what was done)."""
    return run_checked(
        client,
        work,
        lambda: _reduce(work.group),
        retries=retries,
        resources=resources,
        progress=progress,
        on_block=on_block,
        max_blocks=max_blocks,
    )


@dataclass(frozen=True)
class VerifySettings(StageSettings):
    """Verification's own settings besides those every stage shares."""

    mode: str = "reference"
    precision: str = "auto"
    cap: int = DEFAULT_CAP


@dataclass(frozen=True)
class VerifyJob:
    """One model's suite: its weights, shape, the suite and the store it lands in."""

    weights: Path
    shape: ModelShape
    suite: Suite
    store_root: Path
    group: str  # the suite's group under verify/ (verify_store.group_name)


def plan_line(suite, n_done: int, location: str) -> str:
    """'random: 12 blocks (5 already done), 240,000 questions -> STORE': this run's blocks, of which were done
    by earlier runs, and this run's questions."""
    questions = int(expected_questions(suite))
    return (
        f"{suite.name}: {plural(suite.n_blocks, 'block')} ({n_done:,} already done), "
        f"{plural(questions, 'question')} -> {location}"
    )


def expected_questions(suite) -> int:
    from jobs.stages.verify_store import expected_sizes

    return int(expected_sizes(suite).sum())


CHOICE_ATTRIBUTE = "precision_choice"  # the last scoring run's PrecisionChoice, for a run that reuses every block


def _stored_choice(group, requested: str) -> PrecisionChoice:
    """The precision the store's blocks were last scored in, for a run that found every block done."""
    stored = group.attributes().get(CHOICE_ATTRIBUTE) or {}
    reason = "every block was scored by an earlier run"
    if stored.get("precision") in ("fp32", "bf16"):
        return PrecisionChoice(stored["precision"], f"{reason} ({stored.get('reason', '')})", requested)
    return PrecisionChoice(requested if requested != "auto" else "unknown", f"{reason}; not recorded", requested)


class VerifyStage:
    """Verification as a stage of the template (jobs.stages.template): blocks of questions scored into
    `verify/<suite>` of the store, reduced to counts per answer digit and class."""

    name = "verify"
    work = (VerifyWork,)

    def __init__(self, settings: VerifySettings):
        self.settings = settings

    def tasks(self, job: VerifyJob) -> int:
        return job.suite.n_blocks

    def _group(self, job: VerifyJob) -> tuple[str, SuiteStore]:
        s, suite = self.settings, job.suite
        sha = sha256_file(job.weights)
        fingerprint = make_fingerprint(sha, suite.fingerprint(), s.mode, s.precision, s.cap)
        # damaged metadata: one InputError line (or, with --fresh, repaired); done blocks that fail their checks
        # are made pending again, with one line on stderr
        group = prepare_suite(
            job.store_root, job.group, fingerprint, suite.n_blocks, suite.n_digits, s.cap, s.fresh, suite=suite
        )
        return sha, group

    def run(self, job: VerifyJob, cluster: ClusterHandle) -> BlockCounts:
        """Hold the suite's group of the store (one writer), prepare (or reopen and check) it, run what is
        pending on the cluster, reduce with checks."""
        with group_lock(job.store_root, f"{VERIFY_GROUP}/{job.group}", wait=self.settings.wait):
            return self._run_locked(job, cluster)

    def reduce(self, job: VerifyJob) -> BlockCounts:
        """The counts of a store whose blocks are all done (checked), computing nothing."""
        with group_lock(job.store_root, f"{VERIFY_GROUP}/{job.group}", wait=self.settings.wait):
            _sha, group = self._group(job)
            if group.pending():
                raise InputError(f"store {group.location}: {plural(len(group.pending()), 'block')} not done yet")
            counts = _reduce(group)
            counts.choice = _stored_choice(group, self.settings.precision)
            return counts

    def _run_locked(self, job: VerifyJob, cluster: ClusterHandle) -> BlockCounts:
        s, suite = self.settings, job.suite
        sha, group = self._group(job)
        work = VerifyWork(
            str(Path(job.weights).resolve()), sha, job.shape, suite, group, s.mode, s.precision, s.cap, s.device
        )
        pending = group.pending()
        print(plan_line(suite, suite.n_blocks - len(pending), group.location), flush=True)
        if not pending:
            try:
                counts = _reduce(group)
                counts.choice = _stored_choice(group, s.precision)
                return counts
            except StoreDamage as exc:  # damaged since it was checked: redo those blocks
                group.repair(exc.problems)
        # the precision is decided once, on a worker's device, before any block (the fingerprint keeps the
        # precision asked for, so a restarted run reuses the store whatever auto chooses)
        choice = cluster.call(work.choose_precision, retries=s.retries)
        work = dataclasses.replace(work, precision=choice.precision)
        group.set_attribute(CHOICE_ATTRIBUTE, choice.as_dict())
        counts = verify_distributed(
            cluster.client, work, retries=s.retries, resources=cluster.task_resources, progress=s.progress
        )
        if counts is None:  # pragma: no cover - only with max_blocks
            raise InputError("verification stopped early")
        counts.choice = choice
        return counts
