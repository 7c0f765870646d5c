"""The zoo's shapes (issue 21): training steps/s and verification questions/s of add_dN_l2_h3 at the published widths
(d_model 510, d_head 170, d_mlp 2040) for N = 10, 15 and 20 next to N = 6, in the same run, with each one's ratio
to d6.

Training is arith.train's step (fused AdamW, answer-token loss) at the recipe's batch of 64, as bench_core times
it; verification is arith.verify.evaluate_block on random blocks (the fast forward with fp32 verdicts, what
`varith verify` runs). The shapes take turns, chunk by chunk, so on a shared, noisy machine each sees the same
conditions and the ratios stay meaningful even where the absolute rates wander. A sequence grows as n_ctx = 3n+4
(22, 34, 49, 64 positions) and attention as its square, so the rates fall a little faster than 1/n_ctx.
"""

from __future__ import annotations

import time

import torch

from arith.model import ModelShape, Transformer
from arith.questions import OpMix, training_batch
from arith.scoring import answer_nll
from arith.verify import RandomSuite, evaluate_block
from arith.vocab import ADD, Layout, encode
from bench.common import emit, forward_flops, machine

DIGITS = (6, 10, 15, 20)
BATCH = 64


class _Shape:
    """One add_dN_l2_h3 model, its training batches and its verification suite, timed chunk by chunk."""

    def __init__(self, n: int, steps_per_chunk: int, questions_per_chunk: int):
        self.n = n
        self.layout = Layout(n)
        self.shape = ModelShape(n_layers=2, n_heads=3, n_ctx=self.layout.n_ctx)
        self.model = Transformer(self.shape)
        self.model.reset_parameters(torch.Generator().manual_seed(n))  # random weights, TransformerLens's init
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=8e-5, weight_decay=0.1, betas=(0.9, 0.98), fused=True)
        mix = OpMix(100, 0, 0)
        self.batches = [torch.from_numpy(encode(*training_batch(1, k, n, mix, BATCH))) for k in range(steps_per_chunk)]
        self.suite = RandomSuite(n, (ADD,), 10**6, block_size=questions_per_chunk)
        self.block = 0
        self.train_s = self.verify_s = 0.0
        self.steps = self.questions = 0

    def train_chunk(self) -> None:
        ans = slice(self.layout.answer_start, self.layout.n_ctx)
        self.model.train()
        t0 = time.perf_counter()
        for tokens in self.batches:
            loss = answer_nll(self.model(tokens, logit_positions=self.layout.predict_slice), tokens[:, ans]).mean()
            loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        self.train_s += time.perf_counter() - t0
        self.steps += len(self.batches)

    def verify_chunk(self) -> None:
        self.model.eval()
        t0 = time.perf_counter()
        counts = evaluate_block(self.model, self.suite, self.block)
        self.verify_s += time.perf_counter() - t0
        self.questions += int(counts.tested.sum())
        self.block += 1

    def reset(self) -> None:
        self.train_s = self.verify_s = 0.0
        self.steps = self.questions = self.block = 0


def main(rounds: int = 2, steps_per_chunk: int = 2, questions_per_chunk: int = 512) -> None:
    """`rounds` x (`steps_per_chunk` training steps, then `questions_per_chunk` verified questions) per shape,
    the shapes taking turns: about a minute on an idle 2-core CPU (several where others share it)."""
    torch.manual_seed(0)
    shapes = [_Shape(n, steps_per_chunk, questions_per_chunk) for n in DIGITS]
    for s in shapes:  # warm-up (allocator, fused kernels): one step and one small block, not timed
        tokens = s.batches[0]
        s.batches = s.batches[:1]
        s.train_chunk()
        s.batches = [tokens] + [
            torch.from_numpy(encode(*training_batch(1, k, s.n, OpMix(), BATCH))) for k in range(1, steps_per_chunk)
        ]
        evaluate_block(s.model.eval(), RandomSuite(s.n, (ADD,), 64, block_size=64), 0)
        s.reset()
    for _ in range(rounds):
        for s in shapes:
            s.train_chunk()
        for s in shapes:
            s.verify_chunk()
    base = shapes[0]
    base_steps, base_q = base.steps / base.train_s, base.questions / base.verify_s
    for s in shapes:
        name = f"add_d{s.n}_l2_h3"
        ctx = {"shape": f"{name} (d_model 510, d_head 170)", "n_ctx": s.shape.n_ctx} | machine()
        steps = s.steps / s.train_s
        questions = s.questions / s.verify_s
        emit(
            f"training_steps_d{s.n}",
            round(steps, 3),
            "steps/s",
            batch=BATCH,
            steps=s.steps,
            ratio_to_d6=round(steps / base_steps, 3),
            flop_ratio_to_d6=round(forward_flops(s.shape, s.layout.n_answer) / forward_flops(base.shape, 8), 3),
            **ctx,
        )
        emit(
            f"verify_throughput_d{s.n}",
            round(questions, 1),
            "questions/s",
            questions=s.questions,
            ratio_to_d6=round(questions / base_q, 3),
            note="arith.verify.evaluate_block, random addition blocks, fast forward with fp32 verdicts",
            **ctx,
        )


if __name__ == "__main__":
    main()
