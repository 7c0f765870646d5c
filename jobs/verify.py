"""`varith verify MODEL.pth --exhaustive | --questions N | --suite NAME`: accuracy tests -> `<name>_accuracy.json`."""

from __future__ import annotations

import argparse
from pathlib import Path

from analysis.accuracy import accuracy_report, format_table
from arith.device import choose_device
from arith.errors import InputError
from arith.files import atomic_write_json, sha256_file
from arith.verify import (
    DEFAULT_BLOCK,
    ONE_M_SEED,
    BlockCounts,
    ExhaustiveSuite,
    HandpickedSuite,
    RandomSuite,
    TricaseSuite,
    evaluate_block,
    parse_ops,
)
from arith.vocab import ADD, MUL, SUB
from arith.weights import load_model, model_info

HELP = "accuracy test of a model: exhaustive, N random questions, or a curated suite -> <name>_accuracy.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="weights <name>.pth")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--exhaustive", action="store_true", help="every operand pair, per operation")
    what.add_argument("--questions", type=int, metavar="N", help="N random questions per operation")
    what.add_argument("--suite", choices=["handpicked", "tricase"], help="a curated suite")
    p.add_argument("--ops", help="operations to test, e.g. add,sub (default: those the model was trained on)")
    p.add_argument("--seed", type=int, default=ONE_M_SEED, help=f"random-question seed (default {ONE_M_SEED})")
    p.add_argument("--block-size", type=int, default=DEFAULT_BLOCK, help="questions per block/task")
    p.add_argument("--enrich", default="current", choices=["current", "historic", "none"])
    p.add_argument("--mode", default="reference", choices=["reference", "exact"], help="failure rule")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--out", help="accuracy json path (default: <name>_accuracy.json beside the weights)")


def default_ops(config: dict) -> tuple[int, ...]:
    ops = []
    if config.get("perc_add", 100) > 0:
        ops.append(ADD)
    if config.get("perc_sub", 0) > 0:
        ops.append(SUB)
    if config.get("perc_mult", 0) > 0 and not ops:
        ops.append(MUL)
    return tuple(ops) or (ADD,)


def model_ops(config: dict, name: str) -> tuple[int, ...]:
    if "perc_add" in config:
        return default_ops(config)
    from arith.names import parse_name

    mn = parse_name(name)
    return default_ops({"perc_add": mn.perc_add, "perc_sub": mn.perc_sub, "perc_mult": mn.perc_mult})


def suite_from_args(args, n_digits: int, ops: tuple[int, ...]):
    if args.exhaustive:
        return ExhaustiveSuite(n_digits, ops, block_size=args.block_size)
    if args.questions is not None:
        return RandomSuite(n_digits, ops, args.questions, seed=args.seed, block_size=args.block_size, enrich=args.enrich)
    if args.suite == "handpicked":
        return HandpickedSuite(n_digits, ops)
    return TricaseSuite(n_digits, ops)


def model_name_of(weights: str | Path) -> str:
    name = Path(weights).name
    return name[:-4] if name.endswith(".pth") else Path(weights).stem


def verify_in_process(model, suite, mode: str = "reference", precision: str = "fp32", progress: bool = True):
    """Score every block of the suite in this process; the sum of the block counts."""
    from tqdm import tqdm

    total = BlockCounts.empty(suite.n_digits)
    for k in tqdm(range(suite.n_blocks), desc="blocks", unit="block", disable=not progress):
        total = total + evaluate_block(model, suite, k, mode=mode, precision=precision)
    return total


def run(args: argparse.Namespace) -> int:
    shape, n_digits, config = model_info(args.model)
    name = model_name_of(args.model)
    ops = parse_ops(args.ops) if args.ops else model_ops(config, name)
    if args.block_size < 1:
        raise InputError("--block-size must be positive")
    suite = suite_from_args(args, n_digits, ops)
    model = load_model(args.model, shape, choose_device(args.device))
    counts = verify_in_process(model, suite, args.mode, args.precision)
    report = accuracy_report(
        counts, suite, name, extra={"weights_sha256": sha256_file(args.model), "mode": args.mode}
    )
    out = Path(args.out) if args.out else Path(args.model).with_name(f"{name}_accuracy.json")
    atomic_write_json(out, report, indent=1)
    print(format_table(report))
    print(f"wrote {out}")
    return 0
