"""Intervention-study benchmarks (issue 22) on the add_d6_l2_h3 shape (d_model 510).

- Patching: (node x pair) interventions per second, batched (`analysis.interventions.flip_counts`: every node of
  one layer and position as row groups of one forward, from the clean run's prefix) against one intervention per
  forward (one pair, one node: how the researchers' code runs), alternated in the same run; the batched flips are
  checked against the plain ones for the sampled interventions. Also one node per forward over all pairs.
- Sufficiency: (keep-set x question) evaluations per second, batched (`keep_counts`) against one keep-set per
  hooked forward over the block.
- Wall time of a whole sufficiency study (circuit, complement, all replaced, 10 random sets, the untrained twin's
  means and the same keep-sets on it, the restoration groups; 3 seeds) and of a whole patching map for one answer
  digit (test pairs and matched null pairs, every node), with small question counts.

The model has random weights and its "answers" are its own greedy answers (as bench_ablate), so the work per
intervention is a trained model's.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from analysis import interventions as iv
from arith.decode import greedy_answers
from arith.model import ModelShape, Patch
from arith.questions import random_block
from arith.vocab import ADD, SUB, Layout, encode
from bench.common import emit, machine

N_DIGITS = 6
LAYOUT = Layout(N_DIGITS)
SHAPE = ModelShape(n_layers=2, n_heads=3, n_ctx=LAYOUT.n_ctx)
CTX = {"shape": "add_d6_l2_h3 (d_model 510)"}


def _questions(model, per_op: int, seed: int = 0):
    xa, ya, oa = random_block(seed, 0, N_DIGITS, ADD, per_op, purpose="bench-study")
    xs, ys, os_ = random_block(seed, 0, N_DIGITS, SUB, per_op, purpose="bench-study")
    x, y, op = np.concatenate([xa, xs]), np.concatenate([ya, ys]), np.concatenate([oa, os_])
    prompts = torch.from_numpy(encode(x, y, op)[:, : LAYOUT.n_question])
    return x, y, op, greedy_answers(model, prompts, LAYOUT)


def _plain_flip(model, tok, ctok_cache, node, a, base) -> np.ndarray:
    """One node patched into the rows of `tok` in one plain hooked forward: flipped rows."""
    if node.is_mlp:
        name = f"blocks.{node.layer}.mlp.hook_post"
        patch = Patch(pos=node.position, value=ctok_cache[name][:, node.position], kind="pos")
    else:
        name = f"blocks.{node.layer}.attn.hook_z"
        patch = Patch(pos=node.position, head=node.num, value=ctok_cache[name][:, node.position, node.num])
    pred = model(tok, hooks={name: patch}, logit_positions=LAYOUT.predict_slice)[:, a].argmax(-1)
    return (pred != base).numpy()


@torch.inference_mode()
def bench_patching(model, pairs: int = 64, k: int = 2, rounds: int = 2, plain_sample: int = 60) -> None:
    x, y, op, _ = _questions(model, pairs // 2)
    clean_q, corrupt_q = iv.matched_pairs(x, y, op, iv.Change("x", k), seed=0)
    nodes = iv.node_universe(SHAPE)
    a = iv.answer_index(LAYOUT, k)
    reach = LAYOUT.predict_slice.start + a
    live = [n for n in nodes if n.position <= reach]  # the nodes that can change A{k} (the others cost nothing)
    tok, ctok = torch.from_numpy(encode(*clean_q)), torch.from_numpy(encode(*corrupt_q))
    points = [f"blocks.{L}.{p}" for L in range(SHAPE.n_layers) for p in ("attn.hook_z", "mlp.hook_post")]
    _, cache = model.run_with_cache(ctok, points)
    base = model(tok, logit_positions=LAYOUT.predict_slice)[:, a].argmax(-1)
    rng = np.random.default_rng(0)
    sample = [
        (int(i), int(r))
        for i, r in zip(rng.integers(0, len(live), plain_sample), rng.integers(0, len(tok), plain_sample), strict=True)
    ]
    b_s = p_s = n_s = 0.0
    b_n = p_n = n_n = 0
    same = True
    for _ in range(rounds):
        t0 = time.perf_counter()
        flips = iv.flip_counts(model, clean_q, corrupt_q, live, k)
        b_s += time.perf_counter() - t0
        b_n += len(live) * len(tok)
        # one intervention (node, pair) per forward
        t0 = time.perf_counter()
        hits = np.zeros(len(live), dtype=np.int64)
        for i, r in sample:
            one = {name: t[r : r + 1] for name, t in cache.items()}
            hits[i] += int(_plain_flip(model, tok[r : r + 1], one, live[i], a, base[r : r + 1])[0])
        p_s += time.perf_counter() - t0
        p_n += len(sample)
        # one node per forward over every pair, and the check that the batched flips are the plain ones
        t0 = time.perf_counter()
        for i in range(0, len(live), max(1, len(live) // 12)):
            same &= int(_plain_flip(model, tok, cache, live[i], a, base).sum()) == int(flips.flips[i])
            n_n += len(tok)
        n_s += time.perf_counter() - t0
    batched, plain, per_node = b_n / b_s, p_n / p_s, n_n / n_s
    ctx = CTX | {"pairs": len(tok), "nodes": len(live), "digit": f"A{k}"} | machine()
    emit("patching_batched", round(batched), "(node x pair)/s", **ctx)
    emit("patching_one_per_forward", round(plain, 1), "(node x pair)/s", note="one pair, one node per forward", **ctx)
    emit("patching_one_node_per_forward", round(per_node), "(node x pair)/s", note="all pairs in one forward", **ctx)
    emit(
        "patching_batched_vs_one_per_forward",
        round(batched / plain, 1),
        "ratio",
        target=">= 50",
        same_flips=same,
        **ctx,
    )
    emit("patching_batched_vs_one_node_per_forward", round(batched / per_node, 2), "ratio", **ctx)


@torch.inference_mode()
def bench_sufficiency_rate(model, questions: int = 32, rounds: int = 2) -> None:
    x, y, op, answers = _questions(model, questions // 2)
    means = iv.study_means(model, x, y, op, answers)
    universe = iv.node_universe(SHAPE)
    circuit = [n for n in universe if n.position >= LAYOUT.answer_start - 1][:24]
    keep = iv.Sufficiency.plan(SHAPE, circuit, n_random=10, seed=0).keep
    tok = torch.from_numpy(encode(x, y, op))
    tok[:, LAYOUT.answer_start :] = torch.from_numpy(answers)
    b_s = p_s = 0.0
    b_n = p_n = 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        iv.keep_counts(model, x, y, op, keep, means, answers=answers)
        b_s += time.perf_counter() - t0
        b_n += len(keep) * len(x)
        t0 = time.perf_counter()
        for g in (1, 2, 4):  # one keep-set per hooked forward
            zr, mr = iv._masks(universe, ~keep[g : g + 1], SHAPE, "cpu")
            hooks = {}
            for L in range(SHAPE.n_layers):
                zm, mm = zr[L][0][None, :, :, None], mr[L][0][None, :, None]
                hooks[f"blocks.{L}.attn.hook_z"] = lambda t, zm=zm, v=means.z[L]: torch.where(zm, v, t)
                hooks[f"blocks.{L}.mlp.hook_post"] = lambda t, mm=mm, v=means.mlp_post[L]: torch.where(mm, v, t)
            model(tok, hooks=hooks, logit_positions=LAYOUT.predict_slice)
            p_n += len(x)
        p_s += time.perf_counter() - t0
    ctx = CTX | {"questions": len(x), "keep_sets": len(keep)} | machine()
    emit("sufficiency_batched", round(b_n / b_s), "(keep-set x question)/s", **ctx)
    emit("sufficiency_one_keep_set_per_forward", round(p_n / p_s), "(keep-set x question)/s", **ctx)
    emit("sufficiency_batched_vs_one_per_forward", round((b_n / b_s) / (p_n / p_s), 2), "ratio", **ctx)


@torch.inference_mode()
def bench_whole_sufficiency(model, questions: int = 32, seeds: int = 3, n_random: int = 10) -> None:
    x, y, op, answers = _questions(model, questions // 2)
    universe = iv.node_universe(SHAPE)
    circuit = [n for n in universe if n.position >= LAYOUT.answer_start - 1][:24]
    t0 = time.perf_counter()
    means = iv.study_means(model, x, y, op, answers)
    per_seed = []
    for seed in range(seeds):
        twin = iv.untrained_twin(SHAPE, seed)
        twin_means = iv.study_means(twin, x, y, op)
        plan = iv.Sufficiency.plan(SHAPE, circuit, n_random, seed)
        _, groups = iv.restoration_groups(SHAPE, circuit, LAYOUT)
        counts = iv.keep_counts(model, x, y, op, np.concatenate([plan.keep, groups]), means, seed=seed, answers=answers)
        iv.keep_counts(twin, x, y, op, plan.keep[:4], twin_means, seed=seed)
        per_seed.append(counts)
        iv.completeness(counts)
    iv.seeds_report(per_seed, [str(i) for i in range(len(per_seed[0].failed))])
    emit(
        "sufficiency_study_wall_time",
        round(time.perf_counter() - t0, 1),
        "s",
        questions=len(x),
        seeds=seeds,
        random_sets=n_random,
        note="total over seeds: means once; per seed 4 figures + random sets + 7 restoration groups, twin means + 4",
        **CTX,
        **machine(),
    )


@torch.inference_mode()
def bench_whole_patching(model, pairs: int = 48, k: int = 2) -> None:
    x, y, op, _ = _questions(model, pairs // 2, seed=1)
    nodes = iv.node_universe(SHAPE)
    t0 = time.perf_counter()
    test = iv.flip_counts(model, *iv.matched_pairs(x, y, op, iv.Change("x", k), seed=0), nodes, k)
    null = iv.flip_counts(model, *iv.null_pairs(x, y, op, k, seed=0), nodes, k)
    heads = [n for n in nodes if n.is_head]
    iv.path_flip_counts(model, *iv.matched_pairs(x, y, op, iv.Change("x", k), seed=0), heads, k)
    emit(
        "patching_map_wall_time",
        round(time.perf_counter() - t0, 1),
        "s",
        pairs=test.tested,
        null_pairs=null.tested,
        nodes=len(nodes),
        digit=f"A{k}",
        note="test and null maps over every node, plus path patching of every head",
        **CTX,
        **machine(),
    )


def main() -> None:
    torch.manual_seed(0)
    model = iv.untrained_twin(SHAPE, 0)
    bench_patching(model)
    bench_sufficiency_rate(model)
    bench_whole_sufficiency(model)
    bench_whole_patching(model)


if __name__ == "__main__":
    main()
