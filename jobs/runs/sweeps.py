"""A sweep of training runs: the plan (one run per architecture and seed, plus the addition models ins* runs
need), which runs to skip, the rounds of submission and retry, and the `--dry-run` rendering.

`run_sweep(opts)` plans, refuses runs whose folders hold training of other settings
(jobs.runs.lifecycle.recorded_settings; `--force` retrains them), skips runs that are done or active
(jobs.runs.lifecycle), submits the rest through hpc.launcher, marks each run as its job ends, and resubmits failed
runs up to `opts.retries` times (a run SLURM would never start is not resubmitted: the same request would wait
again; nor is one whose loss or gradient stopped being finite: it would diverge again at the same step). While it
waits it prints a line per run each time the run's progress.json (written by the job) passes another ~5% of its
steps: step, loss, steps/s, ETA.
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
from arith.names import expand_arch
from arith.progress import eta
from hpc.launcher import Handle, LaunchConfig, Launcher, Task, afterok, backend, is_queued, render_sbatch, slurm_groups
from hpc.profile import check_keys, read_toml
from jobs.runs import lifecycle as runs
from jobs.runs import markers
from jobs.runs.rundir import RunDir
from jobs.runs.training import RunSpec, TrainTask

PROGRESS_PARTS = 20  # a progress line per run each time it passes another 1/20 of its steps
SWEEP_FILE_KEYS = (
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
)


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


@dataclass(frozen=True)
class SweepOptions:
    request: SweepRequest
    launch: LaunchConfig
    retries: int
    poll_s: float
    dry_run: bool
    force: bool
    no_wait: bool


@dataclass(frozen=True)
class SweepOutcome:
    rows: tuple[runs.RunStatus, ...]
    seconds: float

    @property
    def all_done(self) -> bool:
        return all(r.state == "done" for r in self.rows)


def read_sweep_file(path: str | Path) -> tuple[dict[str, Any], Path]:
    """A sweep file's table (unknown keys refused) and the folder its relative paths start from."""
    p = Path(path)
    data = read_toml(p, "sweep file")
    check_keys(data, SWEEP_FILE_KEYS, f"sweep file {p}")
    return data, p.parent


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


def _other_settings(planned: list[PlannedRun], active: set[str], force: bool) -> None:
    """InputError naming the runs whose folders hold training of other settings (jobs.runs.lifecycle.recorded_settings,
    the rule `varith train` uses too): a run trained, or checkpointed, with other settings is neither done nor
    resumable for this sweep. `--force` retrains the sweep's own runs; an addition model is never retrained."""
    lines = []
    for p in planned:
        if p.spec.name in active or not p.spec.run_dir.exists() or (force and p.role == "sweep"):
            continue
        run = RunDir(p.spec.run_dir)
        rec = runs.recorded_settings(run, p.spec.train_config())
        if rec.differences:
            lines.append(rec.other_settings(run))
    if not lines:
        return
    shown = "; ".join(lines[:3]) + (f"; and {len(lines) - 3} more" if len(lines) > 3 else "")
    how = "use another --runs-dir" + ("" if force else ", or --force to retrain the sweep's runs")
    raise InputError(f"{shown}; {how}")


def _classify(planned: list[PlannedRun], force: bool) -> tuple[list[PlannedRun], dict[str, str]]:
    """-> (runs to submit, {name: why skipped}) from the runs' markers, artifacts and the scheduler; InputError
    for runs that hold other settings (_other_settings)."""
    states = runs.resolve_runs([p.spec.run_dir for p in planned])
    active = {
        p.spec.name
        for p, st in zip(planned, states, strict=True)
        if p.spec.run_dir.exists() and st.state in ("pending", "running")
    }
    _other_settings(planned, active, force)
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


def _tasks(todo: list[PlannedRun], skipped: dict[str, str]) -> list[Task]:
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
                if m is not None and is_queued(m.cluster) and m.job_id:
                    after_jobs = (m.job_id,)
        tasks.append(Task(p.spec.name, TrainTask(p.spec), after, after_jobs))
    return tasks


