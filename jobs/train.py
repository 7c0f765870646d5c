"""`varith train NAME`: train one model (one process here; DDP when started with torch.distributed env vars)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from arith.device import PRECISIONS
from arith.errors import InputError
from arith.files import require_writable_dir
from arith.names import parse_name, parse_pair
from arith.questions import ENRICH_CURRENT, ENRICH_RULES
from arith.train import TrainConfig, train

HELP = "train a model named by the grammar (e.g. add_d6_l2_h3_t15K_s372001, or 'ins1_mix_...,add_...')"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="model name, or 'main_name,insert_name' for ins* models")
    p.add_argument("--out", default="runs", help="runs directory; the run goes to OUT/<name>/ (default: runs)")
    p.add_argument("--d-model", type=int, default=510, help="residual width (default 510, as published)")
    p.add_argument("--d-head", type=int, default=170, help="width of each attention head (default 170)")
    p.add_argument("--d-mlp-multiplier", type=int, default=4, help="MLP width as a multiple of d_model (default 4)")
    p.add_argument("--steps", type=int, help="override the name's step count (the run is renamed to match)")
    p.add_argument("--seed", type=int, help="override the name's 6-digit seed (the run is renamed to match)")
    p.add_argument("--batch-size", type=int, default=64, help="global batch (split across DDP ranks)")
    p.add_argument("--lr", type=float, default=8e-5, help="peak learning rate (default 8e-5)")
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay (default 0.1)")
    p.add_argument(
        "--enrich",
        default=ENRICH_CURRENT,
        choices=ENRICH_RULES,
        help="training-batch enrichment: current (40%% of batches), historic (60%%) or none (default current)",
    )
    p.add_argument("--insert", help="weights of the addition model for ins* (default: OUT/<insert>/<insert>.pth)")
    p.add_argument(
        "--fixes",
        action="store_true",
        help="the corrected ins*/GrokFast behaviour instead of the reference's (README, 'Fidelity')",
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="fp32 (default) or bf16 autocast (GPUs, and CPUs with bf16 instructions)",
    )
    p.add_argument("--checkpoint-every", type=int, default=1000, help="steps between accelerate checkpoints")
    p.add_argument("--log-every", type=int, default=100, help="steps between loss updates of the progress report")
    p.add_argument(
        "--resume",
        dest="resume",
        action="store_true",
        default=True,
        help="continue from the newest checkpoint (default)",
    )
    p.add_argument("--no-resume", dest="resume", action="store_false", help="start from scratch")
    p.add_argument("--stop-after", type=int, help="stop (with a checkpoint) after this many steps in total")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    main, insert = parse_pair(args.name) if "," in args.name else (parse_name(args.name), None)
    if args.steps is not None:
        main = main.with_steps(args.steps)
    if args.seed is not None:
        main = main.with_seed(args.seed)
    insert_weights = args.insert
    if main.insert_mode and insert_weights is None:
        if insert is None:  # the reference's defaults: 2 layers, 3 heads, 15K steps, seed 372001
            insert = parse_name(f"add_d{main.n_digits}_l2_h3_t15K_s372001")
        insert_weights = str(Path(args.out) / insert.format() / f"{insert.format()}.pth")
    if insert_weights is not None and not Path(insert_weights).is_file():
        raise InputError(f"insert weights {insert_weights}: no such file (train the addition model first)")
    return TrainConfig(
        name=main.format(),
        d_model=args.d_model,
        d_head=args.d_head,
        d_mlp_multiplier=args.d_mlp_multiplier,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        enrich=args.enrich,
        insert_weights=insert_weights,
        fixes=args.fixes,
        precision=args.precision,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
    )


def run(args: argparse.Namespace) -> int:
    from hpc import markers, runs

    cfg = config_from_args(args)
    require_writable_dir(args.out, "--out")  # before any work: an unwritable folder would lose the run
    out = Path(args.out) / cfg.name
    rank0 = int(os.environ.get("RANK", "0")) == 0  # under DDP only rank 0 keeps the run's marker
    if rank0:  # `varith status` shows runs trained directly too
        markers.mark_running(out, None, "cli", None, None)
    try:
        result = train(cfg, out, resume=args.resume, progress=not args.no_progress, stop_after=args.stop_after)
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
            f"(checkpoint in {out / 'checkpoints'}); run again to continue"
        )
        return 0
    print(f"{cfg.name}: {result.steps_done} steps, final loss {result.final_loss:.3g}")
    print(f"  weights: {result.weights}\n  train json: {result.train_json}")
    return 0
