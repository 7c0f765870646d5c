"""`varith regenerate [--models ...] [--scale full|tiny] [--cluster slurm|local|none] [--out DIR] [--dry-run]`.

Every published model of the catalog (jobs/catalog.toml) trained, verified, ablated, searched and put in its hub
folder `OUT/hub/<name>/` (jobs.stages.regenerate). Finished stages are skipped, so running it again resumes.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from arith.errors import InputError

HELP = "regenerate the published models: train, verify, ablate, algorithm search, hub folder (resumable)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--models",
        nargs="+",
        metavar="NAME",
        help="catalog names, or the run names regenerate prints at this --scale (add_d5_l1_h3_t300_s372001 at "
        "tiny); default: every model in the catalog",
    )
    p.add_argument(
        "--scale",
        choices=("full", "tiny"),
        default="full",
        help="full: the published recipe (GPUs); tiny: d_model 32, 300 steps, 10k questions (a CPU)",
    )
    p.add_argument(
        "--cluster",
        choices=("slurm", "local", "none"),
        default="local",
        help="where it runs: slurm (training as SLURM jobs, the other stages on Dask workers on SLURM), local "
        "(local submitit jobs, an embedded Dask cluster), none (everything in this process)",
    )
    p.add_argument("--profile", help="TOML profile with [slurm] (and [dask]) settings, for --cluster slurm")
    p.add_argument(
        "--out",
        default="runs/regenerated",
        help="output folder: OUT/runs/<name>/, OUT/hub/<name>/ (default: runs/regenerated)",
    )
    p.add_argument(
        "--layout",
        choices=("flat", "per-model", "both"),
        default="flat",
        help="hub folders: flat (OUT/hub/<name>/: <name>.pth, <name>_train.json, ...), per-model "
        "(OUT/hub/QuantaMaths_<name>/: model.pth, training_loss.json, behaviors.json, features.json, ...) or both",
    )
    p.add_argument("--catalog", help="catalog TOML (default: the one in the package)")
    p.add_argument("--steps", type=int, help="override the recipe's training steps (the names are rewritten)")
    p.add_argument("--questions", type=int, help="override the recipe's verification questions per operation")
    p.add_argument("--retries", type=int, default=1, help="retrain a failed training run up to N times (default 1)")
    p.add_argument("--device", default="auto", help="device of the analysis stages: auto, cpu, cuda")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print every model, its stages, dependencies and the compute they take; run nothing",
    )
    p.add_argument(
        "--rates",
        help="with --dry-run: the JSON lines of `make bench` (on the cluster's GPU) to turn steps and questions "
        "into hours (make bench keeps its last output in bench/out/bench.jsonl)",
    )


def _split(values) -> list[str]:
    return [w for v in values or [] for w in str(v).replace(",", " ").split()]


def run(args: argparse.Namespace) -> int:
    from arith.files import require_writable_dir
    from jobs.stages import regenerate as rg

    catalog = rg.read_catalog(args.catalog)
    recipe = base = catalog.recipe(args.scale)
    if args.steps is not None:
        recipe = replace(recipe, steps=rg.positive_int(args.steps, "--steps"))
    if args.questions is not None:
        recipe = replace(recipe, questions=rg.positive_int(args.questions, "--questions"))
    if args.retries < 0:
        raise InputError("--retries must be >= 0")
    opts = rg.Options(Path(args.out), recipe, args.cluster, args.profile, args.retries, args.device, layout=args.layout)
    opts = replace(opts, command=rg.reproduce_command(opts, base, args.catalog))
    rg.options_check(opts)
    steps = rg.plan(catalog, recipe, _split(args.models) or None)
    if args.dry_run:
        from jobs.stages.estimate import Rates

        print(rg.dry_run_text(steps, opts, rates=Rates.read(args.rates) if args.rates else None))
        return 0
    require_writable_dir(opts.out, "--out")
    report = rg.regenerate(steps, opts)
    print(rg.summary_text(report))
    return 1 if report.failed else 0
