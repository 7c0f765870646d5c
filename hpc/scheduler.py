"""What the scheduler says about a job: squeue, sacct, scancel, `scontrol ping`, process liveness, and
submitit's result pickle, and the one decision built on them, `job_fate`.

`Watcher` (one squeue per look, cached finished states, `job_fate` per job) is used by the sweep's polling
(hpc.launcher) and by `varith status`: a job is pending,
running, ended (with or without a result of its callable), lost (left the queue with neither a result nor an
accounting record), or unknown (squeue did not answer). A pending job that SLURM will never start (see
NEVER_STARTS) says so.

The parsers (`parse_squeue`, `parse_sacct`) take the text of `squeue -h -r --me -o %i|%T|%r` and of
`sacct -n -P -X -o JobID,State`, so the fate logic is tested on recorded outputs without SLURM.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from arith.errors import InputError

SQUEUE_CMD = ("squeue", "-h", "-r", "--me", "-o", "%i|%T|%r")
SACCT_CMD = ("sacct", "-n", "-P", "-X", "-o", "JobID,State")

# squeue states of a job that is still alive (anything else: look at sacct / the result pickle)
ACTIVE_STATES = frozenset(
    {
        "PENDING",
        "RUNNING",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "CONFIGURING",
        "COMPLETING",
        "RESIZING",
        "SUSPENDED",
        "STAGE_OUT",
        "SIGNALING",
        "PREEMPTED",
        "STOPPED",
        "RESV_DEL_HOLD",
    }
)
# squeue reasons of a pending job that will not start unless someone changes the job or the cluster
NEVER_STARTS = frozenset(
    {
        "PartitionConfig",
        "BadConstraints",
        "PartitionNodeLimit",
        "PartitionTimeLimit",
        "DependencyNeverSatisfied",
        "InvalidAccount",
        "InvalidQOS",
        "AccountNotAllowed",
        "QOSNotAllowed",
        "QOSMaxWallDurationPerJobLimit",
    }
)
FAILED_STATES = frozenset(
    {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "REVOKED"}
)


@dataclass(frozen=True)
class QueueEntry:
    """One squeue line: the job's state and squeue's reason (`None` for a running job)."""

    state: str
    reason: str = "None"

    @property
    def never_starts(self) -> bool:
        return self.state == "PENDING" and self.reason in NEVER_STARTS


@dataclass(frozen=True)
class JobResult:
    """submitit's result pickle: `ok` when the callable returned; else `error` is the traceback's last line."""

    ok: bool
    error: str | None = None


Phase = Literal["pending", "running", "ended", "lost", "unknown"]


@dataclass(frozen=True)
class Fate:
    """Where a job stands.

    - pending / running: still in the queue (or sacct says so); `never_starts` when SLURM will never start it
      (`reason` is squeue's reason)
    - ended: `result` is its callable's outcome, or None when it ended without one (`acct`: sacct's state)
    - lost: not in squeue, no result and no accounting state that says how it ended
    - unknown: squeue did not answer
    """

    phase: Phase
    reason: str | None = None
    never_starts: bool = False
    acct: str | None = None
    result: JobResult | None = None


def job_fate(
    job_id: str,
    queue: Mapping[str, QueueEntry] | None,
    acct: Mapping[str, str] | None,
    result: JobResult | None,
) -> Fate:
    """The fate of `job_id` from squeue's entries (None: squeue unavailable), sacct's states (None: no
    accounting) and its result pickle (None: none written)."""
    state = (acct or {}).get(job_id)
    if result is not None:
        return Fate("ended", acct=state, result=result)
    if queue is None:
        return Fate("unknown", reason="squeue unavailable")
    entry = queue.get(job_id)
    if entry is not None:
        if entry.never_starts:
            return Fate("pending", reason=entry.reason, never_starts=True)
        if entry.state in ("RUNNING", "COMPLETING"):
            return Fate("running")
        return Fate("pending", reason=None if entry.state == "PENDING" else entry.state)
    if state in FAILED_STATES or state == "COMPLETED":
        return Fate("ended", acct=state)
    if state in ACTIVE_STATES:
        return Fate("running" if state == "RUNNING" else "pending", reason=f"sacct: {state}", acct=state)
    return Fate("lost", acct=state)


# ------------------------------------------------------------------------------------------------ parsing


def parse_squeue(text: str) -> dict[str, QueueEntry]:
    """`%i|%T|%r` lines -> {job id: QueueEntry} (array tasks as `123_4`)."""
    out: dict[str, QueueEntry] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.strip().split("|")]
        if len(parts) >= 2 and parts[0]:
            out[parts[0]] = QueueEntry(parts[1], parts[2] if len(parts) > 2 else "None")
    return out


def parse_sacct(text: str) -> dict[str, str]:
    """`JobID|State` lines -> {job id: state}; "CANCELLED by 0" -> CANCELLED."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if "|" not in line:
            continue
        jid, state = line.strip().split("|", 1)
        out[jid] = state.split()[0] if state.strip() else "UNKNOWN"
    return out


