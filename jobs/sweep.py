"""`varith sweep`: train one run per (architecture, seed) on SLURM, locally, or in-process.

    varith sweep --seeds 372001 173289 --archs add_d6_l2_h3_t15K mix_d6_l3_h4_t40K [--cluster
                 slurm|local|debug] [--profile hpc/profiles/example.toml] [--dry-run] [--force] [--no-wait]
                 [--retries 1] [--d-model 32 --d-head 8 --steps 40 ...] [--file sweep.toml] [--runs-dir runs]

- An architecture is a model name without the seed (`add_d6_l2_h3_t15K`); each run is `<arch>_s<seed>` and
  lives in `runs/<name>/`. An ins* architecture may name its addition model:
  `ins1_mix_d6_l3_h4_t40K,add_d6_l2_h3_t15K` (without a seed it takes the run's seed); without one it is the
  reference default `add_d<D>_l2_h3_t15K_s372001`. The addition model is trained first when its artifacts
  are missing, and the ins* run waits for it (afterok).
- `--steps N` rewrites every name's step count (tiny test sweeps: `t40`); width overrides go to TrainConfig.
- Runs that are done and whose artifacts match their manifest's sha256 are skipped; `--force` retrains them.
  A run folder trained (or checkpointed) with other settings than asked refuses the sweep up front
  (jobs.runs.lifecycle.recorded_settings, the rule `varith train` uses); `--force` retrains it.
  Runs already queued or running (another sweep) are left alone. Failed runs are resubmitted up to
  `--retries` times.
- `--dry-run` prints the plan and the sbatch script(s) and changes nothing.
- A sweep file (`--file`, TOML) may hold seeds, archs, cluster, profile, runs_dir, retries, max_parallel, a
  [train] table of overrides and a [slurm] table of settings; command-line flags win.
Exit status: 0 when every run is done, 1 when some failed, 2 on bad input (nothing submitted).
"""

from __future__ import annotations

from pathlib import Path

from arith.errors import InputError, clip
from arith.files import require_writable_dir
from arith.names import parse_seed
from hpc.launcher import BACKENDS, LaunchConfig, backend, resolve_cluster
from hpc.profile import SLURM_FLAG_HELP, check_keys, resolve_slurm
from jobs.runs.rundir import submitit_folder
from jobs.runs.sweeps import SweepOptions, SweepRequest, read_sweep_file, run_sweep
from jobs.runs.training import TRAIN_OVERRIDES
from jobs.status import format_table
from jobs.train import add_train_flags

HELP = "Train one run per (architecture, seed) on SLURM, locally or in-process; skip done runs, retry failed."

_SLURM_FLAGS = tuple(SLURM_FLAG_HELP)


def _split_words(values) -> list[str]:
    """`--seeds "1 2" 3` -> ["1", "2", "3"] (a quoted list from make counts as several words)."""
    return [w for v in values or [] for w in str(v).split()]


def add_arguments(parser) -> None:
    parser.add_argument("--seeds", nargs="+", metavar="SEED", help="6-digit training seeds (space separated)")
    parser.add_argument(
        "--archs",
        nargs="+",
        metavar="ARCH",
        help="model names without the seed, e.g. add_d6_l2_h3_t15K; ins* may add ',<addition arch>'",
    )
    parser.add_argument("--file", help="sweep TOML file (seeds, archs, cluster, profile, [train], [slurm], ...)")
    parser.add_argument(
        "--cluster",
        choices=("auto", *BACKENDS),
        default=None,
        help="where to run (default: slurm when sbatch is installed, else local)",
    )
    parser.add_argument("--profile", help="TOML profile with SLURM settings (see hpc/profiles/)")
    parser.add_argument("--runs-dir", default=None, help="folder for run folders (default: runs)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and sbatch script(s); submit nothing")
    parser.add_argument("--force", action="store_true", help="retrain runs that are already done")
    parser.add_argument("--no-wait", action="store_true", help="slurm: submit and return (see varith status)")
    parser.add_argument("--retries", type=int, default=None, help="resubmit failed runs up to N times (default 1)")
    parser.add_argument(
        "--max-parallel",
        type=int,
        default=None,
        help="at most N jobs at once (slurm array cap; local default: cores / cores per job)",
    )
    parser.add_argument("--poll", type=float, default=None, help="seconds between job checks (default 5; local 0.5)")
    g = parser.add_argument_group("training overrides (TrainConfig)")
    g.add_argument("--steps", type=int, help="training steps for every model (rewrites the names: t40, t15K)")
    add_train_flags(g, with_defaults=False)
    s = parser.add_argument_group("SLURM settings (override the profile)")
    for name in _SLURM_FLAGS:
        s.add_argument(
            "--" + name.replace("_", "-"),
            default=None,
            type=str if name in ("partition", "account", "qos", "time", "mem") else int,
            help=SLURM_FLAG_HELP[name],
        )
    s.add_argument(
        "--sbatch",
        action="append",
        default=None,
        metavar="LINE",
        help="extra sbatch option, e.g. --sbatch=--constraint=a100 (repeatable)",
    )
    s.add_argument(
        "--setup",
        action="append",
        default=None,
        metavar="CMD",
        help="shell line run before the job (repeatable), e.g. 'module load cuda'",
    )


