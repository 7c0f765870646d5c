"""`varith verify MODEL.pth --exhaustive | --questions N | --suite NAME` -> `<name>_accuracy.json`.

By default the blocks of the suite run as Dask tasks (hpc.cluster: an embedded LocalCluster, `--scheduler` to
join one, `--cluster slurm --profile FILE.toml` for dask-jobqueue) and land in the Zarr store
`<name>.zarr/verify/<suite>/` (hpc.store), which is then reduced to the JSON. `--cluster none` is the
single-process path (`verify_in_process`), the reference the distributed result equals exactly.

Each task gets only (block index, a small TaskSpec): it generates its questions from (suite, block index),
loads the model once per worker process (cached by path + sha256), scores, and writes its own rows, then its
done flag.
A killed worker's task is simply run again (same bytes); a restarted driver skips done blocks. A worker lost
while the cluster starts is survived too (hpc.cluster: the local cluster is started again, the worker plugin
is given to workers as they start and its broadcast retried elsewhere).

A damaged store never yields a verdict (hpc.store): when the driver opens the store and again in the
reduction, every done block is checked (its chunks exist and decode, its question counts are the block's,
failed <= tested, ...); blocks that fail are redone, with one line on stderr. A corrupt `done` flag counts as
"not done" (the block is redone: the true result, no error). Damaged metadata is one error line asking for
`--fresh`, which repairs it and starts the suite again.

Before any work, `--out`'s folder and the store's folder must be writable (one error line otherwise). The
report goes into `<name>_accuracy.json` under its suite's key, keeping the other suites' reports
(analysis.accuracy). Progress: a bar on a terminal, a plain line per ~10% in a log (arith.progress).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from analysis.accuracy import accuracy_report, format_table, write_report
from arith.errors import InputError
from arith.files import require_writable_dir, sha256_file
from arith.progress import progress as progress_bar
from arith.verify import (
    DEFAULT_BLOCK,
    DEFAULT_CAP,
    ONE_M_SEED,
    BlockCounts,
    ExhaustiveSuite,
    HandpickedSuite,
    RandomSuite,
    TricaseSuite,
    evaluate_block,
    parse_ops,
)
from arith.weights import check_state_dict, load_model, model_info, read_state_dict, trained_ops

HELP = "accuracy test of a model: exhaustive, N random questions, or a curated suite -> <name>_accuracy.json"
DEFAULT_RETRIES = 2
REDO_ROUNDS = 3  # times the driver redoes blocks that fail their checks in the reduction before giving up


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="weights <name>.pth (its <name>_train.json beside it gives the shape)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--exhaustive", action="store_true", help="every operand pair, per operation")
    what.add_argument("--questions", type=int, metavar="N", help="N random questions per operation")
    what.add_argument(
        "--suite", choices=["handpicked", "tricase"], help="a curated suite: handpicked or tricase questions"
    )
    p.add_argument(
        "--ops", help="operations to test, comma-separated from add, sub, mul (default: those the model was trained on)"
    )
    p.add_argument("--seed", type=int, default=ONE_M_SEED, help=f"random-question seed (default {ONE_M_SEED})")
    p.add_argument(
        "--block-size", type=int, default=DEFAULT_BLOCK, help=f"questions per block/task (default {DEFAULT_BLOCK:,})"
    )
    p.add_argument(
        "--enrich",
        default="current",
        choices=["current", "historic", "none"],
        help="enrichment of random questions with hard cases: current (default, 40%% of batches), "
        "historic (60%%, the Jan-2024 subtraction rule) or none",
    )
    p.add_argument(
        "--mode",
        default="reference",
        choices=["reference", "exact"],
        help="failure rule: reference (default: mean answer-token loss > 0.01 and a wrong token, as the "
        "reference) or exact (any wrong answer token)",
    )
    p.add_argument("--device", default="auto", help="auto (each worker's GPU if it has one, else cpu), cpu, cuda")
    p.add_argument(
        "--precision", default="fp32", choices=["fp32", "bf16"], help="scoring precision: fp32 (default) or bf16"
    )
    p.add_argument(
        "--out",
        help="accuracy json (default: <name>_accuracy.json beside the weights); it keeps one report per suite",
    )
    d = p.add_argument_group("where it runs (Dask)")
    d.add_argument(
        "--cluster",
        choices=["local", "slurm", "none"],
        help="local: embedded LocalCluster (default); slurm: dask-jobqueue SLURMCluster from --profile; "
        "none: one process, no Dask, no store",
    )
    d.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="join an existing Dask scheduler")
    d.add_argument("--workers", type=int, help="local worker processes (default: one per GPU, else min(2, cores))")
    d.add_argument("--torch-threads", type=int, help="torch threads per worker process")
    d.add_argument(
        "--profile",
        help="TOML profile for --cluster slurm: a [slurm] table and an optional [dask] table "
        "(example: hpc/profiles/dask_example.toml)",
    )
    d.add_argument("--dry-run", action="store_true", help="print the plan (SLURM: the worker job script), run nothing")
    d.add_argument("--connect-timeout", type=float, default=5.0, help="seconds to reach --scheduler (default 5)")
    d.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_RETRIES,
        help=f"re-runs of a block whose task raised (default {DEFAULT_RETRIES})",
    )
    d.add_argument("--store", help="Zarr store (default: <name>.zarr beside the weights)")
    d.add_argument(
        "--fresh",
        action="store_true",
        help="discard stored blocks of this suite and start again (also repairs damaged store metadata)",
    )
    d.add_argument("--cap", type=int, default=DEFAULT_CAP, help=f"failing examples kept per block ({DEFAULT_CAP})")
    d.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress report (default: a bar on a terminal, a plain line per ~10%% in a log)",
    )


def model_ops(config: dict, name: str) -> tuple[int, ...]:
    """The operations the model was trained on (arith.weights.trained_ops)."""
    return trained_ops(config, name)


def suite_from_args(args, n_digits: int, ops: tuple[int, ...]):
    if args.exhaustive:
        return ExhaustiveSuite(n_digits, ops, block_size=args.block_size)
    if args.questions is not None:
        return RandomSuite(
            n_digits, ops, args.questions, seed=args.seed, block_size=args.block_size, enrich=args.enrich
        )
    if args.suite == "handpicked":
        return HandpickedSuite(n_digits, ops)
    return TricaseSuite(n_digits, ops)


def model_name_of(weights: str | Path) -> str:
    name = Path(weights).name
    return name[:-4] if name.endswith(".pth") else Path(weights).stem


def verify_in_process(
    model, suite, mode: str = "reference", precision: str = "fp32", progress: bool = True, cap: int = DEFAULT_CAP
):
    """Score every block of the suite in this process; the sum of the block counts."""
    total = BlockCounts.empty(suite.n_digits)
    with progress_bar(suite.n_blocks, desc="blocks", unit="block", enabled=progress) as bar:
        for k in range(suite.n_blocks):
            total = total + evaluate_block(model, suite, k, mode=mode, cap=cap, precision=precision)
            bar.set_postfix(questions=f"{int(total.tested.sum()):,}", failed=f"{int(total.failed.sum()):,}")
            bar.update(1)
    return total


# ------------------------------------------------------------------------------------------------ the task


@dataclass(frozen=True)
class TaskSpec:
    """Everything a block task needs besides its index; small (well under a kilobyte pickled)."""

    weights: str  # absolute path, readable from every worker
    weights_sha256: str
    shape: object  # arith.model.ModelShape
    suite: object  # arith.verify.Suite
    store: object  # hpc.store.SuiteStore
    mode: str = "reference"
    precision: str = "fp32"
    cap: int = DEFAULT_CAP
    device: str = "auto"

    @property
    def token(self) -> str:
        """Names this piece of work: same weights, suite, settings and store -> same task keys."""
        text = json.dumps(
            [
                self.weights_sha256,
                self.suite.fingerprint(),
                self.mode,
                self.precision,
                self.cap,
                self.store.location,
            ],
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def key(self, k: int) -> str:
        return f"verify-{self.suite.name}-{self.token}-{k}"


_MODELS: dict[tuple, object] = {}  # per worker process: (path, sha256, device) -> model
_MODELS_LOCK = threading.Lock()


def worker_model(spec: TaskSpec):
    """The model of `spec`, loaded once per process (checked against the driver's sha256) and cached."""
    from arith.device import choose_device

    key = (spec.weights, spec.weights_sha256, spec.device)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            if not Path(spec.weights).is_file():
                raise InputError(f"weights {spec.weights}: no such file on this worker (is it on a shared filesystem?)")
            if sha256_file(spec.weights) != spec.weights_sha256:
                raise InputError(f"weights {spec.weights} changed since this verification started; run it again")
            _MODELS.clear()  # one model per worker at a time
            model = load_model(spec.weights, spec.shape, choose_device(spec.device))
            _MODELS[key] = model
    return model


def verify_block_task(k: int, spec: TaskSpec) -> tuple[int, int, int]:
    """Score block k (questions generated here from (suite, k)), write its rows then its done flag.

    Returns (k, tested, failed). Deterministic: running it again rewrites the same bytes.
    """
    counts = evaluate_block(worker_model(spec), spec.suite, k, mode=spec.mode, cap=spec.cap, precision=spec.precision)
    try:
        spec.store.write_block(k, counts)
    except FileNotFoundError:  # zarr's ArrayNotFoundError included
        raise InputError(
            f"store {spec.store.location}: not found on this worker (is it on a shared filesystem?)"
        ) from None
    return k, int(counts.tested.sum()), int(counts.failed.sum())


# ------------------------------------------------------------------------------------------------ the driver


def run_blocks(
    client,
    spec: TaskSpec,
    blocks: list[int],
    *,
    retries: int = DEFAULT_RETRIES,
    resources: dict | None = None,
    progress: bool = True,
    initial: int = 0,
    total: int | None = None,
    on_block=None,
    max_blocks: int | None = None,
) -> int:
    """Run the block tasks on the cluster behind `client`; returns how many finished in this call.

    `on_block(done_in_this_call)` is called after each finished block (tests use it to kill a worker);
    `max_blocks` stops early (cancelling the rest) after that many, like an interrupted driver.
    """
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    if not blocks:
        return 0
    futures = client.map(
        verify_block_task,
        blocks,
        spec=spec,
        key=[spec.key(k) for k in blocks],
        pure=False,
        retries=retries,
        resources=resources,
    )
    # drop each future once its block is stored: a lost worker then holds no results that Dask would recompute
    live = {fut.key: fut for fut in futures}
    pending = as_completed(futures, with_results=True, loop=client.loop)
    del futures
    finished = tested = failed = 0
    bar = progress_bar(total or len(blocks), desc="blocks", unit="block", initial=initial, enabled=progress)
    try:
        for fut, (_k, t, f) in pending:
            live.pop(fut.key, None)
            del fut
            finished += 1
            tested += t
            failed += f
            # formatted here (tqdm would print a number as 2e+04), and set before the update that prints it
            bar.set_postfix(questions=f"{tested:,}", failed=f"{failed:,}", refresh=False)
            bar.update(1)
            if on_block is not None:
                on_block(finished)
            if max_blocks is not None and finished >= max_blocks:
                break
    except KilledWorker as exc:
        raise RuntimeError(
            f"a block task kept killing its workers ({exc}); finished blocks are kept in "
            f"{spec.store.location}, rerun to continue"
        ) from exc
    finally:
        bar.close()
        if live:
            client.cancel(list(live.values()))
    return finished


def verify_distributed(
    client,
    spec: TaskSpec,
    *,
    retries: int = DEFAULT_RETRIES,
    resources: dict | None = None,
    progress: bool = True,
    on_block=None,
    max_blocks: int | None = None,
) -> BlockCounts | None:
    """Run the blocks of `spec.store` not yet done, reduce the store to counts, consolidate.

    The reduction checks every block again (hpc.store): blocks that fail are made pending and redone, up to
    REDO_ROUNDS times, so a store damaged mid-run still gives the true counts or an InputError, never a count
    from a hole. Returns None when stopped early by `max_blocks` (the store keeps what was done).
    """
    from hpc.store import StoreDamage, consolidate

    store = spec.store
    for _round in range(REDO_ROUNDS + 1):
        pending = store.pending()
        finished = run_blocks(
            client,
            spec,
            pending,
            retries=retries,
            resources=resources,
            progress=progress,
            initial=store.n_blocks - len(pending),
            total=store.n_blocks,
            on_block=on_block,
            max_blocks=max_blocks,
        )
        if max_blocks is not None and finished < len(pending):
            return None
        try:
            counts = store.read_counts()
        except StoreDamage as exc:
            damage = exc
            store.repair(exc.problems)
            continue
        consolidate(store.root)
        return counts
    raise InputError(f"{damage}; they failed again after being redone {REDO_ROUNDS} times")


def _cluster_spec(args, n_tasks: int):
    from hpc.cluster import ClusterSpec

    kind = args.cluster or ("scheduler" if args.scheduler else "local")
    if args.scheduler and args.cluster:
        raise InputError(f"--scheduler joins an existing cluster; it cannot be combined with --cluster {args.cluster}")
    if args.workers is not None and kind != "local":
        raise InputError("--workers sets the embedded local cluster's size (use the profile's [dask] for SLURM)")
    if args.profile and kind != "slurm":
        raise InputError("--profile is read by --cluster slurm")
    return ClusterSpec(
        kind=kind,
        workers=args.workers,
        torch_threads=args.torch_threads,
        scheduler=args.scheduler,
        profile=args.profile,
        connect_timeout=args.connect_timeout,
        n_tasks=n_tasks,
        use_gpus=args.device != "cpu",
        preload=("jobs.verify",),
    )


def _check_device_name(name: str) -> None:
    import torch

    if name == "auto":
        return
    try:
        torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}") from None


