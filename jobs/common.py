"""Flags several subcommands share: where block work runs (Dask, the device) and the store it lands in."""

from __future__ import annotations

import argparse
import math
import threading

from arith.errors import InputError


def whole_number(low: int, high: int | None = None):
    """argparse type: a whole number from `low` to `high` (argparse prints the one-line error, naming the
    flag, before anything is read or written)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low:,}, got {value:,}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:,}, got {value:,}")
        return value

    parse.__name__ = "whole number"  # argparse's fallback message names the type
    return parse


at_least_one = whole_number(1)
MAX_WORKERS = 4096  # local worker processes, torch threads: far beyond any machine, short of a typo's billion


def seconds(text: str) -> float:
    """argparse type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def add_cluster_arguments(p: argparse.ArgumentParser) -> None:
    """The "where it runs (Dask)" group: one vocabulary (hpc.cluster.DASK_KINDS) for every stage's command."""
    from hpc.blocks import DEFAULT_RETRIES

    d = p.add_argument_group("where it runs (Dask)")
    d.add_argument("--device", default="auto", help="auto (each worker's GPU if it has one, else cpu), cpu, cuda")
    d.add_argument(
        "--cluster",
        choices=["local", "slurm", "none"],
        help="local: embedded LocalCluster (default); slurm: dask-jobqueue SLURMCluster from --profile; "
        "none: no Dask, the blocks run in this process (into the same store, restartable)",
    )
    d.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="join an existing Dask scheduler")
    d.add_argument(
        "--workers",
        type=whole_number(1, MAX_WORKERS),
        help="local worker processes (default: one per GPU, else min(2, cores))",
    )
    d.add_argument("--torch-threads", type=whole_number(1, MAX_WORKERS), help="torch threads per worker process")
    d.add_argument(
        "--profile",
        help="TOML profile for --cluster slurm: a [slurm] table and an optional [dask] table "
        "(example: hpc/profiles/dask_example.toml)",
    )
    d.add_argument("--dry-run", action="store_true", help="print the plan (SLURM: the worker job script), run nothing")
    d.add_argument("--connect-timeout", type=seconds, default=5.0, help="seconds to reach --scheduler (default 5)")
    d.add_argument(
        "--retries",
        type=whole_number(0, 100),
        default=DEFAULT_RETRIES,
        help=f"re-runs of a block whose task raised (default {DEFAULT_RETRIES})",
    )
    d.add_argument("--store", help="Zarr store (default: <name>.zarr beside the weights)")
    d.add_argument(
        "--fresh",
        action="store_true",
        help="discard stored blocks and start again (also repairs damaged store metadata); never while another "
        "run is writing them",
    )
    d.add_argument(
        "--no-wait",
        action="store_true",
        help="refuse (exit 2) when another run is writing the same part of the store (default: wait for it, "
        "then reuse what it finished)",
    )
    d.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress report (default: a bar on a terminal, a plain line per ~10%% in a log)",
    )


def cluster_spec(args, n_tasks: int, preload: tuple[str, ...] = ()):
    """The hpc.cluster.ClusterSpec the cluster flags ask for (InputError for contradicting flags). `preload`:
    the modules of the stage's block work, e.g. `(VerifyWork.__module__,)`."""
    from arith.device import check_device_name
    from hpc.cluster import DASK_KINDS, ClusterSpec

    check_device_name(args.device)
    kind = args.cluster or ("scheduler" if args.scheduler else "local")
    if args.scheduler and args.cluster:
        raise InputError(f"--scheduler joins an existing cluster; it cannot be combined with --cluster {args.cluster}")
    backend = DASK_KINDS[kind]
    if args.workers is not None and not backend.takes_workers:
        raise InputError("--workers sets the embedded local cluster's size (use the profile's [dask] for SLURM)")
    if args.profile and not backend.takes_profile:
        raise InputError("--profile is read by --cluster slurm")
    spec = ClusterSpec(
        kind=kind,
        workers=args.workers,
        torch_threads=args.torch_threads,
        scheduler=args.scheduler,
        profile=args.profile,
        connect_timeout=args.connect_timeout,
        n_tasks=n_tasks,
        use_gpus=args.device != "cpu",
        preload=preload,
    )
    if backend.on_this_machine:
        from arith.device import choose_device

        choose_device(args.device)  # the blocks use this machine's devices
    return spec


def print_dry_run(spec, what: str) -> None:
    """`--dry-run`: the plan, and where it would run (for SLURM the worker job script); nothing is started or
    written."""
    print(what)
    print(spec.backend.plan(spec))
    print("nothing was started or written (--dry-run)")


def install_sigterm() -> None:
    """SIGTERM (scancel, walltime) ends the driver like Ctrl-C: clusters close, finished blocks stay."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
