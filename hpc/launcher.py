"""Where jobs run: a `Launcher` over one backend, each backend a class holding a submitit executor.

- `SlurmBackend`: submitit's SlurmExecutor through `AutoExecutor(cluster="slurm")`. Tasks without
  dependencies go out as one job array (`executor.batch()`), capped by `array_parallelism` (`%N` in
  `--array`); tasks that need others first go out as arrays with `--dependency=afterok:<ids>` and
  `--kill-on-invalid-dep=yes`, so a failed dependency cancels them instead of leaving them pending forever.
  Multi-GPU: one task per GPU; on CPU nodes `tasks_per_node` gives gloo DDP. Polling asks
  `hpc.scheduler.job_fate`; a job SLURM will never start is cancelled.
- `LocalBackend`: submitit's LocalExecutor (one controller process per job). It has no queue of its own, so
  the Launcher keeps at most `max_parallel` jobs alive (default: the machine's cores divided by the cores a
  job uses) and starts a task only once its dependencies succeeded.
- `DebugBackend`: submitit's DebugExecutor, in-process and one job at a time (tests, breakpoints).

`render_sbatch` returns exactly the text submitit would submit: the same executor as a real submission,
submitting through a stand-in `sbatch` (first on PATH) that records the script, in a scratch folder; the
scratch folder's path is then written as the real one. It needs neither SLURM nor the runs folder.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from arith.errors import InputError
from hpc import scheduler
from hpc.profile import SlurmSettings

LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # the local backend has no wall-time limit unless one is asked for
LOST_GRACE_S = 20.0  # a slurm job out of the queue without result or accounting: wait this long, then it is lost

DepState = Literal["ok", "failed", "wait"]


@dataclass(frozen=True)
class LaunchConfig:
    """Everything needed to build a backend. `folder` is submitit's log/pickle folder (contains `%j`)."""

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
        BACKENDS[self.cluster].check(self)

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


# ------------------------------------------------------------------------------------------------ tasks


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
    job: Any = None  # submitit.Job
    job_id: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    submitted_at: float | None = None
    finished: bool = False
    end: str | None = None
    never_started: bool = False  # the scheduler would never start it (cancelled): the same request never would

    @property
    def result_path(self) -> Path | None:
        if self.job is None:
            return None
        first = self.job.task(0) if self.job.num_tasks > 1 else self.job
        return Path(first.paths.result_pickle)

    def result(self) -> scheduler.JobResult | None:
        p = self.result_path
        return scheduler.read_result(p) if p is not None else None

    def error(self) -> str | None:
        """The last line of the job's traceback when the callable raised, else why it ended (or None)."""
        r = self.result()
        if r is not None and not r.ok and r.error != "unreadable result":
            return r.error
        return self.end


@dataclass(frozen=True)
class Group:
    """Tasks that go out together on slurm (one array): they wait for the same earlier tasks and jobs."""

    tasks: tuple[Task, ...]
    after: tuple[str, ...] = ()
    after_jobs: tuple[str, ...] = ()

    def job_name(self, base: str) -> str:
        return self.tasks[0].key if len(self.tasks) == 1 else f"{base}_x{len(self.tasks)}"


def slurm_groups(tasks: Sequence[Task]) -> list[Group]:
    """How tasks go out on slurm. Tasks waiting for the same things share one array; a group comes after
    every group it depends on."""
    keys = {t.key for t in tasks}
    placed: set[str] = set()
    pending = list(tasks)
    out: list[Group] = []
    while pending:
        ready = [t for t in pending if all(d not in keys or d in placed for d in t.after)]
        if not ready:
            raise ValueError("dependency cycle among tasks: " + ", ".join(t.key for t in pending))
        groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[Task]] = {}
        for t in ready:
            dep = (tuple(sorted({d for d in t.after if d in keys})), tuple(sorted(set(t.after_jobs))))
            groups.setdefault(dep, []).append(t)
        out += [Group(tuple(g), dep_keys, dep_jobs) for (dep_keys, dep_jobs), g in groups.items()]
        placed.update(t.key for t in ready)
        pending = [t for t in pending if t.key not in placed]
    return out


