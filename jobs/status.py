"""`varith status`: one line per run under runs/: state, job id, step, last loss, log path.

The run's marker (`runs/<name>/state.json`) speaks first; the scheduler second. A run whose marker says
submitted or running is checked against squeue (still queued/running?) and then sacct (FAILED, CANCELLED,
TIMEOUT...); a job that left the queue without marking its run done shows as failed (also without
accounting: no result, not in squeue). On the local and debug backends the process recorded in the marker is
checked instead. A crash never shows as a hang.

States shown: pending (queued or requeued), running, done, failed, stale (marked done but its artifacts no
longer match the manifest). `--json` prints one JSON object per run instead of the table.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from arith.errors import InputError
from hpc import launch, markers

HELP = "Show the state of every run under runs/ (markers first, then squeue/sacct)."


@dataclass(frozen=True)
class RunStatus:
    name: str
    state: str
    job_id: str | None
    step: int | None
    steps: int | None
    loss: float | None
    log: str | None
    detail: str | None
    attempts: int
    cluster: str | None


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped by its parent) is not alive
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _result_error(marker: markers.Marker) -> str | None:
    """What submitit's result pickle says for a job that left the queue (None: no result pickle)."""
    if not marker.stdout:
        return None
    out = Path(marker.stdout)
    # <folder>/<job>_<task>_log.out -> <folder>/<job>_<task>_result.pkl
    if not out.name.endswith("_log.out"):
        return None
    pkl = out.with_name(out.name[: -len("_log.out")] + "_result.pkl")
    if not pkl.exists():
        return None
    try:
        from submitit.core.utils import pickle_load

        outcome, value = pickle_load(pkl)
    except Exception:
        return "unreadable result"
    if outcome == "error":
        lines = [ln for ln in str(value).splitlines() if ln.strip()]
        return lines[-1].strip() if lines else "job raised"
    return "job returned without marking the run done"


def resolve(run_dir: Path, queue: dict[str, str] | None, acct: dict[str, str] | None) -> RunStatus:
    """The effective state of one run from its marker, artifacts and the scheduler's answers.

    queue: squeue states by job id (None: squeue unavailable); acct: sacct states by job id (None: no
    accounting).
    """
    run_dir = Path(run_dir)
    m = markers.read_marker(run_dir)
    progress = markers.read_progress(run_dir) or {}
    step, steps, loss = progress.get("step"), progress.get("steps"), progress.get("loss")
    if m is None:
        problem = markers.artifacts_problem(run_dir)
        state = "done" if problem is None else "stale"
        return RunStatus(run_dir.name, state, None, step, steps, loss, None, problem, 0, None)

    state, detail = m.state, m.error
    if m.state == "done":
        if m.steps_done is not None:
            step = m.steps_done
            steps = steps or m.steps_done
        loss = m.final_loss if m.final_loss is not None else loss
        problem = markers.artifacts_problem(run_dir)
        if problem is not None:
            state, detail = "stale", problem
    elif m.state in ("submitted", "running"):
        state, detail = _live_state(m, queue, acct, run_dir)
    return RunStatus(run_dir.name, state, m.job_id, step, steps, loss, m.stdout, detail, m.attempts, m.cluster)


