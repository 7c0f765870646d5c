"""Intervention studies, correct by construction: the batched, prefix-reusing figures of analysis.interventions
against plain forwards (one intervention per forward, hooks or a hand-written layer loop) on a trained 1-layer
model (the demo) and a random 2-layer model that answers its own greedy answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis import interventions as iv
from analysis.intervals import mean_interval, wilson
from arith.decode import greedy_answers
from arith.model import ModelShape, Patch, attn_out, mlp_out, mlp_post, qkv, unembed
from arith.questions import random_block, rng_for
from arith.vocab import ADD, SUB, Layout, answer_digits, encode, question_class


class Case:
    """A model, questions (x, y, op), the answers it is scored against, and the study means."""

    def __init__(self, model, x, y, op, answers):
        self.model, self.x, self.y, self.op, self.answers = model, x, y, op, answers
        self.layout = Layout(x.shape[1])
        self.tokens = torch.from_numpy(encode(x, y, op))
        if answers is not None:
            self.tokens[:, self.layout.answer_start :] = torch.from_numpy(answers)
        self.means = iv.study_means(model, x, y, op, answers)
        self.universe = iv.node_universe(model.shape)


def _questions(n, per_op, seed=7):
    xa, ya, oa = random_block(seed, 0, n, ADD, per_op)
    xs, ys, os_ = random_block(seed, 0, n, SUB, per_op)
    return np.concatenate([xa, xs]), np.concatenate([ya, ys]), np.concatenate([oa, os_])


@pytest.fixture(scope="module")
def random2() -> Case:
    layout = Layout(3)
    shape = ModelShape(n_layers=2, n_heads=3, n_ctx=layout.n_ctx, d_model=48, d_head=16, d_mlp=96)
    model = iv.untrained_twin(shape, 1)
    x, y, op = _questions(3, 40)
    prompts = torch.from_numpy(encode(x, y, op)[:, : layout.n_question])
    return Case(model, x, y, op, greedy_answers(model, prompts, layout))


@pytest.fixture(scope="module")
def trained(demo_model) -> Case:
    from arith.weights import load_model, model_info

    shape, _, _ = model_info(demo_model)
    model = load_model(demo_model, shape).eval()
    x, y, op = random_block(3, 0, 2, ADD, 120)
    return Case(model, x, y, op, None)


@pytest.fixture(params=["random2", "trained"])
def case(request) -> Case:
    return request.getfixturevalue(request.param)


# ------------------------------------------------------------------------------------------------ plain paths


@torch.inference_mode()
def plain_logits(model, tokens, layout, z_edit=None, post_edit=None, mlp_in=None):
    """A hand-written forward, layer by layer: `z_edit(L, z)` / `post_edit(L, post)` return the edited head
    outputs / MLP activations; `mlp_in` = (layer, position, delta [B, d]) adds delta to that MLP's input only."""
    P = tokens.shape[1]
    x = model.embed.W_E[tokens] + model.pos_embed.W_pos[:P]
    mask = torch.tril(torch.ones(P, P, dtype=torch.bool))
    for L, blk in enumerate(model.blocks):
        q, k, v = qkv(blk.attn, blk.ln1(x))
        pattern = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).masked_fill(~mask, float("-inf")).softmax(-1)
        z = (pattern @ v).transpose(1, 2)
        if z_edit is not None:
            z = z_edit(L, z)
        x = x + attn_out(blk.attn, z.contiguous())
        inp = blk.ln2(x)
        if mlp_in is not None and mlp_in[0] == L:
            inp = inp.clone()
            inp[:, mlp_in[1]] = blk.ln2(x[:, mlp_in[1]] + mlp_in[2])
        post = mlp_post(blk.mlp, inp)
        if post_edit is not None:
            post = post_edit(L, post)
        x = x + mlp_out(blk.mlp, post)
    return unembed(model, x[:, layout.predict_slice])