def afterok(job_ids: Sequence[str]) -> str | None:
    return "afterok:" + ":".join(job_ids) if job_ids else None


# ------------------------------------------------------------------------------------------------ backends


class Backend(Protocol):
    """A submitit backend. Its class answers every question that depends on where jobs run: `poll_s`,
    `queued` (a scheduler holds the jobs), `in_process`, `where` (plan text), `folder_tag`, `plan_text(cfg)`,
    `preflight()`; `hpc.launcher.backend(name)` gives the class of a `--cluster` word."""

    """One place jobs run. `gates` says whether the Launcher starts tasks itself once their dependencies
    succeeded (local, debug) or hands everything to the scheduler at once (slurm, with afterok)."""

    name: ClassVar[str]
    gates: ClassVar[bool]
    sleeps: ClassVar[bool]

    def slots(self) -> int: ...

    def submit(self, tasks: Sequence[Task], dependency: str | None, job_name: str) -> list[Any]: ...

    def poll(self, running: list[Handle]) -> list[Handle]: ...


def _submit_jobs(ex: Any, tasks: Sequence[Task]) -> list[Any]:
    if len(tasks) == 1:
        return [ex.submit(tasks[0].fn)]
    with ex.batch():
        return [ex.submit(t.fn) for t in tasks]


def slurm_executor(folder: str | Path, settings: SlurmSettings, job_name: str, dependency: str | None = None):
    """A submitit AutoExecutor for slurm with `settings` (and an afterok dependency), the same for submitting
    and for rendering."""
    import submitit

    s = settings
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=s.max_num_timeout)
    extra: dict[str, Any] = dict(s.extra_options)
    if dependency:
        extra["dependency"] = dependency
        extra["kill-on-invalid-dep"] = "yes"
    params: dict[str, Any] = {
        "name": job_name,
        "timeout_min": s.time_min,
        "mem_gb": s.mem_gb,
        "nodes": s.nodes,
        "tasks_per_node": s.ntasks_per_node,
        "cpus_per_task": s.cpus_per_task,
        "slurm_array_parallelism": s.array_parallelism,
        "slurm_signal_delay_s": s.signal_delay_s,
    }
    if s.gpus_per_node:
        params["gpus_per_node"] = s.gpus_per_node
    for key in ("partition", "account", "qos"):
        if getattr(s, key):
            params[f"slurm_{key}"] = getattr(s, key)
    if s.setup:
        params["slurm_setup"] = list(s.setup)
    if extra:
        params["slurm_additional_parameters"] = extra
    ex.update_parameters(**params)
    return ex


