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
  Runs already queued or running (another sweep) are left alone. Failed runs are resubmitted up to
  `--retries` times.
- `--dry-run` prints the plan and the sbatch script(s) and changes nothing.
- A sweep file (`--file`, TOML) may hold seeds, archs, cluster, profile, runs_dir, retries, max_parallel, a
  [train] table of overrides and a [slurm] table of settings; command-line flags win.
Exit status: 0 when every run is done, 1 when some failed, 2 on bad input (nothing submitted).
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arith.errors import InputError
from arith.names import expand_arch, parse_seed
from hpc import launch, markers
from hpc.profile import check_keys, read_toml
from jobs import status as status_mod
from jobs.train import add_train_flags
from jobs.train_task import TRAIN_OVERRIDES, RunSpec, TrainTask

HELP = "Train one run per (architecture, seed) on SLURM, locally or in-process; skip done runs, retry failed."

# SLURM flags (profile keys) -> help
_SLURM_HELP = {
    "partition": "SLURM partition",
    "account": "SLURM account to charge",
    "qos": "SLURM quality of service",
    "time": "wall time per job, e.g. 90, 1:30:00 or 2-00:00:00 (minutes or SLURM's forms)",
    "mem": "memory per node, e.g. 16G or 4000M",
    "cpus_per_task": "CPU cores per task (also torch's threads per task)",
    "gpus_per_node": "GPUs per node (one task per GPU)",
    "tasks_per_node": "tasks per node (DDP ranks; defaults to gpus_per_node when GPUs are asked for)",
    "nodes": "nodes per job",
    "max_num_timeout": "requeues after a time-out or preemption before the run counts as failed",
}
_SLURM_FLAGS = tuple(_SLURM_HELP)


@dataclass(frozen=True)
class PlannedRun:
    spec: RunSpec
    role: str  # "sweep": asked for; "insert": an addition model an ins* run needs


@dataclass(frozen=True)
class SweepRequest:
    archs: tuple[str, ...]
    seeds: tuple[int, ...]
    runs_dir: Path
    overrides: tuple[tuple[str, Any], ...] = ()
    steps: int | None = None
    threads: int = 1


# ------------------------------------------------------------------------------------------------ parsing


def _split_words(values) -> list[str]:
    """`--seeds "1 2" 3` -> ["1", "2", "3"] (a quoted list from make counts as several words)."""
    return [w for v in values or [] for w in str(v).split()]


def plan(req: SweepRequest) -> list[PlannedRun]:
    """Every run of the sweep (addition models ins* runs need first), specs validated against TrainConfig."""
    if not req.archs:
        raise InputError("no architectures given (--archs or archs in the sweep file)")
    if not req.seeds:
        raise InputError("no seeds given (--seeds or seeds in the sweep file)")
    runs_dir = str(req.runs_dir.absolute())
    wanted: dict[str, str | None] = {}
    for arch in req.archs:
        for seed in req.seeds:
            main, insert = expand_arch(arch, seed, req.steps)
            wanted.setdefault(main.format(), insert.format() if insert else None)
    inserts = [i for i in dict.fromkeys(v for v in wanted.values() if v) if i not in wanted]
    out = [PlannedRun(RunSpec(n, runs_dir, req.overrides, None, req.threads), "insert") for n in inserts]
    out += [PlannedRun(RunSpec(n, runs_dir, req.overrides, ins, req.threads), "sweep") for n, ins in wanted.items()]
    for p in out:
        try:
            p.spec.train_config()
        except InputError as exc:
            raise InputError(f"{p.spec.name}: {exc}") from None
    return out


# ------------------------------------------------------------------------------------------------ arguments


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
        choices=("auto",) + launch.BACKENDS,
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
            help=_SLURM_HELP[name],
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


def _load_sweep_file(path: str) -> tuple[dict, Path]:
    p = Path(path)
    data = read_toml(p, "sweep file")
    known = {
        "seeds",
        "archs",
        "cluster",
        "profile",
        "runs_dir",
        "retries",
        "max_parallel",
        "steps",
        "train",
        "slurm",
    }
    check_keys(data, known, f"sweep file {p}")
    return data, p.parent


@dataclass(frozen=True)
class Options:
    request: SweepRequest
    launch: launch.LaunchConfig
    retries: int
    poll_s: float
    dry_run: bool
    force: bool
    no_wait: bool


