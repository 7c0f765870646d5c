"""`varith ablate MODEL.pth [MODEL.pth | RUNS_DIR ...]` -> `<name>_behavior.json`, its sidecar and quanta maps.

The node ablation of docs/reference_facts.md F7 (jobs.stages.ablate), farmed over Dask into `<name>.zarr/ablate/`
and reduced to the behaviour file. `--compat` reproduces the published analyses; the default is corrected (README,
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
    add_cluster_arguments(p)


def weights_of(paths: list[str]) -> list[Path]:
    """The weights named, a folder's run weights expanded (runs/<name>/<name>.pth), in order, once each."""
    from jobs.runs.rundir import RunDir

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
    from jobs.stages import ablate as ablation
    from jobs.stages.template import preload

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
    if not args.dry_run:  # before any work: every file it will write can be written (one line, nothing written)
        for job in jobs:
            require_writable_dir(job.out.parent, "output folder")
            require_writable_dir(job.store.parent, "--store folder")
            ablation.check_outputs(job, pictures=not args.no_pictures)
    for job in jobs:
        for warning in ablation.question_warnings(job):
            print(f"varith ablate: warning: {warning}", file=sys.stderr)
    failed = 0
    if args.reduce_only:
        outcomes = [(job, ablation.reduce_store(job, settings)) for job in jobs]
    else:
        spec = cluster_spec(args, n_tasks=ablation.AblateStage.MAX_TASKS, preload=preload(ablation.AblateStage))
        if args.dry_run:
            plan = "\n".join(f"{j.model.name}: {len(j.op)} questions -> {j.store}/ablate" for j in jobs)
            print_dry_run(spec, plan)
            return 0
        install_sigterm()
        outcomes = ablation.run_many(jobs, settings, spec)
    for (job, records), given in zip(outcomes, weights, strict=True):
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
        _warn_stale(job.out, given, args.compat)
    return 2 if failed else 0


def _warn_stale(behavior: Path, weights, compat: bool) -> None:
    """One line when files made from the behaviour file (its maths file, quanta maps) are now older than it
    (analysis.behavior.stale_files), and the commands that remake them."""
    from analysis.behavior import stale_files
    from analysis.quanta import VIEWS, map_paths
    from arith.names import ARTIFACT_SUFFIXES

    stale = stale_files(behavior)
    if not stale:
        return
    flag = " --compat" if compat else ""
    name = behavior.name.removesuffix(ARTIFACT_SUFFIXES["behavior"])
    algo_made = [
        p for p in stale if p.name.endswith(ARTIFACT_SUFFIXES["maths"]) or p in map_paths(p.parent, name, "algo")
    ]
    fixes = []
    if algo_made:
        fixes.append(f"`varith algo {weights}{flag}` remakes the maths file and its map")
    if len(algo_made) < len(stale):
        fixes.append(f"`varith ablate {weights}{flag} --reduce-only` redraws the maps")
    views = [v for v in (*VIEWS, "algo") if set(map_paths(behavior.parent, name, v)) & set(stale)]
    shown = {p for v in views for p in map_paths(behavior.parent, name, v)}
    what = [p.name for p in stale if p not in shown]
    if views:
        what.append(f"the quanta maps ({', '.join(views)}, SVG and PNG)")
    print(
        f"varith ablate: warning: stale (older than {behavior}, the behaviour file they are made from): "
        f"{' and '.join(what)}; {' and '.join(fixes)}",
        file=sys.stderr,
    )
