"""Dask clusters for block-parallel work (every stage's blocks): this process, embedded, existing scheduler, SLURM.

`ClusterSpec` says where to run (`kind`, the `--cluster` word); each kind is a class (`DASK_KINDS`: `InProcess`,
`LocalDask`, `ExistingScheduler`, `SlurmDask`) that checks a spec, describes its plan and opens it.
`open_cluster(spec)` is a context manager yielding a `ClusterHandle` (client, cluster, dashboard address, task
resources) and closing whatever it started.

- `none`: no Dask; the blocks run one after another in this process, into the same store.

- `local` (default): `LocalCluster(processes=True, threads_per_worker=1)`. On a CUDA machine one worker per
  GPU, each seeing only its GPU (as cuda:0) through `CUDA_VISIBLE_DEVICES`, with a `GPU=1` resource; on CPU
  `min(2, cores)` workers. Torch threads are set inside each worker process by a `WorkerPlugin`.
- `scheduler`: join `tcp://HOST:PORT`; an unreachable address is one InputError line after `connect_timeout`.
- `slurm`: a dask-jobqueue `SLURMCluster` from a profile TOML: the `[slurm]` table that `hpc.profile` reads
  (partition, account, qos, time, mem, cpus_per_task, gpus_per_node, extra_sbatch, setup) plus an optional
  `[dask]` table (`hpc.profile.DaskProfile`, hpc/profiles/dask_example.toml). GPU jobs hold one GPU and one worker
  process each (`--gres=gpu:1`, worker `--resources GPU=1`); CPU jobs run `processes` single-threaded workers.
  Workers get `--lifetime`/`--lifetime-stagger` so they retire, and the adaptive cluster replaces them, before
  the walltime can kill a block mid-way: lifetime + stagger + margin = walltime. `job_script(spec)` renders
  the job script without starting a scheduler or submitting anything (`--dry-run`). What the profile leaves
  unset (job name, death timeout, dashboard address) comes from the site's `dask.config` (jobqueue.yaml).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from distributed import WorkerPlugin

from arith.errors import InputError, clip
from hpc.profile import DaskProfile

CLUSTER_KINDS = ("none", "local", "slurm", "scheduler")  # DASK_KINDS, below, holds their classes
PLUGIN_NAME = "varith-torch-setup"
T = TypeVar("T")


@dataclass(frozen=True)
class ClusterSpec:
    """Where block tasks run. `n_tasks` (the blocks to do) bounds how many SLURM jobs are requested."""

    kind: str = "local"
    workers: int | None = None  # local: worker processes (default: one per GPU, else min(2, cores))
    torch_threads: int | None = None  # per worker process (default: cores/workers locally, cores/processes on SLURM)
    scheduler: str | None = None  # kind="scheduler": tcp://HOST:PORT
    profile: str | None = None  # kind="slurm": TOML with [slurm] and optional [dask]
    connect_timeout: float = 5.0
    n_tasks: int | None = None
    use_gpus: bool = True  # False: never hand GPUs to workers (e.g. --device cpu)
    preload: tuple[str, ...] = ()  # modules every worker imports at start-up (the task's module: no first-task lag)
    dashboard_address: str = ":0"

    def __post_init__(self):
        if self.kind not in CLUSTER_KINDS:
            raise InputError(f"unknown cluster {self.kind!r} (expected {', '.join(CLUSTER_KINDS)})")
        self.backend.check(self)
        if self.workers is not None and self.workers < 1:
            raise InputError(f"--workers must be at least 1, got {self.workers}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise InputError(f"--torch-threads must be at least 1, got {self.torch_threads}")
        if self.connect_timeout <= 0:
            raise InputError("--connect-timeout must be positive")

    @property
    def backend(self) -> DaskKind:
        """The class that opens this kind of cluster."""
        return DASK_KINDS[self.kind]


@dataclass
class ClusterHandle:
    client: Any  # None: the blocks run in this process
    cluster: Any | None  # None when joined to an existing scheduler, or in this process
    description: str
    dashboard: str  # "" when the scheduler serves no dashboard (bokeh not installed)
    task_resources: dict[str, float] | None = None  # e.g. {"GPU": 1}: pass to client.map(resources=...)

    def announce(self) -> None:
        """Say where the blocks run (and the dashboard, where there is one)."""
        print(self.description)
        if self.client is not None:
            print(f"dask dashboard: {self.dashboard_text}", flush=True)

    def call(self, fn: Callable[[], T], retries: int = 0) -> T:
        """`fn()` on a worker (where block tasks run, e.g. to probe its device), or here without a cluster."""
        if self.client is None:
            return fn()
        return self.client.submit(fn, resources=self.task_resources, retries=retries, pure=False).result()

    @property
    def dashboard_text(self) -> str:
        if not self.dashboard:
            return "not served (install bokeh>=3.1 where the scheduler runs)"
        if self.cluster is not None and importlib.util.find_spec("bokeh") is None:
            return f"{self.dashboard} (its pages need bokeh>=3.1: pip install 'bokeh>=3.1')"
        return self.dashboard


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """GPU ids this process may hand out: CUDA_VISIBLE_DEVICES entries, else 0..device_count-1."""
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:
        return []
    if count == 0:
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env:
        ids = [s.strip() for s in env.split(",") if s.strip()]
        return ids[:count]
    return [str(i) for i in range(count)]


class TorchSetup(WorkerPlugin):
    """WorkerPlugin: torch intra-op threads per worker process, and (local GPU clusters) one GPU per worker.

    `gpus[i % len(gpus)]` goes to the worker named i (LocalCluster names workers 0..n-1); this runs in the
    worker process before any task, so CUDA initialises seeing only that GPU, as cuda:0.
    """

    idempotent = False
    name = PLUGIN_NAME

    def __init__(
        self,
        threads: int | None,
        gpus: tuple[str, ...] = (),
        ignore_sigint: bool = False,
        preload: tuple[str, ...] = (),
    ):
        self.threads = threads
        self.gpus = tuple(gpus)
        self.ignore_sigint = ignore_sigint
        self.preload = tuple(preload)

    def setup(self, worker=None):
        if self.ignore_sigint:
            # embedded workers share the driver's terminal: Ctrl-C is for the driver, which closes them
            import signal
            import threading

            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, signal.SIG_IGN)
        if self.gpus and worker is not None:
            try:
                index = int(worker.name)
            except (TypeError, ValueError):
                index = abs(hash(str(worker.name)))
            os.environ["CUDA_VISIBLE_DEVICES"] = self.gpus[index % len(self.gpus)]
        if self.threads:
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                os.environ[var] = str(self.threads)
            import torch

            torch.set_num_threads(self.threads)
        if self.preload:
            for module in self.preload:
                importlib.import_module(module)


def _plugin(spec: ClusterSpec, threads: int | None, gpus: tuple[str, ...] = (), ignore_sigint: bool = False):
    return TorchSetup(threads, gpus, ignore_sigint, spec.preload)


def register_plugin(client, plugin: WorkerPlugin, attempts: int = 8, pause: float = 0.25) -> bool:
    """Register a worker plugin so that a worker dying meanwhile never fails the run.

    The scheduler stores the plugin *before* it broadcasts it to the live workers, and hands stored plugins to
    every worker that joins later (a nanny's replacement process, a new SLURM job). A worker that dies during
    the broadcast makes `register_plugin` raise a comm error (CommClosedError is an OSError), although the
    plugin is stored: retry, so the workers still alive get it too. True once a broadcast went through; False
    (with a log line) if every attempt met a dying worker, in which case workers that join later still get it.
    Errors raised by the plugin's own `setup` are not comm errors and propagate.
    """
    import time

    for attempt in range(attempts):
        try:
            client.register_plugin(plugin)
            return True
        except OSError as exc:  # CommClosedError, StreamClosedError, TimeoutError: a worker went away
            logging.getLogger(__name__).info("worker plugin broadcast met a lost worker (%s); retrying", exc)
            time.sleep(pause * (attempt + 1))
    logging.getLogger(__name__).warning(
        "worker plugin %s: every broadcast met a lost worker; workers that join later still get it", plugin.name
    )
    return False


# ------------------------------------------------------------------------------------------------ profiles


def _profile(path) -> tuple:
    """(SlurmSettings, DaskProfile) of a profile TOML."""
    from hpc.profile import load_profile

    prof = load_profile(path)
    return prof.slurm, prof.dask


def lifetimes(walltime_min: float, prof: DaskProfile) -> tuple[float, float]:
    """(lifetime, stagger) in minutes with lifetime + stagger + margin = walltime."""
    stagger = prof.lifetime_stagger if prof.lifetime_stagger is not None else min(5.0, max(1.0, 0.05 * walltime_min))
    margin = prof.lifetime_margin if prof.lifetime_margin is not None else min(15.0, max(2.0, 0.10 * walltime_min))
    lifetime = walltime_min - stagger - margin
    if lifetime < 1.0 or lifetime - stagger < 0.5:
        raise InputError(
            f"walltime {walltime_min:g} min leaves no worker lifetime after stagger {stagger:g} min "
            f"and margin {margin:g} min; ask for a longer time or a smaller [dask] lifetime_margin "
            "or lifetime_stagger"
        )
    return lifetime, stagger


def _hhmmss(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def _duration(minutes: float) -> str:
    return f"{max(1, int(round(minutes * 60)))}s"


def slurm_cluster_kwargs(settings, prof: DaskProfile) -> dict[str, Any]:
    """SLURMCluster keyword arguments from a [slurm] SlurmSettings and a DaskProfile."""
    gpu = settings.gpus_per_node > 0
    processes = 1 if gpu else (prof.processes or settings.cpus_per_task)
    if processes > settings.cpus_per_task:
        raise InputError(
            f"[dask] processes {processes} exceeds cpus_per_task {settings.cpus_per_task} (one core per process)"
        )
    lifetime, stagger = lifetimes(settings.time_min, prof)
    directives: list[str] = []
    if settings.qos:
        directives.append(f"--qos={settings.qos}")
    if gpu:
        directives.append("--gres=gpu:1")  # one GPU per worker job: the worker sees it as cuda:0
    directives += list(settings.extra_sbatch)
    worker_args = ["--lifetime", _duration(lifetime), "--lifetime-stagger", _duration(stagger)]
    if gpu:
        worker_args += ["--resources", "GPU=1"]
    kw: dict[str, Any] = {
        "queue": settings.partition,
        "account": settings.account,
        "cores": settings.cpus_per_task,
        "processes": processes,
        "memory": f"{settings.mem_gb:g}GiB",  # SLURM reads --mem=32G as GiB
        "walltime": _hhmmss(settings.time_min),
        "job_extra_directives": directives,
        "job_script_prologue": list(settings.setup),
        "worker_extra_args": worker_args,
        "scheduler_options": {},
    }
    # what the profile leaves unset falls back to the site's dask.config (jobqueue.yaml), as in dask-jobqueue
    for key in ("job_name", "death_timeout"):
        if getattr(prof, key) is not None:
            kw[key] = getattr(prof, key)
    if prof.dashboard_address is not None:
        kw["scheduler_options"]["dashboard_address"] = prof.dashboard_address
    if prof.interface:
        kw["interface"] = prof.interface
    if prof.scheduler_host:
        kw["scheduler_options"]["host"] = prof.scheduler_host
    if prof.local_directory:
        kw["local_directory"] = prof.local_directory
    if prof.log_directory:
        kw["log_directory"] = prof.log_directory
    if prof.python:
        kw["python"] = prof.python
    return kw


def _threads_per_slurm_worker(settings, prof: DaskProfile) -> int:
    if settings.gpus_per_node > 0:
        return settings.cpus_per_task
    return max(1, settings.cpus_per_task // (prof.processes or settings.cpus_per_task))


def _slurm_jobs(settings, prof: DaskProfile, n_tasks: int | None) -> int:
    per_job = 1 if settings.gpus_per_node > 0 else (prof.processes or settings.cpus_per_task)
    wanted = math.ceil((n_tasks or prof.max_jobs * per_job) / per_job)
    return max(1, min(prof.max_jobs, wanted))


def job_script(spec: ClusterSpec) -> str:
    """The worker job script `SLURMCluster.job_script()` gives, without starting a scheduler or submitting."""
    import asyncio

    from dask_jobqueue import SLURMCluster

    settings, prof = _profile(spec.profile)
    kw = slurm_cluster_kwargs(settings, prof)

    async def render() -> str:
        # asynchronous=True: the cluster object is built (and validates its arguments) but never started
        cluster = SLURMCluster(asynchronous=True, **kw)
        try:
            return cluster.job_script()
        finally:
            await cluster.close()

    try:
        return asyncio.run(render())
    except ValueError as exc:
        raise InputError(f"profile {spec.profile}: {str(exc).splitlines()[0]}") from None


def describe_slurm_plan(spec: ClusterSpec) -> str:
    settings, prof = _profile(spec.profile)
    jobs = _slurm_jobs(settings, prof, spec.n_tasks)
    lifetime, stagger = lifetimes(settings.time_min, prof)
    how = f"adapt 1..{jobs} jobs" if prof.adapt else f"{jobs} job{'s' * (jobs != 1)}"
    return (
        f"SLURM {how} on partition {settings.partition or '(default)'}, "
        f"walltime {_hhmmss(settings.time_min)}, "
        f"worker lifetime {lifetime:.1f} +/- {stagger:.1f} min"
    )


# ------------------------------------------------------------------------------------------------ clusters


def preflight(cluster) -> None:
    """`sbatch --test-only` on the worker job script: a refused job (no controller, unknown partition or
    account, impossible resources) is one InputError line now, instead of an endless wait for workers."""
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="varith-dask-") as f:
        f.write(cluster.job_script())
        f.flush()
        try:
            r = subprocess.run(["sbatch", "--test-only", f.name], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InputError(f"--cluster slurm: sbatch --test-only failed ({exc})") from None
    if r.returncode != 0:
        lines = [ln.strip() for ln in (r.stderr + r.stdout).splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"exit code {r.returncode}"
        raise InputError(f"--cluster slurm: SLURM refuses the worker job ({reason})")


def _dashboard(obj) -> str:
    try:
        return obj.dashboard_link or ""
    except Exception:
        return ""


def start_local_cluster(attempts: int = 3, **kwargs):
    """`LocalCluster(**kwargs)`, started again if a worker process dies while the cluster starts.

    A worker killed before its nanny saw it start makes the constructor raise "Nanny failed to start" (the
    constructor closes what it had started); a dead worker later on is restarted by its nanny instead.
    """
    from distributed import LocalCluster

    for attempt in range(attempts):
        try:
            return LocalCluster(**kwargs)
        except RuntimeError as exc:
            if "failed to start" not in str(exc) or attempt == attempts - 1:
                raise
            logging.getLogger(__name__).warning("local cluster: %s; starting it again", exc)
    raise AssertionError("unreachable")


def scheduler_address(address: str) -> str:
    """`address` with its scheme (tcp:// when it has none)."""
    return address if "://" in address else f"tcp://{address}"


def _check_address(address: str) -> None:
    """A malformed address is refused before a Client exists (a Client that fails to parse its address lingers and
    prints a traceback when it is collected)."""
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address)
        if scheme in ("tcp", "tls", "ws", "wss"):
            parse_host_port(location)
    except ValueError as exc:
        raise InputError(f"scheduler {clip(address)}: not an address like tcp://HOST:PORT ({exc})") from None


def connect(address: str, timeout: float):
    """A Client on an existing scheduler, or one InputError line."""
    from distributed import Client

    address = scheduler_address(address)
    _check_address(address)
    quiet = [logging.getLogger(n) for n in ("distributed", "distributed.client", "distributed.comm")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.CRITICAL)
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except Exception as exc:  # OSError (refused, timed out), garbage from a non-Dask peer, a bad address
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"scheduler {address}: unreachable ({reason})") from None
    finally:
        for lg, level in zip(quiet, levels, strict=True):
            lg.setLevel(level)


