"""`varith train NAME`: train one model (one process here; DDP when started with torch.distributed env vars)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from arith.errors import InputError
from arith.files import require_writable_dir
from arith.names import parse_pair, resolve_pair
from arith.train import TrainConfig, tunable_fields
from hpc.rundir import RunDir

HELP = "train a model named by the grammar (e.g. add_d6_l2_h3_t15K_s372001, or 'ins1_mix_...,add_...')"


def add_train_flags(group, with_defaults: bool = True) -> None:
    """One flag per tunable TrainConfig field (`--d-model`, `--lr`, ...), help and choices from the field.
    `with_defaults=False` (sweeps): unset flags stay None, so a sweep file's [train] table can fill them."""
    for f in tunable_fields():
        flag = "--" + f.name.replace("_", "-")
        text = f.metadata["help"]
        if f.type in (bool, "bool"):
            group.add_argument(flag, action="store_true", default=None if not with_defaults else False, help=text)
            continue
        typ = {"int": int, "float": float, "str": str}.get(f.type, type(f.default))
        default = f.default if with_defaults else None
        suffix = f" (default {f.default})" if with_defaults else f" (default {f.default} unless the sweep file sets it)"
        group.add_argument(flag, type=typ, default=default, choices=f.metadata["choices"], help=text + suffix)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="model name, or 'main_name,insert_name' for ins* models")
    p.add_argument("--out", default="runs", help="runs directory; the run goes to OUT/<name>/ (default: runs)")
    p.add_argument("--steps", type=int, help="override the name's step count (the run is renamed to match)")
    p.add_argument("--seed", type=int, help="override the name's 6-digit seed (the run is renamed to match)")
    p.add_argument("--insert", help="weights of the addition model for ins* (default: OUT/<insert>/<insert>.pth)")
    add_train_flags(p)
    p.add_argument(
        "--resume",
        dest="resume",
        action="store_true",
        default=True,
        help="continue from the newest checkpoint (default)",
    )
    p.add_argument("--no-resume", dest="resume", action="store_false", help="start from scratch")
    p.add_argument("--stop-after", type=int, help="stop (with a checkpoint) after this many steps in total")
    p.add_argument("--no-progress", action="store_true", help="no progress report")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    main, insert = parse_pair(args.name)
    if args.steps is not None:
        main = main.with_steps(args.steps)
    if args.seed is not None:
        main = main.with_seed(args.seed)
    insert_weights = args.insert
    if main.insert_mode and insert_weights is None:
        insert = resolve_pair(main, insert)
        insert_weights = str(RunDir.of(args.out, insert.format()).weights)
    if insert_weights is not None and not Path(insert_weights).is_file():
        raise InputError(f"insert weights {insert_weights}: no such file (train the addition model first)")
    settings = {f.name: getattr(args, f.name) for f in tunable_fields()}
    return TrainConfig(name=main.format(), insert_weights=insert_weights, **settings)


def run(args: argparse.Namespace) -> int:
    from hpc import markers, runs

    cfg = config_from_args(args)
    require_writable_dir(args.out, "--out")  # before any work: an unwritable folder would lose the run
    run_dir = RunDir.of(args.out, cfg.name)
    out = run_dir.path
    rank0 = int(os.environ.get("RANK", "0")) == 0  # under DDP only rank 0 keeps the run's marker
    if rank0:  # `varith status` shows runs trained directly too
        markers.mark_running(out, None, "cli", None, None)
    try:
        result = runs.train_run(
            run_dir, cfg, resume=args.resume, progress=not args.no_progress, stop_after=args.stop_after
        )
        if rank0 and result.complete:
            runs.finish_run(out, result, cfg)
    except BaseException as exc:
        if rank0:
            runs.fail_run(out, "interrupted" if isinstance(exc, KeyboardInterrupt) else exc)
        raise
    if not result.complete:
        if rank0:
            runs.fail_run(out, f"stopped at step {result.steps_done} (--stop-after); run again to continue")
        print(
            f"{cfg.name}: stopped after {result.steps_done} steps "
            f"(checkpoint in {run_dir.checkpoints}); run again to continue"
        )
        return 0
    print(f"{cfg.name}: {result.steps_done} steps, final loss {result.final_loss:.3g}")
    print(f"  weights: {result.weights}\n  train json: {result.train_json}")
    return 0
