"""Benchmark helpers: one JSON line per figure, and FLOP accounting for the transformer."""

from __future__ import annotations

import json
import os
import platform
import resource
import time

import torch

from arith.model import ModelShape


def emit(figure: str, value, unit: str, **context) -> None:
    """Print one figure as one JSON line."""
    print(json.dumps({"figure": figure, "value": value, "unit": unit} | context), flush=True)


def forward_flops(shape: ModelShape, n_answer: int | None = None) -> float:
    """Multiply-add FLOPs (x2) of one forward over one sequence (arith.model.ModelShape.forward_flops)."""
    return shape.forward_flops(n_answer)


def matmul_flops_per_s(
    rows: int, d_in: int, d_out: int, seconds: float = 2.0, dtype: torch.dtype = torch.float32
) -> float:
    """Sustained GEMM rate of this process (same threads) on a [rows, d_in] x [d_in, d_out] product in `dtype`
    (fp32; or bf16 inputs, as autocast runs them)."""
    a = torch.randn(rows, d_in, dtype=dtype)
    b = torch.randn(d_in, d_out, dtype=dtype)
    out = torch.empty(rows, d_out, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b, out=out)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b, out=out)
        n += 1
    return 2.0 * rows * d_in * d_out * n / (time.perf_counter() - t0)


class Interleaved:
    """Measure a workload's FLOP rate against the GEMM rate in alternating slices of the same run.

    On a shared, noisy machine a GEMM rate taken minutes before the workload says little; alternating short
    GEMM bursts with work chunks makes both see the same conditions, so their ratio is stable.
    """

    def __init__(self, rows: int, d_in: int, d_out: int, burst_s: float = 0.5):
        self.args = (rows, d_in, d_out)
        self.burst_s = burst_s
        self.work_flops = self.work_s = self.gemm_flops = self.gemm_s = 0.0
        self.units = 0

    def run(self, chunk, flops: float, units: int) -> None:
        """Time one work chunk (`flops` of useful work, `units` questions or steps), preceded by a GEMM burst."""
        rate = matmul_flops_per_s(*self.args, seconds=self.burst_s)
        self.gemm_flops += rate * self.burst_s
        self.gemm_s += self.burst_s
        t0 = time.perf_counter()
        chunk()
        self.work_s += time.perf_counter() - t0
        self.work_flops += flops
        self.units += units

    @property
    def gemm_rate(self) -> float:
        return self.gemm_flops / self.gemm_s

    @property
    def ratio(self) -> float:
        return (self.work_flops / self.work_s) / self.gemm_rate

    @property
    def units_per_s(self) -> float:
        return self.units / self.work_s


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine() -> dict:
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version()}
