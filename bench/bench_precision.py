"""Verification at bf16 speed with fp32 verdicts, and exhaustive blocks that share their prefixes (issue 12).

On the add_d6_l2_h3 widths (d_model 510, d_head 170, random weights): questions per second of the plain fp32
path, of the fast forward (arith.prefix) in fp32 and in bf16 with fp32 re-checks (random 6-digit questions), and
of an exhaustive 4-digit block with shared prefixes (fp32 and bf16), each as a ratio to the plain fp32 path on
the same questions and to the GEMM rate of its precision (plain-path FLOPs per question, so the fast forward counts
the work it avoids). Every fast run's predictions and verdicts are checked against the plain fp32 path's.

`--precision auto` against fp32 (issue 19), near-tied and confident logits: `verify_auto_vs_fp32_near_tied`,
`verify_auto_vs_fp32_confident` (`auto_vs_fp32`; alone: `python -c "import bench.bench_precision as b;
b.auto_vs_fp32({})"`).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from arith.device import bf16_supported
from arith.model import ModelShape, Transformer
from arith.questions import exhaustive_block, random_block
from arith.scoring import score
from arith.vocab import ADD, Layout, encode
from bench.common import emit, forward_flops, machine, matmul_flops_per_s

D6 = Layout(6)
D4 = Layout(4)


def _model(layout: Layout) -> Transformer:
    model = Transformer(ModelShape(n_layers=2, n_heads=3, n_ctx=layout.n_ctx))  # d_model 510, d_head 170
    model.reset_parameters(torch.Generator().manual_seed(0))
    return model.eval()


def _timed(fn, repeats: int = 2):
    """(best seconds, result) over `repeats` runs after one warm-up."""
    result = fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def _same(fast, plain) -> bool:
    return bool(np.array_equal(fast.pred, plain.pred) and np.array_equal(fast.failed, plain.failed))


def main() -> None:
    torch.manual_seed(0)
    rates = {
        "fp32": matmul_flops_per_s(1024 * D6.n_ctx, 510, 2040),
        "bf16": matmul_flops_per_s(1024 * D6.n_ctx, 510, 2040, dtype=torch.bfloat16),
    }
    ctx = {
        "shape": "add_d6_l2_h3 widths (d_model 510, d_head 170), random weights",
        "bf16_hardware": bf16_supported(torch.device("cpu")),
    }
    # the targets are for a CPU with bf16 instructions; elsewhere bf16 is emulated (slower than fp32)
    ctx["targets_apply"] = ctx["bf16_hardware"]
    ctx |= machine() | {f"matmul_gflops_{p}": round(r / 1e9, 1) for p, r in rates.items()}

    def figure(name, questions, seconds, base_s, precision, layout, scores, plain, **extra):
        q_per_s = questions / seconds
        flops = forward_flops(_model_shape(layout), layout.n_answer)
        emit(
            name,
            round(q_per_s, 1),
            "questions/s",
            vs_plain_fp32=round(base_s / seconds, 2),
            flop_ratio=round(q_per_s * flops / rates[precision], 3),
            precision=precision,
            questions=questions,
            rechecked=scores.rechecked,
            logit_error_bound=round(scores.bound, 5),
            verdicts_equal_fp32=_same(scores, plain),
            **extra,
            **ctx,
        )

    # random 6-digit questions
    n = 8192
    tokens = encode(*random_block(1, 0, 6, ADD, n))
    base_s, plain = _timed(lambda: score(_M6, tokens, 6))
    figure("verify_fp32_plain", n, base_s, base_s, "fp32", D6, plain, plain, target="the reference")
    t, fast = _timed(lambda: score(_M6, tokens, 6, fast=True))
    figure("verify_fp32_fast", n, t, base_s, "fp32", D6, fast, plain, target="what fp32 verification runs")
    t, fast = _timed(lambda: score(_M6, tokens, 6, precision="bf16"))
    figure("verify_bf16_rechecked", n, t, base_s, "bf16", D6, fast, plain, target=">= 2x plain fp32")
    # random weights have small logit margins everywhere (most questions are re-checked); a trained model is
    # confident. The same weights with one unembedding bias raised by 30 are confident too (same FLOPs)
    t, fast = _timed(lambda: score(_M6C, tokens, 6, precision="bf16"))
    confident_plain = score(_M6C, tokens, 6)
    figure(
        "verify_bf16_rechecked_confident",
        n,
        t,
        base_s,
        "bf16",
        D6,
        fast,
        confident_plain,
        target=">= 2x plain fp32",
        note="b_U[0] += 30: margins like a trained model's",
    )
    # one exhaustive block of 4-digit questions (x major, y minor), shared prefixes, confident weights
    start = 10**8 // 2
    tokens = encode(*exhaustive_block(4, ADD, start, start + 20_000))
    base_s, plain = _timed(lambda: score(_M4, tokens, 4), repeats=1)
    figure("verify_exhaustive_fp32_plain", 20_000, base_s, base_s, "fp32", D4, plain, plain, target="the reference")
    t, fast = _timed(lambda: score(_M4, tokens, 4, prefix=True), repeats=1)
    figure("verify_exhaustive_fp32_prefix", 20_000, t, base_s, "fp32", D4, fast, plain, target=">= 4x plain fp32")
    t, fast = _timed(lambda: score(_M4, tokens, 4, precision="bf16", prefix=True), repeats=1)
    figure("verify_exhaustive_bf16_prefix", 20_000, t, base_s, "bf16", D4, fast, plain, target=">= 4x plain fp32")
    auto_vs_fp32(ctx | {"targets_apply": True})


AUTO_QUESTIONS = 20_000  # per figure; the probe's cost is counted in auto's time


def auto_vs_fp32(ctx: dict) -> None:
    """`--precision auto` against fp32 on random 6-digit questions (add_d6_l2_h3 widths): near-tied logits (random
    weights: bf16 would re-score most questions) and confident ones (b_U[0] += 30). Auto's time includes its
    decision: the probe (the bf16 share of re-checks, and the speeds when the share does not decide) runs as if
    the CPU had bf16 instructions (`native_bf16=True`, whatever this CPU has), and with a 0 question minimum, so
    it probes although the CLI would not on a run this small (a worst case for the probe's share of the time).
    The target: auto >= 0.95x fp32 on both."""
    from arith.verify import RandomSuite, choose_precision, evaluate_block

    suite = RandomSuite(6, (ADD,), AUTO_QUESTIONS, block_size=5000)

    def run(model, precision):
        return [evaluate_block(model, suite, k, precision=precision) for k in range(suite.n_blocks)]

    def timed_fp32(model):
        t0 = time.perf_counter()
        out = run(model, "fp32")
        return time.perf_counter() - t0, out

    def timed_auto(model):
        t0 = time.perf_counter()
        choice = choose_precision(model, suite, native_bf16=True, min_questions=0)
        out = run(model, choice.precision)
        return time.perf_counter() - t0, out, choice

    for figure_name, model in (("verify_auto_vs_fp32_near_tied", _M6), ("verify_auto_vs_fp32_confident", _M6C)):
        evaluate_block(model, suite, 0, precision="fp32")  # warm-up
        # fp32, auto, auto, fp32 (drift cancels), best of each: one run of each alone varies by +-20% here
        fp32_a, fp32 = timed_fp32(model)
        auto_a, auto, choice = timed_auto(model)
        auto_b = timed_auto(model)[0]
        fp32_b = timed_fp32(model)[0]
        fp32_s, auto_s = min(fp32_a, fp32_b), min(auto_a, auto_b)
        same = all(
            np.array_equal(a.failed, b.failed) and np.array_equal(a.fail_pred, b.fail_pred)
            for a, b in zip(auto, fp32, strict=True)
        )
        emit(
            figure_name,
            round(fp32_s / auto_s, 3),
            "x fp32 speed",
            auto_s=round(auto_s, 2),
            fp32_s=round(fp32_s, 2),
            questions=AUTO_QUESTIONS,
            auto_chose=choice.precision,
            reason=choice.reason,
            verdicts_equal_fp32=same,
            target=">= 0.95x fp32",
            **ctx,
        )


def _model_shape(layout: Layout) -> ModelShape:
    return ModelShape(n_layers=2, n_heads=3, n_ctx=layout.n_ctx)


_M6 = _model(D6)
_M4 = _model(D4)
_M6C = _model(D6)
with torch.no_grad():
    _M6C.unembed.b_U[0] += 30.0
    _M4.unembed.b_U[0] += 30.0  # exhaustive blocks: confident margins too (see main)


if __name__ == "__main__":
    main()
