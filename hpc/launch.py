"""Where training jobs run: submitit executors for `slurm`, `local` and `debug`, SLURM profiles, job arrays,
dependencies, a concurrency cap for the local backend, and the scheduler queries behind `varith status`.

- `slurm`: submitit's SlurmExecutor through `AutoExecutor(cluster="slurm")`. Runs without dependencies go
  out as one job array (`executor.batch()`), capped by `array_parallelism` (`%N` in `--array`); runs that
  need another run first (ins* models and their addition model) go out as arrays with
  `--dependency=afterok:<ids>` and `--kill-on-invalid-dep=yes`, so a failed dependency cancels them instead
  of leaving them pending forever. Multi-GPU: `tasks_per_node = gpus_per_node`, one task per GPU; on CPU
  nodes `tasks_per_node` gives gloo DDP.
- `local`: submitit's LocalExecutor (one controller process per job). It has no queue of its own, so the
  `Launcher` keeps at most `max_parallel` jobs alive (default: the machine's cores divided by the cores a
  job uses).
- `debug`: submitit's DebugExecutor, in-process and one job at a time (tests, breakpoints).

`render_sbatch` returns exactly the text submitit would submit (it calls submitit's own renderer with the same
parameters the executor gets), so `--dry-run` needs neither `srun` nor a controller.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from arith.errors import InputError
from hpc.profile import check_keys, read_toml

BACKENDS = ("slurm", "local", "debug")
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # the local backend has no wall-time limit unless one is asked for

# keys a profile file must set / may set ([slurm] table or top level)
PROFILE_REQUIRED = ("partition", "time", "mem", "cpus_per_task", "gpus_per_node")
PROFILE_OPTIONAL = (
    "account",
    "qos",
    "tasks_per_node",
    "nodes",
    "array_parallelism",
    "max_num_timeout",
    "signal_delay_s",
    "extra_sbatch",
    "setup",
)

# squeue states of a job that is still alive (anything else: look at sacct / the result pickle)
ACTIVE_STATES = {
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
# squeue reasons of a pending job that will not start unless someone changes the job or the cluster
NEVER_STARTS = {
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
FAILED_STATES = {
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "REVOKED",
}


# ------------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class SlurmSettings:
    """What goes into `#SBATCH` lines. `time_min` in minutes, `mem_gb` per node. With GPUs, one task per GPU
    (`tasks_per_node` is then `gpus_per_node`); without, `tasks_per_node` CPU ranks (gloo DDP when > 1)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 60
    mem_gb: float = 4.0
    cpus_per_task: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int = 1
    nodes: int = 1
    array_parallelism: int = 256
    max_num_timeout: int = 3
    signal_delay_s: int = 90
    extra_sbatch: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("time_min", "cpus_per_task", "tasks_per_node", "nodes", "array_parallelism"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"slurm setting {name} must be a positive whole number, got {v!r}")
        for name in ("gpus_per_node", "max_num_timeout", "signal_delay_s"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise InputError(f"slurm setting {name} must be a whole number >= 0, got {v!r}")
        if not isinstance(self.mem_gb, int | float) or self.mem_gb <= 0:
            raise InputError(f"slurm setting mem must be positive, got {self.mem_gb!r}")
        if self.gpus_per_node and self.tasks_per_node not in (1, self.gpus_per_node):
            raise InputError(
                f"tasks_per_node {self.tasks_per_node} with gpus_per_node {self.gpus_per_node}: "
                "with GPUs it is one task per GPU (leave tasks_per_node out)"
            )
        for line in self.extra_sbatch:
            _parse_sbatch_line(line)

    @property
    def ntasks_per_node(self) -> int:
        return self.gpus_per_node if self.gpus_per_node else self.tasks_per_node

    @property
    def world_size(self) -> int:
        return self.ntasks_per_node * self.nodes

    def sbatch_parameters(self, job_name: str, dependency: str | None = None) -> dict[str, Any]:
        """submitit SlurmExecutor parameters (its native names), the same for rendering and for submitting."""
        extra = dict(_parse_sbatch_line(line) for line in self.extra_sbatch)
        if dependency:
            extra["dependency"] = dependency
            extra["kill-on-invalid-dep"] = "yes"
        params: dict[str, Any] = {
            "job_name": job_name,
            "time": self.time_min,
            "mem": _mem_text(self.mem_gb),
            "nodes": self.nodes,
            "ntasks_per_node": self.ntasks_per_node,
            "cpus_per_task": self.cpus_per_task,
            "array_parallelism": self.array_parallelism,
            "signal_delay_s": self.signal_delay_s,
        }
        if self.partition:
            params["partition"] = self.partition
        if self.account:
            params["account"] = self.account
        if self.qos:
            params["qos"] = self.qos
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        if self.setup:
            params["setup"] = list(self.setup)
        if extra:
            params["additional_parameters"] = extra
        return params


def _mem_text(mem_gb: float) -> str:
    # submitit's own conversion (slurm._convert_mem)
    return f"{int(mem_gb)}GB" if mem_gb == int(mem_gb) else f"{int(mem_gb * 1024)}MB"


def _parse_sbatch_line(line: str) -> tuple[str, Any]:
    """`--constraint=a100`, `--exclusive`, `#SBATCH --mail-type END` -> (key, value); short options are
    refused."""
    text = str(line).strip()
    if text.startswith("#SBATCH"):
        text = text[len("#SBATCH") :].strip()
    if not text.startswith("--") or len(text) < 3:
        raise InputError(f"extra sbatch line {line!r}: use the long form, e.g. --constraint=a100")
    body = text[2:]
    if "=" in body:
        key, value = body.split("=", 1)
    elif " " in body:
        key, value = body.split(None, 1)
    else:
        key, value = body, True
    key = key.strip()
    if not re.fullmatch(r"[a-z][a-z0-9-]*", key):
        raise InputError(f"extra sbatch line {line!r}: {key!r} is not an sbatch option name")
    return key, value.strip() if isinstance(value, str) else value


def parse_time_min(value: Any) -> int:
    """Minutes from an int, or sbatch's forms `MM`, `HH:MM:SS`, `D-HH:MM:SS`, `D-HH`."""
    if isinstance(value, bool):
        raise InputError(f"time {value!r}: expected minutes or HH:MM:SS")
    if isinstance(value, int):
        minutes = value
    else:
        text = str(value).strip()
        m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
        if not m:
            raise InputError(f"time {value!r}: expected minutes or HH:MM:SS (or D-HH:MM:SS)")
        days, a, b, c = m.groups()
        if days is None and b is None:  # "MM"
            minutes = int(a)
        elif days is not None and b is None:  # "D-HH"
            minutes = int(days) * 1440 + int(a) * 60
        else:
            if c is None:  # "HH:MM" with a day, "MM:SS" without (sbatch's rule)
                h, mi, s = (int(a), int(b), 0) if days is not None else (0, int(a), int(b))
            else:
                h, mi, s = int(a), int(b), int(c)
            minutes = int(days or 0) * 1440 + h * 60 + mi + (1 if s else 0)
    if minutes < 1:
        raise InputError(f"time {value!r}: must be at least one minute")
    return minutes


def parse_mem_gb(value: Any) -> float:
    """GB from a number (GB) or text like `16G`, `16GB`, `4000M`, `1T`."""
    if isinstance(value, bool):
        raise InputError(f"mem {value!r}: expected e.g. 16G")
    if isinstance(value, int | float):
        gb = float(value)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", str(value), flags=re.IGNORECASE)
        if not m:
            raise InputError(f"mem {value!r}: expected e.g. 16G, 4000M or a number of GB")
        scale = {"": 1.0, "K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "T": 1024.0}[m.group(2).upper()]
        gb = float(m.group(1)) * scale
    if gb <= 0:
        raise InputError(f"mem {value!r}: must be positive")
    return gb


def _settings_kwargs(raw: dict, where: str) -> dict[str, Any]:
    """Profile/TOML keys -> SlurmSettings fields (time -> time_min, mem -> mem_gb), checked."""
    check_keys(raw, set(PROFILE_REQUIRED) | set(PROFILE_OPTIONAL), where)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "time":
            out["time_min"] = parse_time_min(value)
        elif key == "mem":
            out["mem_gb"] = parse_mem_gb(value)
        elif key in ("extra_sbatch", "setup"):
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise InputError(f"{where}: {key} must be a list of strings")
            out[key] = tuple(value)
        elif key in ("partition", "account", "qos"):
            if not isinstance(value, str):
                raise InputError(f"{where}: {key} must be a string")
            out[key] = value or None
        else:
            if not isinstance(value, int) or isinstance(value, bool):
                raise InputError(f"{where}: {key} must be a whole number, got {value!r}")
            out[key] = value
    return out


def load_profile(path: str | Path) -> SlurmSettings:
    """A TOML profile: a `[slurm]` table (or top-level keys) with at least partition, time, mem,
    cpus_per_task and gpus_per_node. Missing or unknown keys raise InputError naming them."""
    data = read_toml(path, "profile")
    return profile_from_dict(data.get("slurm", data) if isinstance(data.get("slurm"), dict) else data, str(path))


def profile_from_dict(raw: dict, where: str = "profile") -> SlurmSettings:
    missing = [k for k in PROFILE_REQUIRED if k not in raw]
    if missing:
        raise InputError(
            f"{where}: missing key(s) {', '.join(missing)} (a profile needs {', '.join(PROFILE_REQUIRED)})"
        )
    return SlurmSettings(**_settings_kwargs(raw, where))


def override_settings(settings: SlurmSettings, **overrides: Any) -> SlurmSettings:
    """CLI overrides in profile vocabulary (time, mem, ... ; None = keep; extra_sbatch/setup lines are
    appended)."""
    raw = {k: v for k, v in overrides.items() if v is not None}
    kw = _settings_kwargs(raw, "command line")
    for key in ("extra_sbatch", "setup"):
        if key in kw:
            kw[key] = getattr(settings, key) + kw[key]
    return replace(settings, **kw)


# ------------------------------------------------------------------------------------------------ executors


@dataclass(frozen=True)
class LaunchConfig:
    """Everything needed to build an executor. `folder` is submitit's log/pickle folder (contains `%j`)."""

    cluster: str
    folder: Path
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    max_parallel: int | None = None  # slurm: array cap (overrides slurm.array_parallelism); local: live jobs
    timeout_min: int | None = None  # local backend wall time (default: none to speak of)
    job_name: str = "varith"

    def __post_init__(self):
        if self.cluster not in BACKENDS:
            raise InputError(f"unknown cluster {self.cluster!r} (expected {', '.join(BACKENDS)})")
        if self.max_parallel is not None and self.max_parallel < 1:
            raise InputError(f"max parallel must be at least 1, got {self.max_parallel}")
        if self.cluster == "local" and self.slurm.nodes > 1:
            raise InputError("the local backend runs on one node (nodes must be 1)")

    @property
    def effective_slurm(self) -> SlurmSettings:
        if self.max_parallel is None:
            return self.slurm
        return replace(self.slurm, array_parallelism=self.max_parallel)

    @property
    def local_slots(self) -> int:
        """How many local jobs may run at once: the cap, or the machine's cores over the cores one job
        uses."""
        if self.max_parallel is not None:
            return self.max_parallel
        per_job = self.slurm.ntasks_per_node * self.slurm.cpus_per_task
        return max(1, (os.cpu_count() or 1) // per_job)


def resolve_cluster(name: str | None) -> str:
    """`auto`/None -> slurm where `sbatch` is on PATH, else local."""
    if name in (None, "", "auto"):
        return "slurm" if shutil.which("sbatch") else "local"
    if name not in BACKENDS:
        raise InputError(f"unknown cluster {name!r} (expected auto, {', '.join(BACKENDS)})")
    return name


def submitit_command(folder: str | Path) -> str:
    """The command line submitit runs inside an sbatch script (SlurmExecutor._submitit_command_str)."""
    return " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])


def _abs_folder(folder: str | Path) -> Path:
    return Path(folder).expanduser().absolute()


def render_sbatch(cfg: LaunchConfig, n_jobs: int, dependency: str | None = None, job_name: str | None = None) -> str:
    """The sbatch script submitit would submit for `n_jobs` jobs (an array when n_jobs > 1). Needs no
    cluster."""
    from submitit.slurm.slurm import _make_sbatch_string

    if n_jobs < 1:
        raise ValueError("n_jobs must be >= 1")
    folder = _abs_folder(cfg.folder)
    params = cfg.effective_slurm.sbatch_parameters(job_name or cfg.job_name, dependency)
    return _make_sbatch_string(
        command=submitit_command(folder), folder=folder, map_count=n_jobs if n_jobs > 1 else None, **params
    )


def make_executor(cfg: LaunchConfig, dependency: str | None = None, job_name: str | None = None):
    """A submitit AutoExecutor for cfg.cluster with cfg's settings (and an afterok dependency on slurm)."""
    import submitit

    s = cfg.effective_slurm
    if cfg.cluster == "slurm":
        ex = submitit.AutoExecutor(folder=cfg.folder, cluster="slurm", slurm_max_num_timeout=s.max_num_timeout)
        params = s.sbatch_parameters(job_name or cfg.job_name, dependency)
        ex.update_parameters(**{f"slurm_{k}": v for k, v in params.items()})
    elif cfg.cluster == "local":
        ex = submitit.AutoExecutor(folder=cfg.folder, cluster="local", local_max_num_timeout=s.max_num_timeout)
        ex.update_parameters(
            timeout_min=cfg.timeout_min or LOCAL_TIMEOUT_MIN,
            tasks_per_node=s.ntasks_per_node,
            gpus_per_node=s.gpus_per_node,
            cpus_per_task=s.cpus_per_task,
            name=job_name or cfg.job_name,
        )
    else:
        ex = submitit.AutoExecutor(folder=cfg.folder, cluster="debug")
        ex.update_parameters(name=job_name or cfg.job_name)
    return ex


# ------------------------------------------------------------------------------------------ slurm queries


def _run(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _first_line(text: str) -> str:
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


def queue_states(job_ids: Sequence[str] | None = None) -> dict[str, str] | None:
    """squeue states of this user's jobs ({job id: state}, array tasks as `123_4`); None when squeue fails.
    A pending job that SLURM will never start (see NEVER_STARTS) reads `PENDING:<reason>`."""
    if shutil.which("squeue") is None:
        return None
    r = _run(["squeue", "-h", "-r", "--me", "-o", "%i|%T|%r"])
    if r is None or r.returncode != 0:
        return None
    states: dict[str, str] = {}
    for line in r.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 2:
            state = parts[1].strip()
            reason = parts[2].strip() if len(parts) > 2 else ""
            if state == "PENDING" and reason in NEVER_STARTS:
                state = f"PENDING:{reason}"
            states[parts[0]] = state
    if job_ids is not None:
        wanted = set(job_ids)
        states = {k: v for k, v in states.items() if k in wanted}
    return states


def accounting_states(job_ids: Sequence[str]) -> dict[str, str] | None:
    """sacct states ({job id: state}, e.g. FAILED, COMPLETED, CANCELLED); None when accounting is
    unavailable."""
    if not job_ids:
        return {}
    if shutil.which("sacct") is None:
        return None
    cmd = ["sacct", "-n", "-P", "-X", "-o", "JobID,State"]
    for jid in sorted(set(job_ids)):
        cmd += ["-j", jid]
    r = _run(cmd)
    if r is None or r.returncode != 0:
        return None
    states: dict[str, str] = {}
    for line in r.stdout.splitlines():
        if "|" not in line:
            continue
        jid, state = line.strip().split("|", 1)
        states[jid] = state.split()[0] if state.strip() else "UNKNOWN"  # "CANCELLED by 0" -> CANCELLED
    return states


# ------------------------------------------------------------------------------------------------ launcher


@dataclass(frozen=True)
class Task:
    """One unit of work. `after`: keys of tasks (or of runs started elsewhere) that must succeed first;
    `after_jobs`: slurm job ids it must wait for (afterok) besides those."""

    key: str
    fn: Callable[[], Any]
    after: tuple[str, ...] = ()
    after_jobs: tuple[str, ...] = ()


@dataclass
class Handle:
    """A task's submission. `end` says why it ended when it ended without a result from the callable."""

    key: str
    job: Any = None
    job_id: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    submitted_at: float | None = None
    finished: bool = False
    end: str | None = None

    def error(self) -> str | None:
        """The last line of the job's traceback when the callable raised (from submitit's result pickle)."""
        if self.job is None or self.job_id is None:
            return self.end
        try:
            from submitit.core.utils import pickle_load

            p = _result_pickle(self.job)
            if p.exists():
                outcome, value = pickle_load(p)
                if outcome == "error":
                    lines = [ln for ln in str(value).splitlines() if ln.strip()]
                    return lines[-1].strip() if lines else "job raised"
        except Exception:  # unreadable result: fall back to the scheduler's word
            pass
        return self.end


def _result_pickle(job) -> Path:
    return job.task(0).paths.result_pickle if job.num_tasks > 1 else job.paths.result_pickle


def slurm_groups(tasks: Sequence[Task]) -> list[tuple[list[Task], tuple[str, ...], tuple[str, ...]]]:
    """How tasks go out on slurm: [(array of tasks, keys of earlier groups they wait for, external job ids)].
    Tasks waiting for the same things share one array; a group comes after every group it depends on."""
    keys = {t.key for t in tasks}
    placed: set[str] = set()
    pending = list(tasks)
    out: list[tuple[list[Task], tuple[str, ...], tuple[str, ...]]] = []
    while pending:
        ready = [t for t in pending if all(d not in keys or d in placed for d in t.after)]
        if not ready:
            raise ValueError("dependency cycle among tasks: " + ", ".join(t.key for t in pending))
        groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[Task]] = {}
        for t in ready:
            dep = (tuple(sorted({d for d in t.after if d in keys})), tuple(sorted(set(t.after_jobs))))
            groups.setdefault(dep, []).append(t)
        for (dep_keys, dep_jobs), group in groups.items():
            out.append((group, dep_keys, dep_jobs))
        placed.update(t.key for t in ready)
        pending = [t for t in pending if t.key not in placed]
    return out


class Launcher:
    """Submits tasks on one backend and tells when each ends.

    before_submit(key) runs just before a task is handed to submitit, after_submit(handle) just after;
    dep_state(key) -> "ok" | "failed" | "wait" judges a finished dependency (local/debug gate on it; slurm
    uses afterok). `poll()` starts what may start and returns the handles that ended since the last poll.
    """

    def __init__(
        self,
        cfg: LaunchConfig,
        before_submit: Callable[[str], None] | None = None,
        after_submit: Callable[[Handle], None] | None = None,
        dep_state: Callable[[str], str] | None = None,
    ):
        self.cfg = cfg
        self._before = before_submit or (lambda key: None)
        self._after = after_submit or (lambda handle: None)
        self._dep_state = dep_state or (lambda key: "ok")
        self.handles: dict[str, Handle] = {}
        self._queue: list[Task] = []  # local/debug: not yet started
        self._missing_since: dict[str, float] = {}
        self._queue_down_since = 0.0
        self._warned_at = 0.0

    # -- submission
    def submit(self, tasks: Sequence[Task]) -> list[Handle]:
        keys = [t.key for t in tasks]
        if len(set(keys)) != len(keys):
            raise ValueError("task keys must be unique")
        for t in tasks:
            self.handles[t.key] = Handle(t.key)
        if self.cfg.cluster == "slurm":
            self._submit_slurm(list(tasks))
        else:
            self._queue.extend(tasks)
            self._start_ready()
        return [self.handles[k] for k in keys]

    def _submit_group(self, group: Sequence[Task], dependency: str | None) -> None:
        name = group[0].key if len(group) == 1 else f"{self.cfg.job_name}_x{len(group)}"
        ex = make_executor(self.cfg, dependency=dependency, job_name=name)
        for t in group:
            self._before(t.key)
        now = time.time()
        if len(group) == 1:
            jobs = [ex.submit(group[0].fn)]
        else:
            with ex.batch():
                jobs = [ex.submit(t.fn) for t in group]
        for t, job in zip(group, jobs, strict=True):
            h = self.handles[t.key]
            h.job, h.job_id, h.submitted_at = job, str(job.job_id), now
            first = job.task(0) if job.num_tasks > 1 else job
            h.stdout, h.stderr = str(first.paths.stdout), str(first.paths.stderr)
            self._after(h)

    def _submit_slurm(self, tasks: list[Task]) -> None:
        for group, dep_keys, dep_jobs in slurm_groups(tasks):
            ids = sorted({self.handles[k].job_id for k in dep_keys} | set(dep_jobs))
            self._submit_group(group, "afterok:" + ":".join(ids) if ids else None)

    def _running(self) -> list[Handle]:
        return [h for h in self.handles.values() if h.job is not None and not h.finished]

    def _start_ready(self) -> None:
        """local/debug: start queued tasks whose dependencies succeeded, within the concurrency cap."""
        slots = self.cfg.local_slots if self.cfg.cluster == "local" else 1
        progressed = True
        while progressed:
            progressed = False
            for t in list(self._queue):
                states = [self._dep_of(d) for d in t.after]
                if "failed" in states:
                    self._queue.remove(t)
                    h = self.handles[t.key]
                    h.finished, h.end = (
                        True,
                        "dependency failed: "
                        + ", ".join(d for d, s in zip(t.after, states, strict=True) if s == "failed"),
                    )
                    progressed = True
                    continue
                if any(s != "ok" for s in states):
                    continue
                if self.cfg.cluster == "debug":
                    if self._running():
                        return
                elif len(self._running()) >= slots:
                    return
                self._queue.remove(t)
                self._submit_group([t], None)
                progressed = True

    def _dep_of(self, key: str) -> str:
        h = self.handles.get(key)
        if h is not None and not h.finished:
            return "wait"
        return self._dep_state(key)

    # -- progress
    @property
    def active(self) -> bool:
        return bool(self._queue) or bool(self._running())

    def poll(self) -> list[Handle]:
        ended: list[Handle] = []
        running = self._running()
        if self.cfg.cluster == "debug":
            for h in running:
                h.job.done()  # runs the job in this process
                h.finished = True
                ended.append(h)
                break
        elif self.cfg.cluster == "local":
            for h in running:
                if h.job.done():
                    h.finished = True
                    if not _result_pickle(h.job).exists():
                        h.end = f"local job {h.job_id} ended without a result ({h.job.state})"
                    ended.append(h)
        else:
            ended = self._poll_slurm(running)
        if self._queue:
            already = {h.key for h in self.handles.values() if h.finished}
            self._start_ready()
            ended += [h for h in self.handles.values() if h.finished and h.key not in already and h.job is None]
        return ended

    def _poll_slurm(self, running: list[Handle]) -> list[Handle]:
        ended: list[Handle] = []
        unsure = []
        for h in running:
            if _result_pickle(h.job).exists():
                h.finished = True
                ended.append(h)
            else:
                unsure.append(h)
        if not unsure:
            return ended
        queue = queue_states()
        if queue is None:  # controller or squeue down: keep waiting, but say so once a minute
            now = time.time()
            self._queue_down_since = self._queue_down_since or now
            if now - self._queue_down_since > 60 and now - self._warned_at > 60:
                self._warned_at = now
                down = now - self._queue_down_since
                print(f"squeue has not answered for {down:.0f}s; still waiting", file=sys.stderr, flush=True)
        else:
            self._queue_down_since = 0.0
        for h in unsure:
            q = (queue or {}).get(h.job_id, "")
            if q.startswith("PENDING:"):  # it would wait forever: cancel it and say why
                _run(["scancel", h.job_id])
                reason = q.split(":", 1)[1]
                h.finished, h.end = True, f"slurm will never start job {h.job_id} ({reason}); cancelled it"
                ended.append(h)
        gone = [h for h in unsure if not h.finished and queue is not None and h.job_id not in queue]
        acct = accounting_states([h.job_id for h in gone]) if gone else {}
        now = time.time()
        for h in gone:
            state = (acct or {}).get(h.job_id)
            if state in FAILED_STATES or state == "COMPLETED":
                if _result_pickle(h.job).exists():  # finished between the two looks
                    h.finished = True
                    ended.append(h)
                    continue
                h.finished, h.end = True, f"slurm job {h.job_id} ended {state} without a result"
                ended.append(h)
            elif state is None:
                # not in squeue, no accounting record: a short grace for the result file, then it is dead
                first = self._missing_since.setdefault(h.job_id, now)
                if now - first > 20:
                    h.finished, h.end = True, f"slurm job {h.job_id} left the queue without a result"
                    ended.append(h)
        return ended

    def wait(
        self,
        on_end: Callable[[Handle], None] | None = None,
        poll_s: float = 5.0,
        timeout_s: float | None = None,
    ) -> dict[str, Handle]:
        """Poll until every task ended (or timeout_s passed); on_end(handle) for each as it ends."""
        start = time.time()
        while True:
            for h in self.poll():
                if on_end:
                    on_end(h)
            if not self.active:
                return self.handles
            if timeout_s is not None and time.time() - start > timeout_s:
                return self.handles
            if self.cfg.cluster != "debug":
                time.sleep(poll_s)
