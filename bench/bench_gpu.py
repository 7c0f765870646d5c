"""The issue-12 GPU figure: the 2M-question test of add_d6_l2_h3 (1M random additions, 1M random subtractions,
the reference's 1M-test seed and enrichment) on one GPU, as `varith verify --cluster none` runs it: every block
generated, scored by the fast forward at `--precision auto` with fp32 verdicts, and counted.

The weights are random with one unembedding bias raised (margins like a trained model's, the same FLOPs; see
bench_precision). Where no CUDA device is present the figure is one line saying so (`value` null). With one,
the first and last blocks are also scored by the plain fp32 forward and their counts compared.
"""

from __future__ import annotations

import json
import time

import torch

from arith.device import resolve_precision
from arith.model import ModelShape, Transformer
from arith.verify import RandomSuite, evaluate_block
from arith.vocab import ADD, SUB, Layout
from bench.common import emit, machine
from jobs.stages.verify import verify_in_process

QUESTIONS = 1_000_000  # per operation
BLOCK = 100_000


def main() -> None:
    ctx = {"shape": "add_d6_l2_h3 (d_model 510, d_head 170), confident random weights", "target": "< 10 s on one H100"}
    if not torch.cuda.is_available():
        emit("verify_2m_gpu_seconds", None, "s", skipped="no CUDA device on this machine", **ctx | machine())
        return
    run(torch.device("cuda"), QUESTIONS, ctx)


def run(device: torch.device, questions: int, ctx: dict) -> None:
    """Time the test of `questions` per operation on `device` and emit the figure (a CPU runs it too, small)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model = Transformer(ModelShape(n_layers=2, n_heads=3, n_ctx=Layout(6).n_ctx))
    model.reset_parameters(torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.unembed.b_U[0] += 30.0
    model = model.to(device).eval()
    suite = RandomSuite(6, (ADD, SUB), questions, block_size=min(BLOCK, questions))
    precision = resolve_precision("auto", device)
    evaluate_block(model, RandomSuite(6, (ADD,), 4096, block_size=4096), 0, precision=precision)  # warm-up
    sync()
    t0 = time.perf_counter()
    total = verify_in_process(model, suite, precision="auto", progress=False)
    sync()
    seconds = time.perf_counter() - t0
    same = all(
        _key(evaluate_block(model, suite, k, precision=precision)) == _key(evaluate_block(model, suite, k, fast=False))
        for k in (0, suite.n_blocks - 1)
    )
    emit(
        "verify_2m_gpu_seconds",
        round(seconds, 2),
        "s",
        questions=int(total.tested.sum()),
        questions_per_s=round(total.tested.sum() / seconds, 1),
        precision=precision,
        rechecked=int(total.rechecked),
        sampled_blocks_equal_plain_fp32=same,
        gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        **ctx | machine(),
    )


def _key(counts) -> str:
    """A block's counts without the fast path's bookkeeping (what the report is made of)."""
    return json.dumps(
        [counts.tested.tolist(), counts.failed.tolist(), counts.wrong_pos.tolist(), counts.fail_pred.tolist()]
    )


if __name__ == "__main__":
    main()
