"""Sweep benchmark: 8 tiny runs on the local backend against the same 8 trained one after another in one
process.

Prints one JSON line per figure:
- local_sweep_wall_s: `varith sweep --cluster local` of the 8 runs (submit to last result), throttled to the
  cores
- one_process_wall_s: the same 8 trainings called one after another in this process (torch already imported)
- speedup: one_process_wall_s / local_sweep_wall_s (> 1: the local backend's parallelism pays for its
  start-up)
- submit_to_start_median_s / submit_to_start_max_s: from handing a job to submitit to the job marking its run
  running (a fresh Python process: interpreter, imports, unpickling)

    python bench/bench_sweep.py [--runs 8] [--steps 300] [--d-model 32]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import tempfile
import time
from pathlib import Path


def _emit(figure: str, value: float, unit: str, **context) -> None:
    from bench.common import emit

    emit(figure, round(value, 4), unit, bench="sweep_local", **context)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--d-model", type=int, default=32)
    parser.add_argument("--d-head", type=int, default=8)
    args = parser.parse_args(argv if argv is not None else [])  # `python -m bench` passes module names

    import torch

    from arith.train import TrainConfig, train
    from jobs.cli import main as cli
    from jobs.runs import markers
    from jobs.runs.rundir import RunDir

    arch = f"add_d2_l1_h3_t{args.steps}" if args.steps < 1000 else f"add_d2_l1_h3_t{args.steps // 1000}K"
    seeds = [f"{100001 + i:06d}" for i in range(args.runs)]
    cores = os.cpu_count() or 1
    context = {
        "runs": args.runs,
        "steps": args.steps,
        "d_model": args.d_model,
        "cores": cores,
        "load1_at_start": round(os.getloadavg()[0], 2),
    }  # other processes on the machine skew wall times
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        runs = Path(tmp) / "runs"
        sweep_args = [
            "sweep",
            "--cluster",
            "local",
            "--runs-dir",
            str(runs),
            "--seeds",
            *seeds,
            "--archs",
            arch,
            "--d-model",
            str(args.d_model),
            "--d-head",
            str(args.d_head),
            "--poll",
            "0.1",
        ]
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            rc = cli(sweep_args)
        local_wall = time.perf_counter() - t0
        if rc != 0:
            raise SystemExit(f"bench: the local sweep failed (exit {rc}); see varith status --runs-dir {runs}")
        latencies = []
        for seed in seeds:
            m = markers.read_marker(runs / f"{arch}_s{seed}")
            if m is not None and m.started_at and m.submitted_at:
                latencies.append(m.started_at - m.submitted_at)

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # what each local job uses (cpus_per_task = 1)
        try:
            t0 = time.perf_counter()
            for seed in seeds:
                name = f"{arch}_s{seed}"
                cfg = TrainConfig(name=name, d_model=args.d_model, d_head=args.d_head)
                train(cfg, RunDir.of(Path(tmp) / "seq", name).train_paths(), resume=False, progress=False)
            one_process = time.perf_counter() - t0
        finally:
            torch.set_num_threads(threads)

    from hpc.launcher import LaunchConfig

    slots = LaunchConfig(cluster="local", folder=Path("x")).local_slots
    _emit("local_sweep_wall_s", local_wall, "s", slots=slots, **context)
    _emit("one_process_wall_s", one_process, "s", **context)
    _emit("speedup", one_process / local_wall, "x", slots=slots, **context)
    if latencies:
        _emit("submit_to_start_median_s", statistics.median(latencies), "s", **context)
        _emit("submit_to_start_max_s", max(latencies), "s", **context)
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
