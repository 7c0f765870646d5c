"""`varith algo MODEL.pth [--compat] [--question-file FILE] [--check] [--reduce-only]` -> `<name>_maths.json`.

The algorithm sub-task search of docs/reference_facts.md F8 (jobs.stages.algo), farmed over Dask into
`<name>.zarr/algo/` and reduced to the maths file. It reads `<name>_behavior.json` beside the weights; when there is
none, the ablation runs first (as `varith ablate`, same flags). `--compat` uses the reference's filters (substring
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
    add_cluster_arguments(p)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from jobs.runs.rundir import RunDir
    from jobs.stages import ablate as ablation
    from jobs.stages import algo as algo_run
    from jobs.stages.template import preload

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
            raise InputError(
                f"{run_dir.behavior_json}: no behaviour file, so no search of one to rebuild the maths file from; "
                f"run `varith algo {weights}` (without --reduce-only: the ablation runs first)"
            )
        require_writable_dir(run_dir.path, "output folder")
        job = algo_run.job_for(weights, store=args.store)
        algo_run.check_outputs(job.out, job.model.name)
        return _report(job, algo_run.reduce_store(job, settings), args.check)
    stages = (ablation.AblateStage, algo_run.AlgoStage) if need_ablation else (algo_run.AlgoStage,)
    spec = cluster_spec(args, n_tasks=algo_run.AlgoStage.MAX_TASKS, preload=sum(map(preload, stages), ()))
    if args.dry_run:
        first = "ablation, then " if need_ablation else ""
        print_dry_run(spec, f"{run_dir.name}: {first}algorithm search -> {args.store or run_dir.store}/algo")
        return 0
    require_writable_dir(run_dir.path, "output folder")
    # before any work: the weights load, every output can be written, the store holds no search of another file
    if need_ablation:
        ab_settings = ablation.Settings(
            rule=ablation.MeanRule.COMPAT if args.compat else ablation.MeanRule.CORRECTED,
            device=args.device,
            retries=args.retries,
            progress=not args.no_progress,
            fresh=args.fresh,
            wait=not args.no_wait,
        )
        ab_job = ablation.job_for(weights, args.question_file, None, args.compat, args.store)
        ablation.check_outputs(ab_job)
        algo_run.check_outputs(run_dir.maths_json, run_dir.name)
        for warning in ablation.question_warnings(ab_job):
            print(f"varith algo: warning: {warning}", file=sys.stderr)
    else:
        job = algo_run.job_for(weights, store=args.store)
        algo_run.check_outputs(job.out, job.model.name)
        algo_run.check_store(job, settings)
        _note_other_ablation(job, settings, args.question_file)
    install_sigterm()
    if need_ablation:
        ((ab_job, records),) = ablation.run_many([ab_job], ab_settings, spec)
        ablation.write_outputs(ab_job, ab_settings, records)
        print(f"{ab_job.model.name}: {len(records)} useful nodes -> {ab_job.out}")
        job = algo_run.job_for(weights, store=args.store)
    return _report(job, algo_run.run(job, settings, spec), args.check)


def _report(job, records: list[dict], check: bool) -> int:
    """Write the maths file (and picture) and say what it holds; with `check`, which claims the tags support."""
    from jobs.stages import algo as algo_run

    out = algo_run.write_outputs(job, records)
    tagged = sum(1 for r in records if r["tags"])
    print(f"{job.model.name}: {tagged} of {len(records)} useful nodes have an algorithmic purpose -> {out}")
    if check:
        from analysis.algo import check_claims

        for claim, holds in check_claims(records, job.model.ops, job.model.n_digits):
            print(f"{'holds' if holds else 'FAILS'}: {claim}")
    return 0


def _note_other_ablation(job, settings, question_file: str | None) -> None:
    """The behaviour file is used as it is; say so when it was made another way than this run asks."""
    from jobs.stages.ablate import ablate_command, mode_of

    made = mode_of(job.behavior)
    if made and made != settings.mode:
        compat = " --compat" if settings.compat else ""
        print(
            f"note: using {job.behavior} as it is, made by `{ablate_command(job.behavior, job.given)}`; "
            f"run `varith ablate {job.given}{compat}` first for the {settings.mode} ablation",
            file=sys.stderr,
        )
    if question_file:
        print(
            f"note: using {job.behavior} as it is; --question-file is for the ablation "
            f"(`varith ablate {job.given} --question-file {question_file}` first to use it)",
            file=sys.stderr,
        )