class DaskKind:
    """Where a stage's block tasks run: one class per `--cluster` word. `open(spec)` is a context manager yielding
    a `ClusterHandle` and closing what it started; `plan(spec)` says what `open` would start (`--dry-run`)."""

    name: ClassVar[str]
    where: ClassVar[str]  # in a plan: where the blocks run
    takes_workers: ClassVar[bool] = False  # --workers sizes it
    takes_profile: ClassVar[bool] = False  # --profile configures it
    on_this_machine: ClassVar[bool] = False  # its workers share this machine's devices

    def check(self, spec: ClusterSpec) -> None:
        """One InputError line for a spec this kind cannot run."""

    def plan(self, spec: ClusterSpec) -> str:
        raise NotImplementedError

    def open(self, spec: ClusterSpec):
        raise NotImplementedError


class InProcess(DaskKind):
    """`none`: the blocks run one after another in this process, into the same store as on any cluster."""

    name = "none"
    where = "this process"
    on_this_machine = True

    def check(self, spec: ClusterSpec) -> None:
        if spec.scheduler or spec.profile:
            raise InputError("--cluster none runs in this process: no --scheduler or --profile")

    def plan(self, spec: ClusterSpec) -> str:
        return "cluster: none (blocks run in this process)"

    @contextlib.contextmanager
    def open(self, spec: ClusterSpec):
        yield ClusterHandle(None, None, "in this process (no Dask cluster)", "")


