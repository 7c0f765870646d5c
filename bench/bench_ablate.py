"""Node-ablation benchmarks (issue 9) on the add_d6_l2_h3 shape (d_model 510): (node x question) evaluations
per second, batched with the clean prefix reused against one node per plain forward, alternated in the same
run so both see the same machine; and the wall time of a whole ablation over the varied questions.

The model has random weights; its "answers" are its own greedy answers, so it answers every question and each
node's ablation fails some of them, as a trained model's would (the work per evaluation does not depend on the
weights). The whole ablation treats all 22 positions as useful (an upper bound: a trained model has fewer).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from analysis.ablate import patch_for
from analysis.ablation import MeanRule, candidate_nodes, node_failures, position_failures, survey
from arith.decode import greedy_answers
from arith.model import ModelShape, Transformer
from arith.questions import OpMix
from arith.scoring import score
from arith.varied import analysis_batch_size, varied_questions
from arith.vocab import Layout, encode
from bench.common import emit, machine

N_DIGITS = 6
LAYOUT = Layout(N_DIGITS)
SHAPE = ModelShape(n_layers=2, n_heads=3, n_ctx=LAYOUT.n_ctx)
REFERENCE_EVALS_PER_S = 28.0  # the reference library on a 2-core CPU: 21 s per node over 622 questions


def _questions() -> torch.Tensor:
    model = _model()
    x, y, op = varied_questions(N_DIGITS, OpMix(100, 0, 0), analysis_batch_size(2, 3))
    prompts = torch.from_numpy(encode(x, y, op)[:, : LAYOUT.n_question]).long()
    return torch.cat([prompts, torch.from_numpy(greedy_answers(model, prompts, LAYOUT))], dim=1)


def _model() -> Transformer:
    model = Transformer(SHAPE)
    model.reset_parameters(torch.Generator().manual_seed(0))
    return model.eval()


def bench_node_rate(rounds: int = 3) -> None:
    model, tokens = _model(), _questions()
    means = survey(model, tokens, LAYOUT, MeanRule.CORRECTED).means
    nodes = candidate_nodes(list(range(LAYOUT.n_ctx)), SHAPE.n_layers, SHAPE.n_heads)
    plain_nodes = nodes[:: max(1, len(nodes) // 8)][:8]  # a spread of layers and positions
    batched_s = plain_s = 0.0
    batched_n = plain_n = 0
    same = True
    for _ in range(rounds):
        t0 = time.perf_counter()
        failed, _pred = node_failures(model, tokens, LAYOUT, means, nodes)
        batched_s += time.perf_counter() - t0
        batched_n += len(nodes) * len(tokens)
        t0 = time.perf_counter()
        for node in plain_nodes:
            name, patch = patch_for(node, means)
            plain = score(model, tokens, N_DIGITS, hooks={name: patch})
            same &= bool(np.array_equal(plain.failed, failed[nodes.index(node)]))
        plain_s += time.perf_counter() - t0
        plain_n += len(plain_nodes) * len(tokens)
    batched, plain = batched_n / batched_s, plain_n / plain_s
    ctx = {"shape": "add_d6_l2_h3 (d_model 510)", "questions": len(tokens), "nodes": len(nodes)} | machine()
    emit("ablation_evaluations", round(batched), "(node x question)/s", target=">= 1400", **ctx)
    emit("ablation_one_node_per_forward", round(plain), "(node x question)/s", **ctx)
    emit("ablation_batched_vs_plain", round(batched / plain, 2), "ratio", same_failures=same, **ctx)
    emit("ablation_vs_reference", round(batched / REFERENCE_EVALS_PER_S, 1), "ratio", target=">= 50", **ctx)


def bench_whole_ablation() -> None:
    model, tokens = _model(), _questions()
    t0 = time.perf_counter()
    sv = survey(model, tokens, LAYOUT, MeanRule.CORRECTED)
    fails = position_failures(model, tokens, LAYOUT, sv.means)
    nodes = candidate_nodes(list(range(LAYOUT.n_ctx)), SHAPE.n_layers, SHAPE.n_heads)
    node_failures(model, tokens, LAYOUT, sv.means, nodes)
    seconds = time.perf_counter() - t0
    emit(
        "ablation_whole_wall_time",
        round(seconds, 1),
        "s",
        questions=len(tokens),
        nodes=len(nodes),
        useful_positions=int((fails > 0).sum()),
        note="survey + useful positions + every node at all 22 positions (upper bound), one process",
        **machine(),
    )


def main() -> None:
    torch.manual_seed(0)
    bench_node_rate()
    bench_whole_ablation()


if __name__ == "__main__":
    main()
