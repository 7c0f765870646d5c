"""`varith study sufficiency|patch|probe MODEL.pth|RUNS_DIR ... [--seeds N] [--cluster ...]` -> `<name>_<kind>.json`.

The intervention studies of issue 22 (jobs.stages.study) for one or more models on one cluster: blocks over Dask
(or this process with `--cluster none`) into `<name>.zarr/study/<kind>/`, restartable, reduced to
`<name>_<kind>.json` and `<name>_<kind>.png` beside each model's weights. The questions are the ablation's varied
questions (or `--question-file`); the node set of `sufficiency` comes from the behaviour file beside the weights
(default), the maths file's Algo-tagged nodes (`--nodes maths`) or a file of names (`--nodes FILE`, one `P15L1H2`
/ `P15L1MLP` per line). Every figure has its untrained-twin control and a 95% interval over `--seeds`.
"""

from __future__ import annotations

import argparse

from arith.errors import InputError
from jobs.common import add_cluster_arguments, cluster_spec, install_sigterm, print_dry_run, whole_number

HELP = "intervention studies (sufficiency, matched-pair patching, probes) with controls -> <name>_<kind>.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=["sufficiency", "patch", "probe"], help="which study")
    p.add_argument("models", metavar="MODEL", nargs="+", help="weights <name>.pth, a run folder or a runs folder")
    p.add_argument("--seeds", type=whole_number(1, 1000), default=1, help="repetitions for the 95%% intervals")
    p.add_argument(
        "--random", type=whole_number(0, 1000), default=10, help="random node sets of the circuit's size (default 10)"
    )
    p.add_argument(
        "--replace",
        choices=["mean", "resample"],
        default="mean",
        help="what replaced nodes take: the per-layer mean, or another question's activation (sufficiency)",
    )
    p.add_argument(
        "--restore",
        type=whole_number(0, 1000),
        default=3,
        help="greedy restoration steps, one node each (sufficiency; on the driver; default 3)",
    )
    p.add_argument(
        "--nodes",
        default="behavior",
        metavar="behavior|maths|FILE",
        help="the circuit: the behaviour file's nodes (default), the maths file's Algo-tagged nodes, or a file of "
        "names one per line (P15L1H2, P15L1MLP)",
    )
    p.add_argument("--question-file", metavar="FILE", help="questions a+b / a-b one per line (default: varied)")
    p.add_argument("--digit", type=whole_number(0, 40), help="one answer digit A<K> (patch; probe variables' column)")
    p.add_argument("--path", action="store_true", help="path patching too: each head into the MLPs at its position")
    p.add_argument(
        "--variable", action="append", default=[], help="a probe variable (x0, carry_out1, sign, ...); repeatable"
    )
    p.add_argument("--perm", type=whole_number(0, 1000), default=5, help="permutation-null shuffles per probe")
    p.add_argument("--chunk", type=whole_number(2, 1 << 20), default=256, help="questions per block (default 256)")
    p.add_argument("--no-pictures", action="store_true", help="write the JSON only")
    add_cluster_arguments(p)


def run(args: argparse.Namespace) -> int:
    from jobs.stages import study
    from jobs.stages.template import preload, run_stage

    settings = study.Settings(
        seeds=args.seeds,
        random=args.random,
        replace=args.replace,
        restore=args.restore,
        chunk=args.chunk,
        digit=args.digit,
        path=args.path,
        variables=tuple(args.variable),
        perm=args.perm,
        device=args.device,
        retries=args.retries,
        progress=not args.no_progress,
        fresh=args.fresh,
        wait=not args.no_wait,
    )
    weights = study.weights_of(args.models)
    if args.store and len(weights) > 1:
        raise InputError("--store names one model's store; give one model with it")
    jobs = [study.job_for(args.kind, w, args.nodes, args.question_file, args.store) for w in weights]
    for job in jobs:
        _check(job, settings)
    stage = study.STAGES[args.kind](settings)
    spec = cluster_spec(args, n_tasks=max(stage.tasks(j) for j in jobs), preload=preload(stage))
    if args.dry_run:
        for job in jobs:
            print_dry_run(spec, f"{job.model.name}: study {args.kind} -> {job.store}/study/{args.kind}")
        return 0
    install_sigterm()
    for job, result in run_stage(stage, jobs, spec):
        study.write_outputs(job, result, pictures=not args.no_pictures)
        print(f"{job.model.name}: study {args.kind} -> {job.out}")
    return 0


def _check(job, settings) -> None:
    """Before any work, one InputError line: the output folder can be written; --digit and --variable fit."""
    from arith.files import require_writable_dir

    require_writable_dir(job.out.parent, "output folder")
    n = job.model.n_digits
    if settings.digit is not None and settings.digit > n:
        raise InputError(f"--digit {settings.digit}: {job.model.name} has answer digits A0..A{n}")
    if job.kind == "probe":
        from analysis.probes import labels

        for v in settings.variables:
            try:
                labels(job.x[:1], job.y[:1], job.op[:1], v)
            except ValueError as exc:
                raise InputError(f"--variable {v}: {exc}") from None