class SlurmBackend:
    name: ClassVar[str] = "slurm"
    gates: ClassVar[bool] = False
    sleeps: ClassVar[bool] = True
    poll_s: ClassVar[float] = 5.0  # seconds between polls (squeue is a shared service)
    queued: ClassVar[bool] = True  # a scheduler holds the jobs: they outlive the driver (--no-wait, Ctrl-C)
    in_process: ClassVar[bool] = False  # jobs run inside the driver's process
    where: ClassVar[str] = "SLURM job (submitit)"
    job_id_is_pid: ClassVar[bool] = False
    folder_tag: ClassVar[str] = "%j"  # submitit's log folder per job (expanded by submitit)

    @classmethod
    def plan_text(cls, cfg: LaunchConfig) -> str:
        return f"# slurm: job arrays of at most {cfg.effective_slurm.array_parallelism} at once"

    @staticmethod
    def preflight() -> None:
        """Before submitting: the controller answers (one InputError line otherwise)."""
        scheduler.check_controller()

    def __init__(self, cfg: LaunchConfig):
        self.cfg = cfg
        self._lost_since: dict[str, float] = {}
        self._watcher = scheduler.Watcher()
        self._queue_down_since = 0.0
        self._warned_at = 0.0

    @staticmethod
    def check(cfg: LaunchConfig) -> None:
        pass

    def slots(self) -> int:
        return self.cfg.effective_slurm.array_parallelism

    def submit(self, tasks: Sequence[Task], dependency: str | None, job_name: str) -> list[Any]:
        ex = slurm_executor(self.cfg.folder, self.cfg.effective_slurm, job_name, dependency)
        return _submit_jobs(ex, tasks)

    def poll(self, running: list[Handle]) -> list[Handle]:
        fates = self._watcher.look({h.job_id: h.result() for h in running})
        self._say_if_down(not self._watcher.answered)
        ended = []
        now = time.time()
        for h in running:
            fate = fates[h.job_id]
            if fate.phase == "ended" and fate.result is None:
                h.end = f"slurm job {h.job_id} ended {fate.acct} without a result"
            elif fate.never_starts:  # it would wait forever: cancel it and say why
                scheduler.cancel(h.job_id)
                h.end = f"slurm will never start job {h.job_id} ({fate.reason}); cancelled it"
                h.never_started = True
            elif fate.phase == "lost":  # a short grace for the result file or the accounting record
                if now - self._lost_since.setdefault(h.job_id, now) <= LOST_GRACE_S:
                    continue
                h.end = f"slurm job {h.job_id} left the queue without a result"
            elif fate.phase != "ended":
                continue
            ended.append(h)
        return self._finish(ended)

    @staticmethod
    def _finish(ended: list[Handle]) -> list[Handle]:
        for h in ended:
            h.finished = True
        return ended

    def _say_if_down(self, down: bool) -> None:
        """squeue not answering: keep waiting, but say so once a minute."""
        if not down:
            self._queue_down_since = 0.0
            return
        now = time.time()
        self._queue_down_since = self._queue_down_since or now
        if now - self._queue_down_since > 60 and now - self._warned_at > 60:
            self._warned_at = now
            gap = now - self._queue_down_since
            print(f"squeue has not answered for {gap:.0f}s; still waiting", file=sys.stderr, flush=True)


class LocalBackend:
    name: ClassVar[str] = "local"
    gates: ClassVar[bool] = True
    sleeps: ClassVar[bool] = True
    poll_s: ClassVar[float] = 0.5
    queued: ClassVar[bool] = False
    in_process: ClassVar[bool] = False
    where: ClassVar[str] = "local job (submitit)"
    job_id_is_pid: ClassVar[bool] = True  # the job id is its controller's process id
    # submitit's local controller creates the folder it is given without expanding `%j`: local jobs share one
    # folder (their files are named by job id all the same)
    folder_tag: ClassVar[str] = "local"

    @classmethod
    def plan_text(cls, cfg: LaunchConfig) -> str:
        return f"# local: at most {cfg.local_slots} job(s) at once, {cfg.slurm.ntasks_per_node} task(s) each"

    @staticmethod
    def preflight() -> None:
        pass

    def __init__(self, cfg: LaunchConfig):
        self.cfg = cfg

    @staticmethod
    def check(cfg: LaunchConfig) -> None:
        if cfg.slurm.nodes > 1:
            raise InputError("the local backend runs on one node (nodes must be 1)")

    def slots(self) -> int:
        return self.cfg.local_slots

    def submit(self, tasks: Sequence[Task], dependency: str | None, job_name: str) -> list[Any]:
        import submitit

        s = self.cfg.effective_slurm
        ex = submitit.AutoExecutor(folder=self.cfg.folder, cluster="local", local_max_num_timeout=s.max_num_timeout)
        ex.update_parameters(
            timeout_min=self.cfg.timeout_min or LOCAL_TIMEOUT_MIN,
            tasks_per_node=s.ntasks_per_node,
            gpus_per_node=s.gpus_per_node,
            cpus_per_task=s.cpus_per_task,
            name=job_name,
        )
        return _submit_jobs(ex, tasks)

    def poll(self, running: list[Handle]) -> list[Handle]:
        ended = []
        for h in running:
            if h.job.done():
                h.finished = True
                if h.result() is None:
                    h.end = f"local job {h.job_id} ended without a result ({h.job.state})"
                ended.append(h)
        return ended