# ------------------------------------------------------------------------------------------------ queries


def _run(cmd: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _first_line(text: str | None) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def check_controller(timeout: float = 30) -> None:
    """Raise InputError (one line) unless sbatch is installed and the SLURM controller answers."""
    for tool in ("sbatch", "squeue", "scontrol"):
        if shutil.which(tool) is None:
            raise InputError(f"{tool} not found: this is not a SLURM machine (use --cluster local or debug)")
    r = _run(["scontrol", "ping"], timeout=timeout)
    if r is None:
        raise InputError(f"SLURM controller not reachable: `scontrol ping` gave no answer within {timeout:.0f}s")
    out = (r.stdout or "") + (r.stderr or "")
    if r.returncode != 0 or not re.search(r"\bUP\b", out):
        reason = _first_line(r.stderr) or _first_line(r.stdout) or f"exit status {r.returncode}"
        raise InputError(f"SLURM controller not reachable: {reason}")


def queue(job_ids: Sequence[str] | None = None) -> dict[str, QueueEntry] | None:
    """This user's jobs in squeue (only `job_ids` when given); None when squeue fails."""
    if shutil.which("squeue") is None:
        return None
    r = _run(SQUEUE_CMD)
    if r is None or r.returncode != 0:
        return None
    entries = parse_squeue(r.stdout)
    if job_ids is not None:
        wanted = set(job_ids)
        entries = {k: v for k, v in entries.items() if k in wanted}
    return entries


def accounting(job_ids: Sequence[str]) -> dict[str, str] | None:
    """sacct states ({job id: state}, e.g. FAILED, COMPLETED, CANCELLED); None when accounting is
    unavailable."""
    if not job_ids:
        return {}
    if shutil.which("sacct") is None:
        return None
    cmd = list(SACCT_CMD)
    for jid in sorted(set(job_ids)):
        cmd += ["-j", jid]
    r = _run(cmd)
    if r is None or r.returncode != 0:
        return None
    return parse_sacct(r.stdout)


class Watcher:
    """The one way to follow SLURM jobs (the sweep's polling and `varith status`): each `look` asks squeue once
    for every job, sacct only for those gone from the queue, and remembers finished accounting states (they never
    change again), so a long sweep does not ask sacct about the same finished job at every poll."""

    def __init__(self) -> None:
        self._finished: dict[str, str] = {}
        self.answered = True  # did squeue answer at the last look

    def look(self, results: Mapping[str, JobResult | None]) -> dict[str, Fate]:
        """The fate of each job id of `results` (its result pickle, or None when none was written)."""
        unsure = [j for j, r in results.items() if r is None]
        entries = queue() if unsure else {}
        self.answered = entries is not None
        gone = [j for j in unsure if entries is not None and j not in entries and j not in self._finished]
        states = accounting(gone) if gone else {}
        for job_id, state in (states or {}).items():
            if state in FAILED_STATES or state == "COMPLETED":
                self._finished[job_id] = state
        known = {**(states or {}), **self._finished}
        return {j: job_fate(j, entries, known, r) for j, r in results.items()}


def cancel(job_id: str) -> None:
    _run(["scancel", job_id])


def pid_alive(pid: int | None) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


# ------------------------------------------------------------------------------------------------ results


def read_result(path: str | Path) -> JobResult | None:
    """submitit's result pickle, a pickled ("success" | "error", value) tuple; None when there is none."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with path.open("rb") as f:
            outcome, value = pickle.load(f)
    except Exception:  # unreadable or not unpicklable here: it ended, but we cannot say how
        return JobResult(False, "unreadable result")
    if outcome == "error":
        lines = [ln for ln in str(value).splitlines() if ln.strip()]
        return JobResult(False, lines[-1].strip() if lines else "job raised")
    return JobResult(True)


def result_path_for_log(stdout: str | Path | None) -> Path | None:
    """`<folder>/<job>_<task>_log.out` -> `<folder>/<job>_<task>_result.pkl` (submitit's names)."""
    if not stdout:
        return None
    out = Path(stdout)
    if not out.name.endswith("_log.out"):
        return None
    return out.with_name(out.name[: -len("_log.out")] + "_result.pkl")