def dry_run_text(opts: SweepOptions, planned: list[PlannedRun], todo: list[PlannedRun], skipped: dict[str, str]) -> str:
    """The plan and, on slurm, the sbatch script of each submission."""
    lc = opts.launch
    n_sweep = sum(p.role == "sweep" for p in planned)
    lines = [
        f"# varith sweep (dry run): {n_sweep} run(s) = {len(opts.request.archs)} arch(s) x "
        f"{len(opts.request.seeds)} seed(s) on {lc.cluster}; {len(skipped)} skipped, {len(todo)} to submit"
    ]
    lines += [f"# skip {name}: {why}" for name, why in skipped.items()]
    for p in todo:
        extra = " (addition model, trained first)" if p.role == "insert" else ""
        extra += f" (after {p.spec.insert})" if p.spec.insert and p.role == "sweep" else ""
        lines.append(f"# run {p.spec.name}{extra}")
    if backend(lc.cluster).queued:  # the scheduler's arrays and dependencies, as submitted
        cap = lc.effective_slurm.array_parallelism
        for g in slurm_groups(_tasks(todo, skipped)):
            deps = [f"<job of {k}>" for k in g.after] + list(g.after_jobs)
            n = len(g.tasks)
            lines.append(
                f"# sbatch: {n} job(s)"
                + (f" as an array, at most {min(n, cap)} at once" if n > 1 else "")
                + (f", after {', '.join(g.after + g.after_jobs)}" if deps else "")
                + ": "
                + " ".join(t.key for t in g.tasks)
            )
            lines.append(render_sbatch(lc, n, dependency=afterok(deps), job_name=g.job_name(lc.job_name)))
    else:
        lines.append(backend(lc.cluster).plan_text(lc))
    return "\n".join(lines)


def _submit_error(exc: BaseException, captured: str) -> str:
    text = "\n".join(x for x in (captured, str(exc)) if x)
    for line in text.splitlines():
        if "error" in line.lower():
            return line.strip()
    return (text.strip().splitlines() or [type(exc).__name__])[-1].strip()


def _run_round(
    opts: SweepOptions, todo: list[PlannedRun], skipped: dict[str, str], planned: list[PlannedRun], clear: bool
) -> Launcher:
    lc = opts.launch
    by_name = {p.spec.name: p for p in planned}
    for p in todo:
        if clear and p.role == "sweep":  # --force: train from scratch (a retry later resumes its checkpoints)
            runs.clear_for_retrain(p.spec.run_dir)
        markers.mark_submitted(p.spec.run_dir, lc.cluster)

    def after_submit(h: Handle) -> None:
        markers.set_job(by_name[h.key].spec.run_dir, h.job_id, h.stdout, h.stderr, h.submitted_at)
        if not backend(lc.cluster).in_process:
            print(f"submitted {h.key}: job {h.job_id}", flush=True)

    def dep_state(key: str):
        st = runs.resolve_one(Path(opts.request.runs_dir.absolute()) / key)
        if st.state == "done":
            return "ok"
        return "failed" if st.state in ("failed", "stale") else "wait"

    launcher = Launcher(lc, after_submit=after_submit, dep_state=dep_state)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            launcher.submit(_tasks(todo, skipped))
    except Exception as exc:  # sbatch refused (bad partition, account, ...): say so in one line
        reason = _submit_error(exc, captured.getvalue())
        for p in todo:
            h = launcher.handles.get(p.spec.name)
            if h is None or h.job_id is None:
                markers.mark_failed(p.spec.run_dir, f"submission failed: {reason}")
        raise InputError(f"submission failed: {reason}") from None
    return launcher


def _on_end(opts: SweepOptions, h: Handle) -> None:
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
        markers.mark_failed(run_dir, reason, retryable=not h.never_started)
    log = f" (log {h.stdout})" if h.stdout else ""
    print(f"failed {h.key}: {reason}{log}", flush=True)