class DebugBackend:
    name: ClassVar[str] = "debug"
    gates: ClassVar[bool] = True
    sleeps: ClassVar[bool] = False
    poll_s: ClassVar[float] = 0.5
    queued: ClassVar[bool] = False
    in_process: ClassVar[bool] = True
    where: ClassVar[str] = "this process"
    job_id_is_pid: ClassVar[bool] = False
    folder_tag: ClassVar[str] = "%j"

    @classmethod
    def plan_text(cls, cfg: LaunchConfig) -> str:
        return "# debug: runs one after another in this process"

    @staticmethod
    def preflight() -> None:
        pass

    def __init__(self, cfg: LaunchConfig):
        self.cfg = cfg

    @staticmethod
    def check(cfg: LaunchConfig) -> None:
        pass

    def slots(self) -> int:
        return 1

    def submit(self, tasks: Sequence[Task], dependency: str | None, job_name: str) -> list[Any]:
        import submitit

        ex = submitit.AutoExecutor(folder=self.cfg.folder, cluster="debug")
        ex.update_parameters(name=job_name)
        return _submit_jobs(ex, tasks)

    def poll(self, running: list[Handle]) -> list[Handle]:
        for h in running[:1]:
            h.job.done()  # runs the job in this process
            h.finished = True
            return [h]
        return []


BACKENDS: dict[str, type[SlurmBackend] | type[LocalBackend] | type[DebugBackend]] = {
    b.name: b for b in (SlurmBackend, LocalBackend, DebugBackend)
}


def backend(name: str) -> type[SlurmBackend] | type[LocalBackend] | type[DebugBackend]:
    """The backend class of a `--cluster` word (one InputError line for an unknown one)."""
    if name not in BACKENDS:
        raise InputError(f"unknown cluster {name!r} (expected {', '.join(BACKENDS)})")
    return BACKENDS[name]


def recorded(name: str | None) -> type[SlurmBackend] | type[LocalBackend] | type[DebugBackend] | None:
    """The backend class a run marker names (None for `varith train` run by hand, `cli`, or no record)."""
    return BACKENDS.get(name or "")


def is_queued(name: str | None) -> bool:
    """Whether the backend a run marker names holds its jobs in a scheduler's queue (their fate is the
    scheduler's to tell)."""
    return getattr(recorded(name), "queued", False)


# ------------------------------------------------------------------------------------------------ launcher


class Launcher:
    """Submits tasks on one backend and tells when each ends.

    before_submit(key) runs just before a task is handed to submitit, after_submit(handle) just after;
    dep_state(key) -> "ok" | "failed" | "wait" judges a finished dependency (gating backends wait for it;
    slurm uses afterok). `poll()` starts what may start and returns the handles that ended since the last
    poll.
    """

    def __init__(
        self,
        cfg: LaunchConfig,
        before_submit: Callable[[str], None] | None = None,
        after_submit: Callable[[Handle], None] | None = None,
        dep_state: Callable[[str], DepState] | None = None,
    ):
        self.cfg = cfg
        self.backend = BACKENDS[cfg.cluster](cfg)
        self._before = before_submit or (lambda key: None)
        self._after = after_submit or (lambda handle: None)
        self._dep_state = dep_state or (lambda key: "ok")
        self.handles: dict[str, Handle] = {}
        self._queue: list[Task] = []  # gating backends: not yet started

    # -- submission
    def submit(self, tasks: Sequence[Task]) -> list[Handle]:
        keys = [t.key for t in tasks]
        if len(set(keys)) != len(keys):
            raise ValueError("task keys must be unique")
        for t in tasks:
            self.handles[t.key] = Handle(t.key)
        if self.backend.gates:
            self._queue.extend(tasks)
            self._start_ready()
        else:
            for g in slurm_groups(tasks):
                ids = sorted({str(self.handles[k].job_id) for k in g.after} | set(g.after_jobs))
                self._submit_group(g.tasks, afterok(ids), g.job_name(self.cfg.job_name))
        return [self.handles[k] for k in keys]

    def _submit_group(self, group: Sequence[Task], dependency: str | None, job_name: str) -> None:
        for t in group:
            self._before(t.key)
        now = time.time()
        jobs = self.backend.submit(group, dependency, job_name)
        for t, job in zip(group, jobs, strict=True):
            h = self.handles[t.key]
            h.job, h.job_id, h.submitted_at = job, str(job.job_id), now
            first = job.task(0) if job.num_tasks > 1 else job
            h.stdout, h.stderr = str(first.paths.stdout), str(first.paths.stderr)
            self._after(h)

    def _running(self) -> list[Handle]:
        return [h for h in self.handles.values() if h.job is not None and not h.finished]

    def _start_ready(self) -> None:
        """Gating backends: start queued tasks whose dependencies succeeded, within the backend's slots."""
        progressed = True
        while progressed:
            progressed = False
            for t in list(self._queue):
                states = [self._dep_of(d) for d in t.after]
                if "failed" in states:
                    self._queue.remove(t)
                    failed = [d for d, s in zip(t.after, states, strict=True) if s == "failed"]
                    h = self.handles[t.key]
                    h.finished, h.end = True, "dependency failed: " + ", ".join(failed)
                    progressed = True
                    continue
                if any(s != "ok" for s in states):
                    continue
                if len(self._running()) >= self.backend.slots():
                    return
                self._queue.remove(t)
                self._submit_group([t], None, t.key)
                progressed = True

    def _dep_of(self, key: str) -> DepState:
        h = self.handles.get(key)
        if h is not None and not h.finished:
            return "wait"
        return self._dep_state(key)

    # -- progress
    @property
    def active(self) -> bool:
        return bool(self._queue) or bool(self._running())

    def poll(self) -> list[Handle]:
        ended = self.backend.poll(self._running())
        if self._queue:
            already = {h.key for h in self.handles.values() if h.finished}
            self._start_ready()
            ended += [h for h in self.handles.values() if h.finished and h.key not in already and h.job is None]
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
            if self.backend.sleeps:
                time.sleep(poll_s)