def options_from_args(args) -> Options:
    data, base = _load_sweep_file(args.file) if args.file else ({}, Path("."))

    seeds_raw = _split_words(args.seeds) if args.seeds else [str(s) for s in data.get("seeds", [])]
    seeds = tuple(dict.fromkeys(parse_seed(s) for s in seeds_raw))
    archs = tuple(dict.fromkeys(_split_words(args.archs) if args.archs else [str(a) for a in data.get("archs", [])]))
    cluster = launch.resolve_cluster(args.cluster or data.get("cluster"))
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
    settings = launch.load_profile(profile_path) if profile_path else launch.SlurmSettings()
    if data.get("slurm"):
        if not isinstance(data["slurm"], dict):
            raise InputError("sweep file: [slurm] must be a table")
        settings = launch.override_settings(settings, **data["slurm"])
    flags = {name: getattr(args, name) for name in _SLURM_FLAGS}
    flags["extra_sbatch"] = args.sbatch
    flags["setup"] = args.setup
    settings = launch.override_settings(settings, **flags)

    batch = int(train.get("batch_size", 64))
    if batch % settings.world_size:
        raise InputError(f"batch size {batch} does not split evenly across {settings.world_size} tasks")
    max_parallel = args.max_parallel if args.max_parallel is not None else data.get("max_parallel")
    explicit_time = args.time is not None or profile_path is not None or "time" in (data.get("slurm") or {})
    folder = runs_dir.absolute() / ".submitit" / "%j"
    lc = launch.LaunchConfig(
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
    poll = args.poll if args.poll is not None else (5.0 if cluster == "slurm" else 0.5)
    if args.no_wait and cluster != "slurm":
        raise InputError("--no-wait needs --cluster slurm (local jobs are started and throttled by this process)")
    req = SweepRequest(
        archs=archs,
        seeds=seeds,
        runs_dir=runs_dir,
        overrides=tuple(sorted(train.items())),
        steps=steps,
        threads=settings.cpus_per_task,
    )
    return Options(req, lc, retries, poll, args.dry_run, args.force, args.no_wait)


# ------------------------------------------------------------------------------------------------ running


def _classify(planned: list[PlannedRun], force: bool) -> tuple[list[PlannedRun], dict[str, str]]:
    """-> (runs to submit, {name: why skipped}) from the runs' markers, artifacts and the scheduler."""
    states = status_mod.resolve_runs([p.spec.run_dir for p in planned])
    todo, skipped = [], {}
    for p, st in zip(planned, states, strict=True):
        st = st if p.spec.run_dir.exists() else None
        if st is not None and st.state in ("pending", "running"):
            skipped[p.spec.name] = f"active ({st.state}, job {st.job_id})"
        elif st is not None and st.state == "done" and not force:
            skipped[p.spec.name] = "done"
        elif p.role == "insert" and st is not None and st.state == "done":
            skipped[p.spec.name] = "done (addition model; --force retrains only the sweep's own runs)"
        else:
            todo.append(p)
    return todo, skipped


def _tasks(todo: list[PlannedRun], skipped: dict[str, str]) -> list[launch.Task]:
    names = {p.spec.name for p in todo}
    tasks = []
    for p in todo:
        after: tuple[str, ...] = ()
        after_jobs: tuple[str, ...] = ()
        ins = p.spec.insert
        if ins is not None:
            if ins in names:
                after = (ins,)
            elif skipped.get(ins, "").startswith("active"):
                m = markers.read_marker(Path(p.spec.runs_dir) / ins)
                after = (ins,)
                if m is not None and m.cluster == "slurm" and m.job_id:
                    after_jobs = (m.job_id,)
        tasks.append(launch.Task(p.spec.name, TrainTask(p.spec), after, after_jobs))
    return tasks


def _dry_run(opts: Options, planned: list[PlannedRun], todo: list[PlannedRun], skipped: dict[str, str]) -> int:
    lc = opts.launch
    n_sweep = sum(p.role == "sweep" for p in planned)
    print(
        f"# varith sweep (dry run): {n_sweep} run(s) = {len(opts.request.archs)} arch(s) x "
        f"{len(opts.request.seeds)} seed(s) on {lc.cluster}; {len(skipped)} skipped, {len(todo)} to submit"
    )
    for name, why in skipped.items():
        print(f"# skip {name}: {why}")
    for p in todo:
        extra = " (addition model, trained first)" if p.role == "insert" else ""
        extra += f" (after {p.spec.insert})" if p.spec.insert and p.role == "sweep" else ""
        print(f"# run {p.spec.name}{extra}")
    tasks = _tasks(todo, skipped)
    if lc.cluster == "slurm":
        s = lc.effective_slurm
        for group, dep_keys, dep_jobs in launch.slurm_groups(tasks):
            deps = [f"<job of {k}>" for k in dep_keys] + list(dep_jobs)
            dependency = "afterok:" + ":".join(deps) if deps else None
            name = group[0].key if len(group) == 1 else f"{lc.job_name}_x{len(group)}"
            print(
                f"# sbatch: {len(group)} job(s)"
                + (f" as an array, at most {min(len(group), s.array_parallelism)} at once" if len(group) > 1 else "")
                + (f", after {', '.join(dep_keys + dep_jobs)}" if deps else "")
                + ": "
                + " ".join(t.key for t in group)
            )
            print(launch.render_sbatch(lc, len(group), dependency=dependency, job_name=name))
    elif lc.cluster == "local":
        print(f"# local: at most {lc.local_slots} job(s) at once, {lc.slurm.ntasks_per_node} task(s) each")
    else:
        print("# debug: runs one after another in this process")
    return 0


def _submit_error(exc: BaseException, captured: str) -> str:
    text = "\n".join(x for x in (captured, str(exc)) if x)
    for line in text.splitlines():
        if "error" in line.lower():
            return line.strip()
    return (text.strip().splitlines() or [type(exc).__name__])[-1].strip()


def _run_round(
    opts: Options, todo: list[PlannedRun], skipped: dict[str, str], planned: list[PlannedRun], clear: bool
) -> launch.Launcher:
    lc = opts.launch
    by_name = {p.spec.name: p for p in planned}
    for p in todo:
        if clear and p.role == "sweep":  # --force: train from scratch (a retry later resumes its checkpoints)
            markers.clear_run(p.spec.run_dir)
        markers.mark_submitted(p.spec.run_dir, lc.cluster)

    def after_submit(h: launch.Handle) -> None:
        markers.set_job(by_name[h.key].spec.run_dir, h.job_id, h.stdout, h.stderr, h.submitted_at)
        if lc.cluster != "debug":
            print(f"submitted {h.key}: job {h.job_id}", flush=True)

    def dep_state(key: str) -> str:
        st = status_mod.resolve_one(Path(opts.request.runs_dir.absolute()) / key)
        if st.state == "done":
            return "ok"
        if st.state in ("failed", "stale"):
            return "failed"
        return "wait"

    launcher = launch.Launcher(lc, after_submit=after_submit, dep_state=dep_state)
    tasks = _tasks(todo, skipped)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            launcher.submit(tasks)
    except Exception as exc:  # sbatch refused (bad partition, account, ...): say so in one line
        reason = _submit_error(exc, captured.getvalue())
        for p in todo:
            h = launcher.handles.get(p.spec.name)
            if h is None or h.job_id is None:
                markers.mark_failed(p.spec.run_dir, f"submission failed: {reason}")
        raise InputError(f"submission failed: {reason}") from None
    return launcher


def _on_end(opts: Options, h: launch.Handle) -> None:
    run_dir = Path(opts.request.runs_dir.absolute()) / h.key
    m = markers.read_marker(run_dir)
    if m is not None and m.state == "done" and markers.artifacts_ok(run_dir):
        loss = f", final loss {m.final_loss:.3g}" if m.final_loss is not None else ""
        print(f"done {h.key} ({m.steps_done} steps{loss})", flush=True)
        return
    reason = (
        (m.error if m is not None and m.state == "failed" and m.error else None)
        or h.error()
        or "job ended without marking the run done"
    )
    if m is None or m.state != "failed":
        markers.mark_failed(run_dir, reason)
    log = f" (log {h.stdout})" if h.stdout else ""
    print(f"failed {h.key}: {reason}{log}", flush=True)


def _never_starts(p: PlannedRun) -> bool:
    m = markers.read_marker(p.spec.run_dir)
    return m is not None and m.state == "failed" and (m.error or "").startswith("slurm will never start")


def run_sweep(opts: Options) -> int:
    planned = plan(opts.request)
    todo, skipped = _classify(planned, opts.force)
    if opts.dry_run:
        return _dry_run(opts, planned, todo, skipped)
    lc = opts.launch
    if lc.cluster == "slurm" and todo:
        launch.check_controller()
    for name, why in skipped.items():
        print(f"skip {name}: {why}")
    attempt = 0
    t0 = time.time()
    while todo:
        if attempt:
            print(f"retry {attempt}/{opts.retries}: {' '.join(p.spec.name for p in todo)}", flush=True)
        launcher = _run_round(opts, todo, skipped, planned, clear=opts.force and attempt == 0)
        if opts.no_wait:
            print(f"{len(todo)} run(s) submitted; `varith status --runs-dir {opts.request.runs_dir}` follows")
            return 0
        try:
            launcher.wait(on_end=lambda h: _on_end(opts, h), poll_s=opts.poll_s)
        except KeyboardInterrupt:
            if lc.cluster == "slurm":
                print("interrupted: the jobs keep running; `varith status` follows them", file=sys.stderr)
            raise
        todo, skipped = _classify(planned, force=False)
        hopeless = [p for p in todo if _never_starts(p)]
        todo = [p for p in todo if p not in hopeless]  # the same request would be refused again
        if not todo or attempt >= opts.retries:
            break
        attempt += 1
    rows = status_mod.resolve_runs([p.spec.run_dir for p in planned])
    print(status_mod.format_table(rows))
    n_done = sum(r.state == "done" for r in rows)
    print(f"{n_done}/{len(rows)} run(s) done in {time.time() - t0:.1f}s")
    return 0 if n_done == len(rows) else 1


def run(args) -> int:
    return run_sweep(options_from_args(args))