class LocalDask(DaskKind):
    """`local` (default): an embedded LocalCluster, one GPU per worker where there are GPUs."""

    name = "local"
    where = "local Dask cluster"
    takes_workers = True
    on_this_machine = True

    def plan(self, spec: ClusterSpec) -> str:
        return "cluster: local (an embedded Dask LocalCluster)"

    @contextlib.contextmanager
    def open(self, spec: ClusterSpec):
        from distributed import Client

        gpus = tuple(visible_gpus()) if spec.use_gpus else ()
        n_workers = spec.workers or (len(gpus) if gpus else min(2, cpu_count()))
        threads = spec.torch_threads or max(1, cpu_count() // n_workers)
        kwargs: dict[str, Any] = {}
        if gpus:
            kwargs["resources"] = {"GPU": 1}
        plugin = _plugin(spec, threads, gpus, ignore_sigint=True)
        cluster = start_local_cluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=spec.dashboard_address,
            silence_logs=logging.ERROR,  # workers cancelled at Ctrl-C or restarted after a crash need no warnings
            # every worker process, also one a nanny restarts after a crash, runs the plugin as it starts: no
            # broadcast to live workers that a worker dying at that moment could break
            plugins=(plugin,),
            **kwargs,
        )
        try:
            with Client(cluster, set_as_default=False) as client:
                what = f"{len(gpus)} GPU{'s' * (len(gpus) != 1)}, " if gpus else ""
                processes = "worker process" if n_workers == 1 else "worker processes"
                each = "torch thread" if threads == 1 else "torch threads"
                yield ClusterHandle(
                    client,
                    cluster,
                    f"local cluster: {n_workers} {processes} ({what}{threads} {each} each)",
                    _dashboard(cluster),
                    {"GPU": 1} if gpus else None,
                )
        finally:
            cluster.close()


