"""`varith verify MODEL.pth --exhaustive | --questions N | --suite NAME` -> `<name>_accuracy.json`.

By default the suite's blocks are farmed over Dask into the Zarr store `<name>.zarr/verify/<suite>/` and the store
is reduced, with its checks, to the JSON (jobs.stages.verify, a stage of jobs.stages.template); `--cluster none`
runs the same blocks in this process, into the same store. The report goes into `<name>_accuracy.json` under its
suite's key, keeping the other suites' reports (analysis.accuracy). Before any work, `--out` must be an accuracy
file or not exist (anything else is left as it is), its folder and the store's folder must be writable (one error
line otherwise). Operations the model was not trained on (`--ops`) get predict's warning.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.accuracy import accuracy_report, existing_reports, format_table, write_report
from arith.device import VERIFY_PRECISIONS
from arith.errors import InputError, plural
from arith.files import require_writable_dir, sha256_file
from arith.names import beside_weights, name_of_weights
from arith.questions import ENRICH_RULES
from arith.verify import (
    DEFAULT_BLOCK,
    DEFAULT_CAP,
    ONE_M_SEED,
    ExhaustiveSuite,
    GeneratedSuite,
    HandpickedSuite,
    RandomSuite,
    TricaseSuite,
    parse_ops,
)
from arith.weights import check_state_dict, model_info, read_state_dict, trained_ops
from jobs.common import add_cluster_arguments, cluster_spec, install_sigterm, print_dry_run, whole_number

HELP = "accuracy test of a model: exhaustive, N random questions, or a curated suite -> <name>_accuracy.json"

MAX_QUESTIONS = 10**12  # per operation
MAX_SEED = 2**63 - 1
MAX_BLOCK = 10_000_000  # questions per block (a task holds one block's questions and answers in memory)
MAX_CAP = 100_000  # failing examples kept per block


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="weights <name>.pth (its <name>_train.json beside it gives the shape)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--exhaustive", action="store_true", help="every operand pair, per operation")
    what.add_argument(
        "--questions",
        type=whole_number(1, MAX_QUESTIONS),
        metavar="N",
        help="N random questions per operation: the first N of the seed's stream (a store reuses the blocks of "
        "another N of the same seed)",
    )
    what.add_argument(
        "--suite",
        choices=["handpicked", "generated", "tricase"],
        help="a curated suite: handpicked (the reference's literal lists), generated (20 per complexity class, "
        "by rule) or tricase questions",
    )
    p.add_argument(
        "--ops", help="operations to test, comma-separated from add, sub, mul (default: those the model was trained on)"
    )
    p.add_argument(
        "--seed",
        type=whole_number(0, MAX_SEED),
        default=ONE_M_SEED,
        help=f"random-question seed, 0 or more (default {ONE_M_SEED})",
    )
    p.add_argument(
        "--block-size",
        type=whole_number(1, MAX_BLOCK),
        default=DEFAULT_BLOCK,
        help=f"questions per block/task (default {DEFAULT_BLOCK:,})",
    )
    p.add_argument(
        "--enrich",
        default="current",
        choices=ENRICH_RULES,
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
    p.add_argument(
        "--precision",
        default="auto",
        choices=VERIFY_PRECISIONS,
        help="scoring precision: auto (default: bf16 where the device has it natively and a probe of the first "
        "block says it pays, else fp32), bf16 or fp32; bf16 re-scores in fp32 every question whose verdict could "
        "differ, so the verdicts are fp32's",
    )
    p.add_argument(
        "--out",
        help="accuracy json (default: <name>_accuracy.json beside the weights); it keeps one report per suite",
    )
    add_cluster_arguments(p)
    p.add_argument(
        "--cap",
        type=whole_number(0, MAX_CAP),
        default=DEFAULT_CAP,
        help=f"failing examples kept per block (default {DEFAULT_CAP})",
    )


def suite_from_args(args, n_digits: int, ops: tuple[int, ...]):
    if args.block_size < 1:
        raise InputError("--block-size must be positive")
    if args.exhaustive:
        return ExhaustiveSuite(n_digits, ops, block_size=args.block_size)
    if args.questions is not None:
        return RandomSuite(
            n_digits, ops, args.questions, seed=args.seed, block_size=args.block_size, enrich=args.enrich
        )
    if args.suite == "handpicked":
        return HandpickedSuite(n_digits, ops)
    if args.suite == "generated":
        return GeneratedSuite(n_digits, ops)
    return TricaseSuite(n_digits, ops)


def _paths(args) -> tuple[Path, Path]:
    """(accuracy json, store root)."""
    out = Path(args.out) if args.out else beside_weights(args.model, "accuracy")
    store = Path(args.store) if args.store else beside_weights(args.model, "store")
    return out, store.resolve()


KEEP_OUT = "move it away or choose another --out"


def _check_writable(args, out: Path, store: Path) -> None:
    """Refuse, before any work (one InputError line): an --out that is not an accuracy file (a text file, a
    folder, a device; it is left as it is), and an --out or store folder that cannot be written now."""
    existing_reports(out, KEEP_OUT)
    require_writable_dir(out.absolute().parent, "--out folder")
    if store.exists() and not store.is_dir():
        raise InputError(f"store {store}: exists and is not a directory")
    require_writable_dir(store.parent, "--store folder")
    if store.is_dir():
        require_writable_dir(store, "--store")


def _warn_untrained(name: str, n_digits: int, ops: tuple[int, ...], trained: tuple[int, ...]) -> None:
    """predict's warning (arith.vocab.untrained_op_warnings) for each --ops operation the model never learned."""
    import numpy as np

    from arith.vocab import untrained_op_warnings

    digits = np.arange(1, 2 * n_digits + 1) % 10  # an example question per operation: 12+34, 123+456, ...
    x = np.tile(digits[:n_digits], (len(ops), 1))
    y = np.tile(digits[n_digits:], (len(ops), 1))
    for _op, warning in untrained_op_warnings(x, y, np.array(ops, dtype=np.int64), trained, name):
        print(f"varith verify: warning: {warning}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    name = name_of_weights(args.model)
    out, store = _paths(args)
    if Path(args.model).is_file() and not args.dry_run:  # (missing weights: model_info's own line, no folder made)
        _check_writable(args, out, store)  # before any work: an unwritable --out or store would lose it all
    shape, n_digits, config = model_info(args.model)
    trained = trained_ops(config, name)
    if args.ops is not None and not args.ops.strip():
        raise InputError("--ops is empty: name operations from add, sub, mul, comma-separated (or leave it out)")
    ops = parse_ops(args.ops) if args.ops is not None else trained
    suite = suite_from_args(args, n_digits, ops)
    if args.cap < 0:
        raise InputError("--cap must be >= 0")
    _warn_untrained(name, n_digits, ops, trained)
    from jobs.stages.template import preload, run_stage
    from jobs.stages.verify import VerifyJob, VerifySettings, VerifyStage
    from jobs.stages.verify_store import group_name

    settings = VerifySettings(
        device=args.device, retries=args.retries, progress=not args.no_progress, fresh=args.fresh,
        wait=not args.no_wait, mode=args.mode, precision=args.precision, cap=args.cap,
    )  # fmt: skip
    stage = VerifyStage(settings)
    job = VerifyJob(Path(args.model), shape, suite, store, group_name(suite, trained))
    spec = cluster_spec(args, stage.tasks(job), preload=preload(stage))
    # missing weights, weights of another shape: one line, before anything starts
    check_state_dict(read_state_dict(args.model), shape, str(args.model))
    if args.dry_run:
        print_dry_run(spec, f"{suite.name}: {plural(suite.n_blocks, 'block')} -> {store}/verify/{job.group}")
        return 0
    install_sigterm()
    ((_job, counts),) = run_stage(stage, [job], spec)
    report = accuracy_report(counts, suite, name, extra={"weights_sha256": sha256_file(args.model), "mode": args.mode})
    write_report(out, report, KEEP_OUT)
    print(format_table(report))
    print(f"wrote {out} ({suite.name})")
    return 0
