"""`varith train NAME`: train one model (one process here; DDP when started with torch.distributed env vars)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from arith.errors import InputError
from arith.files import require_writable_dir
from arith.names import parse_pair, resolve_pair
from arith.train import TrainConfig, tunable_fields
from jobs.common import at_least_one
from jobs.runs.rundir import RunDir

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
    p.add_argument("--steps", type=at_least_one, help="override the name's step count (the run is renamed to match)")
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
    p.add_argument(
        "--no-resume", dest="resume", action="store_false", help="start from scratch (drops the run's checkpoints)"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="retrain a finished run from scratch (its accuracy, behaviour, maths and .zarr files become stale)",
    )
    p.add_argument("--stop-after", type=at_least_one, help="stop (with a checkpoint) after this many steps in total")
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


def _existing_run(run_dir: RunDir, cfg: TrainConfig, args: argparse.Namespace) -> bool:
    """What the run folder already holds, against `cfg` (jobs.runs.lifecycle.recorded_settings): True when it is
    finished with the same settings (nothing to do); InputError when it holds other settings and no flag says to drop
    them."""
    from jobs.runs import lifecycle as runs
    from jobs.runs import markers

    rec = runs.recorded_settings(run_dir, cfg)
    if args.force:
        return False
    if rec.differences and rec.finished:
        raise InputError(
            f"{rec.other_settings(run_dir)}; train into another --out, or add --force to retrain it from scratch"
        )
    if rec.differences and args.resume:
        raise InputError(f"{rec.other_settings(run_dir)}; train into another --out, or add --no-resume to start over")
    if rec.finished:
        problem = markers.artifacts_problem(run_dir.path) if run_dir.manifest.is_file() else None
        if problem is not None:
            raise InputError(f"{run_dir.path} is finished but stale ({problem}); add --force to retrain it")
        return True
    return False


def run(args: argparse.Namespace) -> int:
    from arith.train import CheckpointError, Diverged, Interrupts, newest_checkpoint
    from jobs.runs import lifecycle as runs
    from jobs.runs import markers

    cfg = config_from_args(args)
    require_writable_dir(args.out, "--out")  # before any work: an unwritable folder would lose the run
    run_dir = RunDir.of(args.out, cfg.name)
    out = run_dir.path
    rank0 = int(os.environ.get("RANK", "0")) == 0  # under DDP only rank 0 keeps the run's marker
    prog = getattr(args, "_prog", "varith train")
    if _existing_run(run_dir, cfg, args):
        print(f"{cfg.name}: already done with these settings ({run_dir.weights}); --force retrains it")
        return 0
    resume = args.resume and not args.force
    if args.force and rank0:
        runs.clear_for_retrain(out)
    if rank0:  # `varith status` shows runs trained directly too
        markers.mark_running(out, None, "cli", None, None)
    try:
        # Ctrl-C / SIGTERM: the step under way finishes, a checkpoint is saved there, the run shows as stopped
        with Interrupts() as interrupts:
            result = runs.train_run(
                run_dir,
                cfg,
                resume=resume,
                progress=not args.no_progress,
                stop_after=args.stop_after,
                interrupts=interrupts,
            )
        if rank0 and result.complete:
            runs.finish_run(out, result, cfg)
    except CheckpointError as exc:
        if rank0:
            runs.fail_run(out, exc)
        raise InputError(f"{exc}; rerun with --no-resume to start over, or train into another --out") from None
    except Diverged as exc:  # the run failed, not the input: one line, exit 1, the last good checkpoint kept
        if rank0:  # every rank reached the same verdict at the same step; one line says it
            runs.fail_run(out, exc)
            print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, at the newest checkpoint
        if rank0:
            ckpt = newest_checkpoint(run_dir.checkpoints)
            step = int(ckpt.name.split("_")[-1]) if ckpt is not None else 0
            markers.mark_stopped(out, step, None, "SIGINT twice (steps after the newest checkpoint are lost)")
        raise
    except BaseException as exc:
        if rank0:
            runs.fail_run(out, exc)
        raise
    if not result.complete:
        if rank0:
            runs.stop_run(out, result)
        ckpt = newest_checkpoint(run_dir.checkpoints)
        if result.stopped_by is not None:
            if rank0:
                print(
                    f"{prog}: {cfg.name}: interrupted by {result.stopped_by} at step {result.steps_done}; "
                    f"checkpoint {ckpt}; run the same command again to continue",
                    file=sys.stderr,
                )
            return 128 + getattr(signal, result.stopped_by, signal.SIGTERM)
        print(
            f"{cfg.name}: stopped after {result.steps_done} steps "
            f"(checkpoint in {run_dir.checkpoints}); run again to continue"
        )
        return 0
    print(f"{cfg.name}: {result.steps_done} steps, final loss {result.final_loss:.3g}")
    print(f"  weights: {result.weights}\n  train json: {result.train_json}")
    return 0
