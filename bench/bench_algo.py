"""Algorithm-search benchmarks (issue 10) on the add_d6_l2_h3 shape (d_model 510): interventions per second,
batched (many (unit, test) rows per forward, one `Patch` per layer) against one patched forward per
intervention, alternated in the same run; and the wall time of the whole search (plan, interventions, tags).

The model has random weights, so its answers are not the tests' true answers and few units pass; the work per
intervention does not depend on the weights. The behaviour records are synthetic, shaped like a trained
model's: every head at every position is useful, the heads of one layer at one position attend one digit pair
(D_a, D'_a, a = (position + layer) mod n) and impact every digit, so every task has candidates and same-layer
pairs at several positions per digit (a trained model has fewer useful heads).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from analysis import algo
from analysis import algo_tasks as at
from arith.model import ModelShape, Transformer
from arith.vocab import ADD, SUB, Layout
from bench.common import emit, machine

N_DIGITS = 6
LAYOUT = Layout(N_DIGITS)
SHAPE = ModelShape(n_layers=2, n_heads=3, n_ctx=LAYOUT.n_ctx)


def _model() -> Transformer:
    model = Transformer(SHAPE)
    model.reset_parameters(torch.Generator().manual_seed(0))
    return model.eval()


def _records() -> list[dict]:
    n = N_DIGITS
    digits = "".join(str(d) for d in range(n + 1, -1, -1))
    out = []
    for p in range(LAYOUT.n_ctx):
        for layer in range(SHAPE.n_layers):
            a = (p + layer) % n
            attn = [f"Attn:P{n - 1 - a}=45", f"Attn:P{2 * n - a}=40", f"Attn:P{n}=10", f"Attn:P{2 * n + 2}=5"]
            for h in range(SHAPE.n_heads):
                tags = ["Fail%:5", f"Impact:A{digits}", "Math.Add:S012345", "Math.Sub:M012345", *attn]
                out.append({"position": p, "layer": layer, "is_head": True, "num": h, "tags": tags})
    return out


def bench_intervention_rate(rounds: int = 3, plain_rows: int = 48) -> None:
    model, records = _model(), _records()
    nodes = [algo.record_node(r) for r in records]
    (tp,) = algo.plan(records, (at.SA,), N_DIGITS, compat=False)
    store = algo.question_tokens([t.store for t in tp.tests], ADD, N_DIGITS)
    clean = algo.question_tokens([t.clean for t in tp.tests], ADD, N_DIGITS)
    trials = algo.Trials.of_plan(tp, nodes)
    picks = np.linspace(0, tp.n_trials - 1, plain_rows).astype(int)
    batched_s = plain_s = 0.0
    batched_n = plain_n = 0
    same = True
    for _ in range(rounds):
        t0 = time.perf_counter()
        pred = algo.intervened_answers(model, LAYOUT, store, clean, trials)
        batched_s += time.perf_counter() - t0
        batched_n += tp.n_trials
        t0 = time.perf_counter()
        for r in picks.tolist():
            unit = tuple(nodes[i] for i in tp.units[tp.unit[r]].nodes)
            j = tp.test[r]
            plain = algo.intervened_answer_plain(model, LAYOUT, store[j : j + 1], clean[j : j + 1], unit)
            same &= bool(np.array_equal(plain, pred[r]))
        plain_s += time.perf_counter() - t0
        plain_n += len(picks)
    batched, plain = batched_n / batched_s, plain_n / plain_s
    ctx = {"shape": "add_d6_l2_h3 (d_model 510)", "task": "SA", "trials": tp.n_trials} | machine()
    emit("algo_interventions_batched", round(batched), "interventions/s", **ctx)
    emit("algo_interventions_one_per_forward", round(plain, 1), "interventions/s", **ctx)
    emit("algo_batched_vs_plain", round(batched / plain, 1), "ratio", same_answers=same, **ctx)


def bench_whole_search() -> None:
    model, records = _model(), _records()
    for label, ops in (("add", (ADD,)), ("mix", (ADD, SUB))):
        tasks = at.notebook_order(ops)
        t0 = time.perf_counter()
        maths = algo.run_search(model, records, ops, N_DIGITS, compat=False, pure_add=ops == (ADD,))
        seconds = time.perf_counter() - t0
        plans = algo.plan(records, tasks, N_DIGITS, compat=False)
        emit(
            f"algo_whole_search_wall_time_{label}",
            round(seconds, 2),
            "s",
            tasks=len(tasks),
            interventions=sum(tp.n_trials for tp in plans),
            useful_heads=len(records),
            tagged=sum(1 for r in maths if r["tags"]),
            note="plan + every task's interventions + search, one process, synthetic behaviour records",
            **machine(),
        )


def main() -> None:
    torch.manual_seed(0)
    bench_intervention_rate()
    bench_whole_search()


if __name__ == "__main__":
    main()
