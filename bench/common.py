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
    """Multiply-add FLOPs (x2) of one forward over one sequence of n_ctx tokens.

    With `n_answer`, the unembedding is counted only at the answer-predicting positions (the scoring path).
    """
    P, d, h, dh, m, v = shape.n_ctx, shape.d_model, shape.n_heads, shape.d_head, shape.d_mlp, shape.d_vocab
    per_layer = 2 * P * d * 3 * h * dh + 2 * 2 * h * P * P * dh + 2 * P * h * dh * d + 2 * 2 * P * d * m
    unembed = 2 * (n_answer if n_answer is not None else P) * d * v
    return float(shape.n_layers * per_layer + unembed)


def matmul_flops_per_s(rows: int, d_in: int, d_out: int, seconds: float = 2.0) -> float:
    """Sustained fp32 GEMM rate of this process (same threads) on a [rows, d_in] x [d_in, d_out] product."""
    a = torch.randn(rows, d_in)
    b = torch.randn(d_in, d_out)
    out = torch.empty(rows, d_out)
    for _ in range(3):
        torch.mm(a, b, out=out)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b, out=out)
        n += 1
    return 2.0 * rows * d_in * d_out * n / (time.perf_counter() - t0)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine() -> dict:
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version()}