def _live_state(m: markers.Marker, queue, acct, run_dir: Path) -> tuple[str, str | None]:
    """submitted/running marker -> pending | running | done | failed, with a reason."""
    here = socket.gethostname()
    if m.cluster == "slurm":
        if not m.job_id:
            return ("pending", "being submitted")
        if queue is None:
            return (
                m.state if m.state == "running" else "pending",
                "squeue unavailable: state from the marker only",
            )
        q = queue.get(m.job_id)
        if q is not None:
            if q in ("RUNNING", "COMPLETING"):
                return ("running", None)
            if q.startswith("PENDING:"):
                return ("pending", f"{q.split(':', 1)[1]}: SLURM will never start it; scancel {m.job_id}")
            return ("pending", q if q != "PENDING" else None)
        a = (acct or {}).get(m.job_id)
        # left the queue: finished one way or another, and the job did not mark its run done
        latest = markers.read_marker(run_dir)  # it may have finished since we first read the marker
        if latest is not None and latest.state in ("done", "failed"):
            return (
                latest.state if markers.artifacts_ok(run_dir) or latest.state == "failed" else "stale",
                latest.error,
            )
        if a in launch.FAILED_STATES:
            return ("failed", f"sacct: {a}" + (f"; {e}" if (e := _result_error(m)) else ""))
        if a == "COMPLETED":
            return ("failed", "sacct: COMPLETED but the run was not marked done")
        if a is not None and a in launch.ACTIVE_STATES:
            return ("running" if a == "RUNNING" else "pending", f"sacct: {a}")
        err = _result_error(m)
        return ("failed", f"not in squeue; {err}" if err else "not in squeue and no result (job crashed)")
    # local / debug: the process recorded in the marker (or the local job's controller)
    if m.host and m.host != here:
        return (m.state if m.state == "running" else "pending", f"on {m.host}: cannot check from {here}")
    if m.state == "running":
        if _pid_alive(m.pid):
            return ("running", None)
        return ("failed", f"process {m.pid} is gone (crashed or killed)")
    if m.cluster == "local" and m.job_id and m.job_id.isdigit():
        if _pid_alive(int(m.job_id)):
            return ("pending", "starting")
        return ("failed", f"local job {m.job_id} is gone before it started")
    if m.driver_host == here and m.driver_pid and not _pid_alive(m.driver_pid):
        return ("failed", f"sweep driver {m.driver_pid} is gone before the job started")
    return ("pending", "queued by the sweep driver")


def resolve_one(run_dir: str | Path) -> RunStatus:
    """resolve() for one run, asking squeue/sacct only when its marker names a live slurm job."""
    return resolve_runs([Path(run_dir)])[0]


def collect(runs_dir: str | Path) -> list[RunStatus]:
    """The status of every run under runs_dir (one squeue and at most one sacct call in all)."""
    return resolve_runs(markers.run_dirs(Path(runs_dir)))


def resolve_runs(dirs: list[Path]) -> list[RunStatus]:
    """resolve() for each run dir, with one squeue and at most one sacct call for all of them."""
    live_slurm = []
    for d in dirs:
        m = markers.read_marker(d)
        if m is not None and m.cluster == "slurm" and m.state in ("submitted", "running") and m.job_id:
            live_slurm.append(m.job_id)
    queue = launch.queue_states() if live_slurm else {}
    gone = [j for j in live_slurm if queue is not None and j not in queue]
    acct = launch.accounting_states(gone) if gone else {}
    return [resolve(d, queue, acct) for d in dirs]


def _fmt_loss(loss) -> str:
    return "-" if loss is None else f"{float(loss):.3g}"


def _fmt_step(s: RunStatus) -> str:
    if s.step is None:
        return "-"
    return f"{s.step}/{s.steps}" if s.steps else str(s.step)


def format_table(rows: list[RunStatus]) -> str:
    header = ("run", "state", "job", "step", "loss", "log")
    lines = [header]
    for s in rows:
        state = s.state + (f" ({s.detail})" if s.detail and s.state in ("failed", "stale", "pending") else "")
        lines.append((s.name, state, s.job_id or "-", _fmt_step(s), _fmt_loss(s.loss), s.log or "-"))
    widths = [max(len(r[i]) for r in lines) for i in range(len(header) - 1)]
    out = []
    for r in lines:
        out.append("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1])
    return "\n".join(out)


def add_arguments(parser) -> None:
    parser.add_argument("--runs-dir", default="runs", help="folder holding one folder per run (default: runs)")
    parser.add_argument("--json", action="store_true", help="one JSON object per run instead of a table")


def run(args) -> int:
    runs_dir = Path(args.runs_dir)
    if runs_dir.exists() and not runs_dir.is_dir():
        raise InputError(f"runs dir {runs_dir} is not a folder")
    rows = collect(runs_dir)
    if args.json:
        for s in rows:
            print(json.dumps(asdict(s)))
        return 0
    if not rows:
        print(f"no runs under {runs_dir}")
        return 0
    print(format_table(rows))
    counts: dict[str, int] = {}
    for s in rows:
        counts[s.state] = counts.get(s.state, 0) + 1
    print(", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return 0