def plain_counts(case: Case, logits_list) -> iv.Counts:
    onehot = np.eye(iv.N_CLASSES, dtype=np.int64)[question_class(case.x, case.y, case.op)]
    answers = case.tokens[:, case.layout.answer_start :]
    parts = [iv._score(lg.unsqueeze(0), answers, onehot, "reference") for lg in logits_list]
    return iv.Counts(onehot.sum(0), np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def plain_keep(case: Case, keep: np.ndarray, values) -> torch.Tensor:
    """One keep-set, one forward: every node outside it takes `values[L]` = (z, post)."""
    shape = case.model.shape
    zr = torch.zeros(shape.n_layers, shape.n_ctx, shape.n_heads, dtype=torch.bool)
    mr = torch.zeros(shape.n_layers, shape.n_ctx, dtype=torch.bool)
    for node, kept in zip(case.universe, keep, strict=True):
        if not kept and node.is_mlp:
            mr[node.layer, node.position] = True
        elif not kept:
            zr[node.layer, node.position, node.num] = True
    return plain_logits(
        case.model,
        case.tokens,
        case.layout,
        z_edit=lambda L, z: torch.where(zr[L][None, :, :, None], values[L][0], z),
        post_edit=lambda L, p: torch.where(mr[L][None, :, None], values[L][1], p),
    )


def donor_values(case: Case, seed: int, block: int):
    """The resampling donors by their definition: per layer, question, position (and head) another question drawn
    from rng_for(seed, "study/resample", block), its clean activation."""
    from analysis.ablate import clean_run

    clean = clean_run(case.model, case.tokens, case.layout)
    B, P, H, _ = clean.z[0].shape
    rng = rng_for(seed, "study/resample", block)
    out = []
    for L in range(len(clean.z)):
        dz = rng.integers(0, B - 1, size=(B, P, H))
        dm = rng.integers(0, B - 1, size=(B, P))
        z = torch.empty_like(clean.z[L])
        post = torch.empty_like(clean.mlp_post[L])
        for b in range(B):  # the slow, obvious way
            for p in range(P):
                d = int(dm[b, p])
                post[b, p] = clean.mlp_post[L][d + (d >= b), p]
                for h in range(H):
                    d = int(dz[b, p, h])
                    z[b, p, h] = clean.z[L][d + (d >= b), p, h]
        out.append((z, post))
    return out


# ------------------------------------------------------------------------------------------------ sufficiency


def test_keeping_every_node_is_the_baseline_exactly(case):
    keep = np.ones((1, len(case.universe)), dtype=bool)
    for replace in iv.Replace:
        got = iv.keep_counts(case.model, case.x, case.y, case.op, keep, case.means, replace, answers=case.answers)
        want = plain_counts(case, [plain_logits(case.model, case.tokens, case.layout)])
        np.testing.assert_array_equal(got.failed, want.failed)
        np.testing.assert_array_equal(got.wrong, want.wrong)
    if case.answers is not None:  # the model answers its own answers: nothing fails
        assert got.failed.sum() == 0


def test_replacing_every_node_by_its_mean_is_the_all_mean_forward(case):
    keep = np.zeros((1, len(case.universe)), dtype=bool)
    got = iv.keep_counts(case.model, case.x, case.y, case.op, keep, case.means, answers=case.answers)
    m = case.means
    want = plain_counts(
        case,
        [
            plain_logits(
                case.model,
                case.tokens,
                case.layout,
                z_edit=lambda L, z: m.z[L].expand_as(z),
                post_edit=lambda L, p: m.mlp_post[L].expand_as(p),
            )
        ],
    )
    np.testing.assert_array_equal(got.failed, want.failed)
    np.testing.assert_array_equal(got.wrong, want.wrong)
    assert got.failed.sum() > 0


@pytest.mark.parametrize("replace", list(iv.Replace))
def test_batched_sufficiency_equals_one_keep_set_per_forward(case, replace):
    shape = case.model.shape
    circuit = [n for n in case.universe if n.position >= case.layout.answer_start - 1 and n.layer == 0][:7]
    plan = iv.Sufficiency.plan(shape, circuit, n_random=3, seed=4)
    names, groups = iv.restoration_groups(shape, circuit, case.layout)
    keep = np.concatenate([plan.keep, groups])
    got = iv.keep_counts(
        case.model,
        case.x,
        case.y,
        case.op,
        keep,
        case.means,
        replace,
        seed=4,
        block=2,
        answers=case.answers,
        max_rows=3 * len(case.x),  # several forwards of 3 groups
    )
    if replace is iv.Replace.MEAN:
        values = [(case.means.z[L][None], case.means.mlp_post[L][None]) for L in range(shape.n_layers)]
    else:
        values = donor_values(case, 4, 2)
    want = plain_counts(case, [plain_keep(case, k, values) for k in keep])
    np.testing.assert_array_equal(got.tested, want.tested)
    np.testing.assert_array_equal(got.failed, want.failed)
    np.testing.assert_array_equal(got.wrong, want.wrong)
    assert plan.keep[plan.row("circuit")].sum() == len(circuit) == plan.keep[plan.row("random0")].sum()
    assert (plan.keep[plan.row("complement")] == ~plan.keep[plan.row("circuit")]).all()


def test_greedy_restoration_equals_the_plain_search(random2):
    case = random2
    circuit = [n for n in case.universe if n.layer == 1 and n.position >= case.layout.answer_start - 1]
    c = iv.keep_mask(case.universe, circuit)
    values = [(case.means.z[L][None], case.means.mlp_post[L][None]) for L in range(2)]
    pool = np.array([n.layer == 0 and n.position >= 4 for n in case.universe])  # 36 candidates: a quick test
    batched = iv.greedy_restoration(
        lambda keep: iv.keep_counts(case.model, case.x, case.y, case.op, keep, case.means, answers=case.answers),
        c,
        k=2,
        candidates=pool,
    )
    plain = iv.greedy_restoration(
        lambda keep: plain_counts(case, [plain_keep(case, k, values) for k in keep]), c, 2, candidates=pool
    )
    assert all(pool[i] for i in batched.added)
    assert batched.added == plain.added and len(batched.added) == 2
    np.testing.assert_array_equal(batched.counts.failed, plain.counts.failed)
    assert len(batched.counts.failed) == 3  # the circuit alone, then after each step


def test_completeness_formula():
    counts = iv.Counts(
        tested=np.array([10, 10, 0, 0]),
        failed=np.array([[0, 2, 0, 0], [5, 2, 0, 0], [0, 0, 0, 0], [10, 6, 0, 0]]),
        wrong=np.zeros((4, 4, 3), dtype=np.int64),
    )
    out = iv.completeness(counts)
    np.testing.assert_allclose(out["completeness"][:2], [0.5, 1.0])
    np.testing.assert_allclose(out["normalised"][:2], [0.5, 1.0])
    assert np.isnan(out["completeness"][2])
    report = iv.class_report(counts, iv.SUFFICIENCY_ROWS)
    assert report["circuit"]["ADD"]["accuracy"] == 0.5 and set(report["circuit"]) == {"ADD", "SUB"}
    assert report["circuit"]["ADD"]["lo"] < 0.5 < report["circuit"]["ADD"]["hi"]
    seeds = iv.seeds_report([counts, counts[[1, 1, 1, 1]]], iv.SUFFICIENCY_ROWS)
    assert seeds["baseline"]["ADD"]["accuracy"] == 0.75 and seeds["circuit"]["ADD"]["lo"] == 0.5


def test_intervals():
    w = wilson(np.array([0, 5, 10]), np.array([10, 10, 10]))
    assert w.lo[0] == 0.0 and 0 < w.hi[0] < 0.35 and w.hi[2] == 1.0 and 0.2 < w.lo[1] < 0.5
    m = mean_interval(np.array([[0.5, 1.0], [0.7, 1.0], [0.6, 1.0]]))
    np.testing.assert_allclose(m.value, [0.6, 1.0])
    assert m.lo[0] < 0.6 < m.hi[0] and m.lo[1] == m.hi[1] == 1.0


def test_untrained_twin_is_drawn_from_the_seed():
    shape = ModelShape(n_layers=1, n_heads=2, n_ctx=10, d_model=16, d_head=8, d_mlp=32)
    a, b, c = iv.untrained_twin(shape, 3), iv.untrained_twin(shape, 3), iv.untrained_twin(shape, 4)
    assert torch.equal(a.blocks[0].attn.W_Q, b.blocks[0].attn.W_Q)
    assert not torch.equal(a.blocks[0].attn.W_Q, c.blocks[0].attn.W_Q)


# ------------------------------------------------------------------------------------------------ patching


def test_pairs_change_only_what_they_say():
    x, y, op = _questions(4, 50)
    (cx, cy, cop), (kx, ky, kop) = iv.matched_pairs(x, y, op, iv.Change("y", 2), seed=1)
    assert len(cx) == 100 and (cx == kx).all() and (cop == kop).all()
    assert ((cy != ky).sum(axis=1) == 1).all() and (cy[:, 1] != ky[:, 1]).all()
    (_, _, cop), (_, _, kop) = iv.matched_pairs(x, y, op, iv.Change("op"), seed=1)
    assert (cop != kop).all()
    (cx, cy, cop), (kx, ky, kop) = iv.null_pairs(x, y, op, k=1, seed=1)
    assert len(cx) > 50
    assert not ((cx != kx) | (cy != ky))[:, 2:].any()  # columns 1 and 0 (the last two) never change
    _, mag = answer_digits(cx, cy, cop)
    _, kmag = answer_digits(kx, ky, kop)
    np.testing.assert_array_equal(mag[:, -2:], kmag[:, -2:])  # A1 and A0 are the same
    assert (question_class(cx, cy, cop) == question_class(kx, ky, kop)).all()


def test_patching_a_question_with_itself_flips_nothing(case):
    q = (case.x, case.y, case.op)
    assert iv.flip_counts(case.model, q, q, case.universe, k=0).flips.sum() == 0
    heads = [n for n in case.universe if n.is_head]
    assert iv.path_flip_counts(case.model, q, q, heads, k=1)[1].flips.sum() == 0


@pytest.mark.parametrize("k", [0, 1])
def test_batched_patching_equals_one_node_per_forward(case, k):
    clean_q, corrupt_q = iv.matched_pairs(case.x, case.y, case.op, iv.Change("x", 0), seed=2)
    got = iv.flip_counts(case.model, clean_q, corrupt_q, case.universe, k, max_rows=2 * len(clean_q[0]))
    tok = torch.from_numpy(encode(*clean_q))
    ctok = torch.from_numpy(encode(*corrupt_q))
    points = [f"blocks.{L}.{p}" for L in range(case.model.shape.n_layers) for p in ("attn.hook_z", "mlp.hook_post")]
    _, cache = case.model.run_with_cache(ctok, points)
    a = iv.answer_index(case.layout, k)
    base = case.model(tok, logit_positions=case.layout.predict_slice)[:, a].argmax(-1)
    want = []
    for node in case.universe:
        if node.is_mlp:
            name = f"blocks.{node.layer}.mlp.hook_post"
            patch = Patch(pos=node.position, value=cache[name][:, node.position], kind="pos")
        else:
            name = f"blocks.{node.layer}.attn.hook_z"
            patch = Patch(pos=node.position, head=node.num, value=cache[name][:, node.position, node.num])
        pred = case.model(tok, hooks={name: patch}, logit_positions=case.layout.predict_slice)[:, a].argmax(-1)
        want.append(int((pred != base).sum()))
    np.testing.assert_array_equal(got.flips, want)
    assert got.tested == len(tok) and got.flips.sum() > 0
    cpred = case.model(ctok, logit_positions=case.layout.predict_slice)[:, a].argmax(-1)
    assert got.changed == int((cpred != base).sum())


def test_batched_path_patching_equals_one_path_per_forward(case):
    from analysis.ablate import clean_run

    k = 0
    clean_q, corrupt_q = iv.matched_pairs(case.x, case.y, case.op, iv.Change("y", 0), seed=3)
    heads = [n for n in case.universe if n.is_head]
    paths, got = iv.path_flip_counts(case.model, clean_q, corrupt_q, heads, k)
    tok, ctok = torch.from_numpy(encode(*clean_q)), torch.from_numpy(encode(*corrupt_q))
    clean, corrupt = clean_run(case.model, tok, case.layout), clean_run(case.model, ctok, case.layout)
    a = iv.answer_index(case.layout, k)
    base = plain_logits(case.model, tok, case.layout)[:, a].argmax(-1)
    want = []
    for head, r in paths:
        L, p, h = head.layer, head.position, head.num
        delta = (corrupt.z[L][:, p, h] - clean.z[L][:, p, h]) @ case.model.blocks[L].attn.W_O[h]
        pred = plain_logits(case.model, tok, case.layout, mlp_in=(r, p, delta))[:, a].argmax(-1)
        want.append(int((pred != base).sum()))
    np.testing.assert_array_equal(got.flips, want)
    assert len(paths) == sum(case.model.shape.n_layers - n.layer for n in heads)


def test_flip_map_rates_and_intervals():
    from analysis.ablate import Node

    nodes = [Node.head(3, 0, 1), Node.mlp(4, 1)]
    rows = iv.flip_map(iv.Flips(20, np.array([10, 0]), 12), iv.Flips(10, np.array([1, 0]), 0), nodes)
    assert rows[0]["node"] == "P03L0H1" and rows[0]["rate"] == 0.5 and rows[0]["lo"] < 0.5 < rows[0]["hi"]
    assert rows[0]["null_rate"] == 0.1 and rows[0]["excess"] == pytest.approx(0.4) and rows[1]["rate"] == 0.0
    assert "null_rate" not in iv.flip_map(iv.Flips(5, np.array([1, 2]), 0), iv.Flips(0, np.zeros(2, int), 0), nodes)[0]
