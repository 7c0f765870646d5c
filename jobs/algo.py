"""`varith algo MODEL.pth [--compat] [--question-file FILE] [--check] [--reduce-only]` -> `<name>_maths.json`.

The algorithm sub-task search of upstream_spec 8 (hpc.algo_run), farmed over Dask into `<name>.zarr/algo/`
and reduced to the maths file. It reads `<name>_behavior.json` beside the weights; when there is none, the
ablation runs first (as `varith ablate`, same flags). `--compat` uses the reference's filters (substring
attention and leading-impact matches); the default uses the intended ones (README, "Algorithm search").
`--reduce-only` rebuilds the maths file from the store with no forward pass.
"""

from __future__ import annotations

import argparse
import sys

from arith.errors import InputError
from arith.files import require_writable_dir
from jobs.common import add_cluster_arguments, cluster_spec, install_sigterm, print_dry_run

HELP = "algorithm sub-task search over the useful nodes (interventions, Algo tags) -> <name>_maths.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="weights <name>.pth")
    p.add_argument(
        "--compat",
        action="store_true",
        help="the reference's filters: any attention tag whose text contains Pk, impact matched on the highest "
        "impacted digit only (and a --compat ablation when the behaviour file is made here)",
    )
    p.add_argument(
        "--question-file",
        metavar="FILE",
        help="questions for the ablation run first when there is no <name>_behavior.json yet",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="print which algorithm claims the tags support (an SA or MD node per answer digit, ST or MT "
        "before the sign)",
    )
    p.add_argument(
        "--reduce-only",
        action="store_true",
        help="rebuild the JSON from the store (made from this behaviour file), no forward pass",
    )
    add_cluster_arguments(p, none_help="this process, no Dask (the store is written all the same)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hpc import ablation, algo_run
    from hpc.rundir import RunDir

    weights = Path(args.model)
    if not weights.is_file():
        raise InputError(f"{weights}: no such weights file")
    run_dir = RunDir.beside(weights)
    settings = algo_run.Settings(
        compat=args.compat,
        device=args.device,
        retries=args.retries,
        progress=not args.no_progress,
        fresh=args.fresh,
        wait=not args.no_wait,
    )
    need_ablation = not run_dir.behavior_json.is_file()
    if args.reduce_only:
        if need_ablation:
            raise InputError(f"{run_dir.behavior_json}: no behaviour file; --reduce-only reads the search's store")
        require_writable_dir(run_dir.path, "output folder")
        job = algo_run.job_for(weights, store=args.store)
        return _report(job, algo_run.reduce_store(job, settings), args.check)
    spec = None if args.cluster == "none" else cluster_spec(args, n_tasks=16, preload=("hpc.algo_run",))
    if args.dry_run:
        if spec is None:
            raise InputError("--cluster none runs in this process: no --dry-run")
        first = "ablation, then " if need_ablation else ""
        print_dry_run(spec, f"{run_dir.name}: {first}algorithm search -> {args.store or run_dir.store}/algo")
        return 0
    require_writable_dir(run_dir.path, "output folder")
    install_sigterm()
    if need_ablation:
        ab_settings = ablation.Settings(
            rule=ablation.MeanRule.COMPAT if args.compat else ablation.MeanRule.CORRECTED,
            device=args.device,
            retries=args.retries,
            progress=not args.no_progress,
            fresh=args.fresh,
            wait=not args.no_wait,
        )
        job = ablation.job_for(weights, args.question_file, None, args.compat, args.store)
        for warning in ablation.question_warnings(job):
            print(f"varith algo: warning: {warning}", file=sys.stderr)
        ((job, records),) = ablation.run_many([job], ab_settings, spec)
        ablation.write_outputs(job, ab_settings, records)
        print(f"{job.model.name}: {len(records)} useful nodes -> {job.out}")
    else:
        _note_other_ablation(run_dir.behavior_json, "compat" if args.compat else "corrected", args.question_file)
    job = algo_run.job_for(weights, store=args.store)
    return _report(job, algo_run.run(job, settings, spec), args.check)


def _report(job, records: list[dict], check: bool) -> int:
    """Write the maths file (and picture) and say what it holds; with `check`, which claims the tags support."""
    from hpc import algo_run

    out = algo_run.write_outputs(job, records)
    tagged = sum(1 for r in records if r["tags"])
    print(f"{job.model.name}: {tagged} of {len(records)} useful nodes have an algorithmic purpose -> {out}")
    if check:
        from analysis.algo import check_claims

        for claim, holds in check_claims(records, job.model.ops, job.model.n_digits):
            print(f"{'holds' if holds else 'FAILS'}: {claim}")
    return 0


def _note_other_ablation(behavior, mode: str, question_file: str | None) -> None:
    """The behaviour file is used as it is; say so when it was made another way than this run asks."""
    from hpc.ablation import mode_of

    made = mode_of(behavior)
    if made and made != mode:
        print(f"note: using {behavior}, made by the {made} ablation (varith ablate to redo it)", file=sys.stderr)
    if question_file:
        print(f"note: using {behavior} as it is; --question-file is for the ablation", file=sys.stderr)
