"""`varith ablate MODEL.pth [MODEL.pth | RUNS_DIR ...]` -> `<name>_behavior.json`, its sidecar and quanta maps.

The node ablation of upstream_spec 7 (hpc.ablation), farmed over Dask into `<name>.zarr/ablate/` and reduced
to the behaviour file. `--compat` reproduces the published analyses; the default is corrected (README,
"Fidelity"). Several models (or every run under a folder) share one cluster.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from arith.errors import InputError
from arith.files import require_writable_dir
from jobs.common import add_cluster_arguments, cluster_spec, install_sigterm, print_dry_run

HELP = "node ablation of models (useful positions and nodes, behaviour tags) -> <name>_behavior.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "models", nargs="+", metavar="MODEL", help="weights <name>.pth, or a runs folder (every run's weights)"
    )
    p.add_argument(
        "--compat",
        action="store_true",
        help="reproduce the published analyses: means over all varied questions before failed ones are removed, "
        "layer 0's means for every layer, a random batch of the training batch size (default: corrected)",
    )
    p.add_argument(
        "--question-file",
        metavar="FILE",
        help="questions a+b / a-b, one per line, instead of the varied questions (same order)",
    )
    p.add_argument(
        "--random-rows",
        type=int,
        help="random questions before the hand-picked ones (default: the analysis batch, 512 or 256; "
        "with --compat the training batch size)",
    )
    p.add_argument("--save-mlp", action="store_true", help="also store the MLP hidden activations")
    p.add_argument(
        "--pca",
        action="store_true",
        help="add PCA tags (Math.Add:A{d}.SP, Math.Sub:A{d}.MP): useful heads whose outputs separate the "
        "tricase questions",
    )
    p.add_argument("--reduce-only", action="store_true", help="rebuild the JSON from the store, no forward pass")
    p.add_argument("--no-pictures", action="store_true", help="no quanta maps (SVG and PNG) beside the JSON")
    add_cluster_arguments(p, none_help="this process, no Dask (the store is written all the same)")


def weights_of(paths: list[str]) -> list[Path]:
    """The weights named, a folder's run weights expanded (runs/<name>/<name>.pth), in order, once each."""
    from hpc.rundir import RunDir

    out: list[Path] = []
    for text in paths:
        p = Path(text)
        if p.is_dir():
            subs = sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
            found = [RunDir(d).weights for d in subs if RunDir(d).weights.is_file()]
            if not found:
                raise InputError(f"{p}: no run folder with weights under it")
            out += found
        else:
            out.append(p)
    return list(dict.fromkeys(out))


def run(args: argparse.Namespace) -> int:
    from hpc import ablation

    if args.random_rows is not None and args.random_rows < 0:
        raise InputError("--random-rows must be >= 0")
    settings = ablation.Settings(
        rule=ablation.MeanRule.COMPAT if args.compat else ablation.MeanRule.CORRECTED,
        save_mlp=args.save_mlp,
        device=args.device,
        retries=args.retries,
        progress=not args.no_progress,
        fresh=args.fresh,
        pca=args.pca,
        wait=not args.no_wait,
    )
    weights = weights_of(args.models)
    jobs = [ablation.job_for(w, args.question_file, args.random_rows, args.compat, args.store) for w in weights]
    if args.store and len(jobs) > 1:
        raise InputError("--store names one store: give one model, or leave it out")
    for job in jobs:
        for warning in ablation.question_warnings(job):
            print(f"varith ablate: warning: {warning}", file=sys.stderr)
    if not args.dry_run:
        for job in jobs:
            require_writable_dir(job.out.parent, "output folder")
            require_writable_dir(job.store.parent, "--store folder")
    failed = 0
    if args.reduce_only:
        outcomes = [(job, ablation.reduce_store(job, settings)) for job in jobs]
    else:
        spec = None if args.cluster == "none" else cluster_spec(args, n_tasks=64, preload=("hpc.ablation",))
        if args.dry_run:
            if spec is None:
                raise InputError("--cluster none runs in this process: no --dry-run")
            plan = "\n".join(f"{j.model.name}: {len(j.op)} questions -> {j.store}/ablate" for j in jobs)
            print_dry_run(spec, plan)
            return 0
        install_sigterm()
        outcomes = ablation.run_many(jobs, settings, spec)
    for job, records in outcomes:
        before = ablation.mode_of(job.out) if job.out.is_file() else None
        try:
            paths = ablation.write_outputs(job, settings, records, pictures=not args.no_pictures)
        except ablation.NoUsefulNodes as exc:  # the other models' files are still written
            failed += 1
            print(f"varith ablate: error: {exc}", file=sys.stderr)
            continue
        print(f"{job.model.name}: {len(records)} useful nodes -> {paths[0]}")
        if before and before != settings.rule.value:
            print(
                f"note: {paths[0]} (made by the {before} ablation) now holds the {settings.rule.value} one; "
                "both stay in the store (--reduce-only, with or without --compat, switches back)",
                file=sys.stderr,
            )
    return 2 if failed else 0
