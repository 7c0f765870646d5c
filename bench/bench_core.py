"""Arithmetic-core benchmarks (issue 2): scoring and training rates as fractions of the machine's GEMM rate
(measured in alternating slices of the same run), classification rate, and peak memory while scoring."""

from __future__ import annotations

import time

import numpy as np
import torch

from arith.complexity import classify
from arith.model import ModelShape, Transformer
from arith.questions import OpMix, random_block, training_batch
from arith.scoring import answer_nll, score
from arith.vocab import ADD, SUB, Layout, encode
from bench.common import Interleaved, emit, forward_flops, machine, peak_rss_mb

N_DIGITS = 6
LAYOUT = Layout(N_DIGITS)
SHAPE = ModelShape(n_layers=2, n_heads=3, n_ctx=LAYOUT.n_ctx)  # add_d6_l2_h3: d_model 510, d_head 170


def bench_scoring(chunks: int = 8, chunk: int = 2048) -> None:
    """Score random 6-digit questions in blocks, interleaved with GEMM bursts; then peak memory."""
    model = Transformer(SHAPE).eval()
    score(model, encode(*random_block(1, 99, N_DIGITS, ADD, 512)), N_DIGITS)  # warm-up
    meter = Interleaved(1024 * SHAPE.n_ctx, SHAPE.d_model, SHAPE.d_mlp)
    per_q = forward_flops(SHAPE, LAYOUT.n_answer)
    for k in range(chunks):
        tokens = encode(*random_block(1, k, N_DIGITS, ADD, chunk))
        meter.run(lambda t=tokens: score(model, t, N_DIGITS), per_q * chunk, chunk)
    ctx = {"shape": "add_d6_l2_h3 (d_model 510, d_head 170)", "questions": meter.units} | machine()
    emit("scoring_throughput", round(meter.units_per_s, 1), "questions/s", **ctx)
    emit(
        "scoring_flop_ratio",
        round(meter.ratio, 3),
        "achieved/matmul FLOP/s",
        target=">= 0.6",
        matmul_gflops=round(meter.gemm_rate / 1e9, 1),
        **ctx,
    )


def bench_memory(block: int = 20_000) -> None:
    """Peak RSS while scoring in blocks: bounded by the block and batch size, not by the question count."""
    model = Transformer(SHAPE).eval()
    x, y, op = random_block(1, 0, N_DIGITS, ADD, block)
    score(model, encode(x, y, op), N_DIGITS)
    emit(
        "scoring_peak_rss",
        round(peak_rss_mb(), 1),
        "MB",
        target="< 2048",
        block_size=block,
        note="peak over one 20k-question block; blocks are scored one after another, so 1M questions peak alike",
    )


def bench_training(chunks: int = 6, steps_per_chunk: int = 3) -> None:
    """The training step of arith.train (fused AdamW, answer-token loss) at the recipe's batch of 64."""
    model = Transformer(SHAPE)
    opt = torch.optim.AdamW(model.parameters(), lr=8e-5, weight_decay=0.1, betas=(0.9, 0.98), fused=True)
    ans = slice(LAYOUT.answer_start, LAYOUT.n_ctx)
    mix = OpMix(100, 0, 0)
    batches = [torch.from_numpy(encode(*training_batch(1, k, N_DIGITS, mix, 64))) for k in range(steps_per_chunk)]

    def steps():
        for tokens in batches:
            loss = answer_nll(model(tokens, logit_positions=LAYOUT.predict_slice), tokens[:, ans]).mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    steps()  # warm-up
    meter = Interleaved(64 * SHAPE.n_ctx, SHAPE.d_model, SHAPE.d_mlp)
    per_step = 3 * 64 * forward_flops(SHAPE, LAYOUT.n_answer)
    for _ in range(chunks):
        meter.run(steps, per_step * steps_per_chunk, steps_per_chunk)
    ctx = {"shape": "add_d6_l2_h3", "batch": 64} | machine()
    emit("training_steps", round(meter.units_per_s, 2), "steps/s", **ctx)
    emit(
        "training_flop_ratio",
        round(meter.ratio, 3),
        "achieved/matmul FLOP/s",
        target=">= 0.5",
        matmul_gflops=round(meter.gemm_rate / 1e9, 1),
        note="3x forward FLOPs per step",
        **ctx,
    )


def bench_classify(n: int = 1_000_000) -> None:
    xa, ya, opa = random_block(2, 0, N_DIGITS, ADD, n // 2)
    xs, ys, ops = random_block(2, 0, N_DIGITS, SUB, n // 2)
    x, y, op = np.concatenate([xa, xs]), np.concatenate([ya, ys]), np.concatenate([opa, ops])
    classify(x[:1000], y[:1000], op[:1000])
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        classify(x, y, op)
        best = min(best, time.perf_counter() - t0)
    emit(
        "classify_throughput",
        round(n / best),
        "questions/s",
        target=">= 1e6 on one core",
        questions=n,
        note="numpy, single-threaded; half addition, half subtraction",
    )


def main() -> None:
    torch.manual_seed(0)
    bench_classify()
    bench_training()
    bench_scoring()
    bench_memory()


if __name__ == "__main__":
    main()