# ------------------------------------------------------------------------------------------------ dry run


def _noop() -> None:
    return None


@contextmanager
def _stand_in_slurm() -> Iterator[tuple[Path, Path]]:
    """A scratch folder and a captured-script path, with `sbatch` (records the script, answers "Submitted
    batch job 1") and `srun` (present, for submitit's check) first on PATH."""
    with tempfile.TemporaryDirectory(prefix="varith-dry-", dir="/tmp" if Path("/tmp").is_dir() else None) as tmp:
        root = Path(tmp)
        bin_dir, captured = root / "bin", root / "submitted.sh"
        bin_dir.mkdir()
        sbatch = (
            f"#!{sys.executable}\nimport shutil, sys\n"
            f"shutil.copyfile(sys.argv[-1], {str(captured)!r})\nprint('Submitted batch job 1')\n"
        )
        (bin_dir / "sbatch").write_text(sbatch)
        (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
        for tool in ("sbatch", "srun"):
            (bin_dir / tool).chmod(0o755)
        old_path = os.environ.get("PATH", "")
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{old_path}"
        try:
            yield root / "work", captured
        finally:
            os.environ["PATH"] = old_path


def render_sbatch(cfg: LaunchConfig, n_jobs: int, dependency: str | None = None, job_name: str | None = None) -> str:
    """The sbatch script submitit would submit for `n_jobs` jobs (an array when n_jobs > 1). Needs no
    cluster and writes nothing under cfg.folder."""
    if n_jobs < 1:
        raise ValueError("n_jobs must be >= 1")
    real = Path(cfg.folder).expanduser().absolute()
    indep = Path(*[p for p in _id_independent_parts(real)])
    with _stand_in_slurm() as (scratch, captured):
        scratch_folder = scratch / real.relative_to(indep)
        ex = slurm_executor(scratch_folder, cfg.effective_slurm, job_name or cfg.job_name, dependency)
        _submit_jobs(ex, [Task(str(i), _noop) for i in range(n_jobs)])
        text = captured.read_text()
    # every path under the scratch folder is one shell word of safe characters: write it as the real path,
    # quoted as submitit quotes paths
    return re.sub(re.escape(str(scratch)) + r"(\S*)", lambda m: shlex.quote(str(indep) + m.group(1)), text)


def _id_independent_parts(folder: Path) -> list[str]:
    """The leading parts of `folder` without a submitit id tag (%j, %t, %A, %a)."""
    parts = []
    for part in folder.parts:
        if any(tag in part for tag in ("%j", "%t", "%A", "%a")):
            break
        parts.append(part)
    return parts