def _not_retried(p: PlannedRun) -> bool:
    """A failed run the same request would fail again: SLURM will never start it, or it diverged (the same
    steps give the same non-finite loss)."""
    m = markers.read_marker(p.spec.run_dir)
    return m is not None and m.state == "failed" and not m.retryable


class _ProgressLines:
    """The sweep's view of its running jobs: one line per run when its progress.json (written by the job every
    `--log-every` steps) has passed another 1/PROGRESS_PARTS of the run's steps since the last line. Records
    older than the round's submission (a previous attempt's) are not shown."""

    def __init__(self, todo: list[PlannedRun], since: float):
        self.todo = todo
        self.since = since
        self.shown: dict[str, int] = {}

    def report(self) -> None:
        for p in self.todo:
            path = RunDir(p.spec.run_dir).progress
            try:
                if path.stat().st_mtime < self.since:
                    continue
            except OSError:
                continue
            rec = markers.read_progress(p.spec.run_dir) or {}
            step, steps = rec.get("step"), rec.get("steps")
            if not isinstance(step, int) or not isinstance(steps, int) or not 0 < step < steps:
                continue
            part = step * PROGRESS_PARTS // steps
            if part <= self.shown.get(p.spec.name, 0):
                continue
            self.shown[p.spec.name] = part
            print(progress_line(p.spec.name, rec), flush=True)


def progress_line(name: str, rec: dict) -> str:
    """`progress NAME: step 1,500/15,000 (10%), loss 0.123, 45.2 step/s, ETA 5 min` from a progress.json record."""
    step, steps = rec["step"], rec["steps"]
    parts = [f"step {step:,}/{steps:,} ({100 * step // steps}%)"]
    loss, rate = rec.get("loss"), rec.get("steps_per_s")
    if isinstance(loss, int | float):
        parts.append(f"loss {loss:.3g}")
    if isinstance(rate, int | float) and rate > 0:
        parts.append(f"{rate:,.0f} step/s" if rate >= 100 else f"{rate:.2f} step/s")
        if left := eta(step, steps, rate):
            parts.append(f"ETA {left}")
    return f"progress {name}: " + ", ".join(parts)


def run_sweep(opts: SweepOptions) -> SweepOutcome | None:
    """Run the sweep to its end (None: a dry run, or --no-wait once submitted)."""
    planned = plan(opts.request)
    todo, skipped = _classify(planned, opts.force)
    if opts.dry_run:
        print(dry_run_text(opts, planned, todo, skipped))
        return None
    lc = opts.launch
    if todo:
        backend(lc.cluster).preflight()
    for name, why in skipped.items():
        print(f"skip {name}: {why}")
    attempt = 0
    t0 = time.time()
    while todo:
        if attempt:
            print(f"retry {attempt}/{opts.retries}: {' '.join(p.spec.name for p in todo)}", flush=True)
        since = time.time()
        launcher = _run_round(opts, todo, skipped, planned, clear=opts.force and attempt == 0)
        if opts.no_wait:
            print(f"{len(todo)} run(s) submitted; `varith status --runs-dir {opts.request.runs_dir}` follows")
            return None
        lines = _ProgressLines(todo, since)
        try:
            while True:  # one poll interval at a time, with the runs' progress in between
                launcher.wait(on_end=lambda h: _on_end(opts, h), poll_s=opts.poll_s, timeout_s=opts.poll_s)
                if not launcher.active:
                    break
                lines.report()
        except KeyboardInterrupt:
            if backend(lc.cluster).queued:
                print("interrupted: the jobs keep running; `varith status` follows them", file=sys.stderr)
            raise
        todo, skipped = _classify(planned, force=False)
        todo = [p for p in todo if not _not_retried(p)]  # the same request would fail again
        if not todo or attempt >= opts.retries:
            break
        attempt += 1
    rows = runs.resolve_runs([p.spec.run_dir for p in planned])
    return SweepOutcome(tuple(rows), time.time() - t0)