def _install_sigterm() -> None:
    """SIGTERM (scancel, walltime) ends the driver like Ctrl-C: clusters close, finished blocks stay."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _out_path(args, name: str) -> Path:
    return Path(args.out) if args.out else Path(args.model).with_name(f"{name}_accuracy.json")


def _store_root(args, name: str) -> Path:
    from hpc.store import default_store_path

    return Path(args.store).resolve() if args.store else default_store_path(args.model, name)


def _check_writable(args, name: str) -> None:
    """Refuse an --out or store folder that cannot be written now, before any work (one InputError line)."""
    if args.dry_run:
        return  # writes nothing
    require_writable_dir(_out_path(args, name).absolute().parent, "--out folder")
    if args.cluster != "none":
        root = _store_root(args, name)
        if root.exists() and not root.is_dir():
            raise InputError(f"store {root}: exists and is not a directory")
        require_writable_dir(root.parent, "--store folder")
        if root.is_dir():
            require_writable_dir(root, "--store")


def run(args: argparse.Namespace) -> int:
    name = model_name_of(args.model)
    if Path(args.model).is_file():  # (missing weights: model_info's own one line, and no folder made)
        _check_writable(args, name)  # before any work: an unwritable --out or store would lose it all
    shape, n_digits, config = model_info(args.model)
    ops = parse_ops(args.ops) if args.ops else model_ops(config, name)
    if args.block_size < 1:
        raise InputError("--block-size must be positive")
    suite = suite_from_args(args, n_digits, ops)
    out = _out_path(args, name)

    if args.cluster == "none":
        if args.scheduler or args.profile or args.dry_run:
            raise InputError("--cluster none runs in this process: no --scheduler, --profile or --dry-run")
        from arith.device import choose_device

        model = load_model(args.model, shape, choose_device(args.device))
        counts = verify_in_process(model, suite, args.mode, args.precision, progress=not args.no_progress, cap=args.cap)
    else:
        counts = _run_dask(args, name, shape, suite)
        if counts is None:
            return 0
    report = accuracy_report(counts, suite, name, extra={"weights_sha256": sha256_file(args.model), "mode": args.mode})
    write_report(out, report)
    print(format_table(report))
    print(f"wrote {out} ({suite.name})")
    return 0


def _run_dask(args, name: str, shape, suite) -> BlockCounts | None:
    from hpc.cluster import job_script, open_cluster
    from hpc.store import StoreDamage, consolidate, make_fingerprint, prepare_suite

    if args.retries < 0:
        raise InputError("--retries must be >= 0")
    if args.cap < 0:
        raise InputError("--cap must be >= 0")
    _check_device_name(args.device)
    # missing weights, weights of another shape: one line, before anything starts
    check_state_dict(read_state_dict(args.model), shape, str(args.model))
    sha = sha256_file(args.model)
    cluster_spec = _cluster_spec(args, suite.n_blocks)
    if cluster_spec.kind == "local":
        from arith.device import choose_device

        choose_device(args.device)  # the embedded workers share this machine's devices
    store_root = _store_root(args, name)

    if args.dry_run:
        print(f"{suite.name}: {suite.n_blocks} blocks -> {store_root}/verify/{suite.name}")
        if cluster_spec.kind == "slurm":
            from hpc.cluster import describe_slurm_plan

            print(describe_slurm_plan(cluster_spec))
            print(job_script(cluster_spec), end="")
        else:
            print(f"cluster: {cluster_spec.kind}; nothing was started or written (--dry-run)")
        return None

    fingerprint = make_fingerprint(sha, suite.fingerprint(), args.mode, args.precision, args.cap)
    # damaged metadata: one InputError line (or, with --fresh, repaired); done blocks that fail their
    # checks are made pending again, with one line on stderr
    store = prepare_suite(
        store_root, suite.name, fingerprint, suite.n_blocks, suite.n_digits, args.cap, args.fresh, suite=suite
    )
    spec = TaskSpec(
        weights=str(Path(args.model).resolve()),
        weights_sha256=sha,
        shape=shape,
        suite=suite,
        store=store,
        mode=args.mode,
        precision=args.precision,
        cap=args.cap,
        device=args.device,
    )
    pending = store.pending()
    print(f"{suite.name}: {suite.n_blocks} blocks, {suite.n_blocks - len(pending)} already done in {store.location}")
    _install_sigterm()
    if not pending:
        try:
            counts = store.read_counts()
        except StoreDamage as exc:  # damaged since prepare_suite checked it: redo those blocks on a cluster
            store.repair(exc.problems)
        else:
            consolidate(store.root)
            return counts
    # distributed's sync() logs a spurious callback error through tornado when Ctrl-C lands mid-call
    logging.getLogger("tornado.application").setLevel(logging.CRITICAL)
    with open_cluster(cluster_spec) as handle:
        print(handle.description)
        print(f"dask dashboard: {handle.dashboard_text}", flush=True)
        return verify_distributed(
            handle.client,
            spec,
            retries=args.retries,
            resources=handle.task_resources,
            progress=not args.no_progress,
        )