def options_from_args(args) -> SweepOptions:
    data, base = read_sweep_file(args.file) if args.file else ({}, Path("."))

    seeds_raw = _split_words(args.seeds) if args.seeds else [str(s) for s in data.get("seeds", [])]
    seeds = tuple(dict.fromkeys(parse_seed(s) for s in seeds_raw))
    archs = tuple(dict.fromkeys(_split_words(args.archs) if args.archs else [str(a) for a in data.get("archs", [])]))
    cluster = resolve_cluster(args.cluster or data.get("cluster"))
    runs_dir = Path(args.runs_dir or data.get("runs_dir") or "runs")
    if not args.runs_dir and data.get("runs_dir"):
        runs_dir = base / runs_dir

    # training overrides: file [train], then flags
    train = dict(data.get("train", {}))
    check_keys(train, TRAIN_OVERRIDES, "sweep file [train]")
    for name in TRAIN_OVERRIDES:
        if getattr(args, name) is not None:
            train[name] = getattr(args, name)
    steps = args.steps if args.steps is not None else data.get("steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise InputError(f"steps must be a positive whole number, got {steps!r}")

    # SLURM settings: profile file, then the sweep file's [slurm] table, then flags
    profile_path = args.profile or (str(base / data["profile"]) if data.get("profile") else None)
    flags = {name: getattr(args, name) for name in _SLURM_FLAGS}
    flags.update(extra_sbatch=args.sbatch, setup=args.setup)
    settings = resolve_slurm(profile_path, data.get("slurm"), flags)

    batch = int(train.get("batch_size", 64))
    if batch % settings.world_size:
        raise InputError(f"batch size {batch} does not split evenly across {settings.world_size} tasks")
    max_parallel = args.max_parallel if args.max_parallel is not None else data.get("max_parallel")
    explicit_time = args.time is not None or profile_path is not None or "time" in (data.get("slurm") or {})
    folder = submitit_folder(runs_dir.absolute(), cluster)
    lc = LaunchConfig(
        cluster=cluster,
        folder=folder,
        slurm=settings,
        max_parallel=max_parallel,
        timeout_min=settings.time_min if explicit_time else None,
        job_name="varith",
    )
    retries = args.retries if args.retries is not None else data.get("retries", 1)
    if not isinstance(retries, int) or retries < 0:
        raise InputError(f"retries must be a whole number >= 0, got {retries!r}")
    poll = args.poll if args.poll is not None else backend(cluster).poll_s
    if args.no_wait and not backend(cluster).queued:
        raise InputError("--no-wait needs --cluster slurm (local jobs are started and throttled by this process)")
    req = SweepRequest(
        archs=archs,
        seeds=seeds,
        runs_dir=runs_dir,
        overrides=tuple(sorted(train.items())),
        steps=steps,
        threads=settings.cpus_per_task,
    )
    return SweepOptions(req, lc, retries, poll, args.dry_run, args.force, args.no_wait)


def _require_folder(path: Path, what: str) -> None:
    """--dry-run writes nothing, but a --runs-dir that is a file (or lies under one) is still wrong: one line."""
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        where = "" if probe == path.absolute() else f" ({clip(str(probe))} is not a folder)"
        raise InputError(f"{what} {clip(str(path))}: not a folder{where}")


def run(args) -> int:
    options = options_from_args(args)
    if options.dry_run:
        _require_folder(options.request.runs_dir, "--runs-dir")
    else:  # before any job: an unwritable folder would lose every run
        require_writable_dir(options.request.runs_dir, "--runs-dir")
    outcome = run_sweep(options)
    if outcome is None:  # dry run, or submitted without waiting
        return 0
    print(format_table(list(outcome.rows)))
    n_done = sum(r.state == "done" for r in outcome.rows)
    print(f"{n_done}/{len(outcome.rows)} run(s) done in {outcome.seconds:.1f}s")
    return 0 if outcome.all_done else 1
