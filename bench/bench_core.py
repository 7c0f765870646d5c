"""Arithmetic-core benchmarks (issue 2): scoring and training rates as fractions of the machine's GEMM rate,
complexity classification rate, and peak memory while scoring in blocks."""

from __future__ import annotations

import time

import numpy as np
import torch

from arith.complexity import classify
from arith.model import ModelShape, Transformer
from arith.questions import OpMix, random_block, training_batch
from arith.scoring import answer_nll, score
from arith.verify import DEFAULT_BLOCK
from arith.vocab import ADD, Layout, encode
from bench.common import emit, forward_flops, machine, matmul_flops_per_s, peak_rss_mb

N_DIGITS = 6
SHAPE = ModelShape(n_layers=2, n_heads=3, n_ctx=Layout(N_DIGITS).n_ctx)  # add_d6_l2_h3: d_model 510, d_head 170


def bench_scoring(blocks: int = 2, block_size: int = DEFAULT_BLOCK) -> None:
    model = Transformer(SHAPE).eval()
    layout = Layout(N_DIGITS)
    gemm = matmul_flops_per_s(2048 * SHAPE.n_ctx // 4, SHAPE.d_model, SHAPE.d_mlp)
    score(model, encode(*random_block(1, 99, N_DIGITS, ADD, 512)), N_DIGITS)  # warm-up
    n, t0 = 0, time.perf_counter()
    for k in range(blocks):
        x, y, op = random_block(1, k, N_DIGITS, ADD, block_size)
        score(model, encode(x, y, op), N_DIGITS)
        n += len(op)
    dt = time.perf_counter() - t0
    qps = n / dt
    ratio = qps * forward_flops(SHAPE, layout.n_answer) / gemm
    ctx = {"shape": "add_d6_l2_h3 (d_model 510, d_head 170)", "questions": n} | machine()
    emit("scoring_throughput", round(qps, 1), "questions/s", **ctx)
    emit("scoring_flop_ratio", round(ratio, 3), "achieved/matmul FLOP/s", target=">= 0.6",
         matmul_gflops=round(gemm / 1e9, 1), **ctx)
    emit("scoring_peak_rss", round(peak_rss_mb(), 1), "MB", target="< 2048", block_size=block_size, **ctx)


def bench_training(steps: int = 30) -> None:
    model = Transformer(SHAPE)
    opt = torch.optim.AdamW(model.parameters(), lr=8e-5, weight_decay=0.1, betas=(0.9, 0.98), fused=True)
    layout = Layout(N_DIGITS)
    ans = slice(layout.answer_start, layout.n_ctx)
    mix = OpMix(100, 0, 0)
    gemm = matmul_flops_per_s(64 * SHAPE.n_ctx, SHAPE.d_model, SHAPE.d_mlp)

    def step(k):
        tokens = torch.from_numpy(encode(*training_batch(1, k, N_DIGITS, mix, 64)))
        loss = answer_nll(model(tokens, logit_positions=layout.predict_slice), tokens[:, ans]).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for k in range(3):
        step(k)
    t0 = time.perf_counter()
    for k in range(steps):
        step(k)
    sps = steps / (time.perf_counter() - t0)
    ratio = sps * 64 * 3 * forward_flops(SHAPE, layout.n_answer) / gemm
    ctx = {"shape": "add_d6_l2_h3", "batch": 64} | machine()
    emit("training_steps", round(sps, 2), "steps/s", **ctx)
    emit("training_flop_ratio", round(ratio, 3), "achieved/matmul FLOP/s", target=">= 0.5",
         matmul_gflops=round(gemm / 1e9, 1), note="3x forward FLOPs per step", **ctx)


def bench_classify(n: int = 1_000_000) -> None:
    x, y, op = random_block(2, 0, N_DIGITS, ADD, n // 2)
    xs, ys, ops = random_block(2, 0, N_DIGITS, 1, n // 2)
    x, y, op = np.concatenate([x, xs]), np.concatenate([y, ys]), np.concatenate([op, ops])
    classify(x[:1000], y[:1000], op[:1000])
    best = min(_timed(lambda: classify(x, y, op)) for _ in range(3))
    emit("classify_throughput", round(n / best), "questions/s", target=">= 1e6 on one core", questions=n,
         threads="numpy (single-threaded)")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    torch.manual_seed(0)
    bench_classify()
    bench_training()
    bench_scoring()


if __name__ == "__main__":
    main()