class ExistingScheduler(DaskKind):
    """`--scheduler tcp://HOST:PORT`: join a running scheduler; its workers belong to whoever started them."""

    name = "scheduler"
    where = "Dask workers of --scheduler"

    def check(self, spec: ClusterSpec) -> None:
        if not spec.scheduler:
            raise InputError("joining a cluster needs --scheduler tcp://HOST:PORT")
        _check_address(scheduler_address(spec.scheduler))

    def plan(self, spec: ClusterSpec) -> str:
        return f"cluster: the scheduler at {scheduler_address(spec.scheduler)}"

    @contextlib.contextmanager
    def open(self, spec: ClusterSpec):
        client = connect(spec.scheduler, spec.connect_timeout)
        try:
            if spec.torch_threads or spec.preload:  # the workers' owner chose their threads unless asked
                register_plugin(client, _plugin(spec, spec.torch_threads))
            n = len(client.scheduler_info().get("workers", {}))
            yield ClusterHandle(
                client,
                None,
                f"scheduler {client.scheduler.address} ({n} worker{'s' * (n != 1)} now)",
                _dashboard(client),
            )
        finally:
            client.close()


class SlurmDask(DaskKind):
    """`slurm`: a dask-jobqueue SLURMCluster from the profile's [slurm] and [dask] tables."""

    name = "slurm"
    where = "Dask workers on SLURM"
    takes_profile = True

    def check(self, spec: ClusterSpec) -> None:
        if not spec.profile:
            raise InputError("--cluster slurm needs --profile FILE.toml (a [slurm] table, optionally [dask])")

    def plan(self, spec: ClusterSpec) -> str:
        return f"{describe_slurm_plan(spec)}\n{job_script(spec)}".rstrip("\n")

    @contextlib.contextmanager
    def open(self, spec: ClusterSpec):
        from dask_jobqueue import SLURMCluster
        from distributed import Client

        settings, prof = _profile(spec.profile)
        kw = slurm_cluster_kwargs(settings, prof)
        jobs = _slurm_jobs(settings, prof, spec.n_tasks)
        if shutil.which("sbatch") is None:
            raise InputError("--cluster slurm: sbatch is not on this machine's PATH (run the driver on a login node)")
        try:
            cluster = SLURMCluster(**kw)
        except (ValueError, RuntimeError) as exc:  # dask-jobqueue's argument checks, an unknown interface, ...
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"profile {spec.profile}: {reason.removeprefix('Cluster failed to start: ')}") from None
        try:
            preflight(cluster)
            if prof.adapt:
                cluster.adapt(minimum_jobs=1, maximum_jobs=jobs)
            else:
                cluster.scale(jobs=jobs)
            with Client(cluster, set_as_default=False) as client:
                register_plugin(client, _plugin(spec, spec.torch_threads or _threads_per_slurm_worker(settings, prof)))
                yield ClusterHandle(
                    client,
                    cluster,
                    describe_slurm_plan(spec),
                    _dashboard(cluster),
                    {"GPU": 1} if settings.gpus_per_node > 0 else None,
                )
        finally:
            cluster.close()


DASK_KINDS: dict[str, DaskKind] = {k.name: k() for k in (InProcess, LocalDask, ExistingScheduler, SlurmDask)}


def open_cluster(spec: ClusterSpec):
    """Start (or join) the cluster of `spec` (a context manager yielding a ClusterHandle; closes what it started)."""
    return spec.backend.open(spec)
