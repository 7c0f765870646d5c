"""The whole zoo (issue 21; upstream spec 14.2, 14.3): every stage's domain pieces for any digit count 5..20.

For n in (5, 12, 13, 20): layout and n_ctx, training and test questions with exact answers, the hand-picked lists
kept by the reference's rule, varied questions, tricase questions for every answer digit, a tiny model's forward
and the verification of a few hundred questions. Impact tags of a d12 model in both grammars and their parser;
quanta maps 64 positions wide; GrokFast as the reference runs it and with the fixes; the catalog of 53 models and
their insert pairings.
"""

from __future__ import annotations

import itertools
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis import algo_tasks
from analysis.behavior import impact_tags
from analysis.impact import format_minor, impact_tag, intervention_impact, names_digit, parse_impact
from analysis.quanta import cell, draw, scale
from arith import complexity, scoring, suites, varied, verify
from arith.errors import InputError
from arith.model import ModelShape, Transformer
from arith.names import INSERT_OF, PICKER_CHOICE, PICKER_INSERT, ZOO, parse_name
from arith.questions import OpMix, training_batch
from arith.train import GROKFAST_ALPHA, GROKFAST_LAMB, TrainConfig, _GrokFast
from arith.vocab import ADD, SUB, Layout, encode, int_to_digits, ints_to_digits, tokens_to_strings
from tests.conftest import train_in

DIGITS = (5, 12, 13, 20)
CATALOG = Path(__file__).resolve().parent.parent / "jobs" / "catalog.toml"


def exact(strings: list[str], n: int) -> list[str]:
    """The full sequences (`a+b=+s`) of questions, answered with Python integers (no digit grids involved)."""
    out = []
    for s in strings:
        a, sym, b = s[:n], s[n], s[n + 1 : 2 * n + 1]
        v = int(a) + int(b) if sym == "+" else int(a) - int(b)
        out.append(f"{a}{sym}{b}=" + ("+" if v >= 0 else "-") + str(abs(v)).rjust(n + 1, "0"))
    return out


@pytest.mark.parametrize("n", DIGITS)
def test_layout_and_model_context(n):
    layout = Layout(n)
    assert layout.n_ctx == 3 * n + 4 and (n != 20 or layout.n_ctx == 64)
    meanings = layout.position_meanings()
    assert len(meanings) == layout.n_ctx and meanings[layout.answer_start] == f"A{n + 1}"
    assert meanings[layout.op_pos] == "OPR" and meanings[-1] == "A0" and meanings[0] == f"D{n - 1}"
    assert layout.position_meanings(pure_add=True)[layout.answer_start] == "+"
    for name in (f"add_d{n}_l2_h3_t40K_s572091", f"ins1_mix_d{n}_l3_h4_t50K_gf_s572091"):
        assert ModelShape.for_name(parse_name(name)).n_ctx == 3 * n + 4


@pytest.mark.parametrize("n", DIGITS)
def test_questions_have_exact_answers(n):
    mix = OpMix(34, 66)
    for within in (False, True):
        batches = [training_batch(7, s, n, mix, 64, within_batch=within) for s in range(4)]
        x, y, op = (np.concatenate(parts) for parts in zip(*batches, strict=True))
        strings = tokens_to_strings(encode(x, y, op))
        assert strings == exact([s[: 2 * n + 1] for s in strings], n)
    x, y, op = training_batch(7, 0, n, mix, 64, within_batch=True)
    assert set(op.tolist()) == {ADD, SUB}  # the GrokFast generator mixes inside a batch
    big = np.array([[9] * n, [1] + [0] * (n - 1)], np.uint8)
    strings = tokens_to_strings(encode(big, big[::-1], np.array([ADD, SUB], np.uint8)))
    assert strings == exact([s[: 2 * n + 1] for s in strings], n)
    # operands beyond int64 (d19, d20) pass through Python integers only where few are needed
    assert ints_to_digits([int("9" * n), 0], n).tolist() == [[9] * n, [0] * n]
    assert int_to_digits(np.array([12, 2**63 - 1]), n)[:, -2:].tolist() == [[1, 2], [0, 7]]
    with pytest.raises(InputError):
        ints_to_digits([10**n], n)


@pytest.mark.parametrize("n", DIGITS)
def test_handpicked_lists_are_kept_by_the_reference_rule(n):
    lists = varied._lists()
    x, y, op, labels = varied.handpicked_pairs(n, (ADD, SUB))
    strings = [s[: 2 * n + 1] for s in tokens_to_strings(encode(x, y, op))]
    kept = {(int(s[:n]), s[n], int(s[n + 1 :])) for s in strings}
    expected = set()
    for name in varied.ADD_LISTS + varied.SUB_LISTS:
        entry = lists[name]
        for a, b in entry["pairs"]:
            assert max(a, b) < 10**8  # the lists' operands have up to 8 digits
            if max(a, b) < 10**n:
                expected.add((a, entry["operator"], b))
    assert kept <= expected  # nothing invented, nothing >= 10^n
    names = complexity.class_names(complexity.classify(x, y, op))
    assert [c.rstrip("+") for c in names] == labels  # the computed class is the list's
    if n >= 8:  # every entry fits: only class disagreements are dropped, the same ones for any n >= 8
        assert len(labels) == len(varied.handpicked_pairs(8, (ADD, SUB))[3])
    vx, vy, vop = varied.varied_questions(n, OpMix(34, 66), 64)
    assert vx.shape == (64 + len(labels), n) and vop.shape == (64 + len(labels),)
    top = vx[:64, 0] | vy[:64, 0]
    assert top.any()  # the random rows reach the top digits (for n > 8 only they do)
    if n > 8:
        assert not (vx[64:, : n - 8] | vy[64:, : n - 8]).any()


@pytest.mark.parametrize("n", DIGITS)
def test_tricase_questions_for_every_answer_digit(n):
    tc = suites.tricase(n, per_case=20)
    assert sorted(tc) == sorted((d, op) for d in range(n) for op in (ADD, SUB))
    for (d, op), (x, y, _ops, cases) in tc.items():
        a, b = x[:, n - 1 - d].astype(int), y[:, n - 1 - d].astype(int)
        if op == ADD:
            got = np.select([a + b < 9, a + b == 9], [8, 9], 10)
        else:
            got = np.select([a < b, a == b], [8, 9], 10)
        assert (got == cases).all() and len(cases) == 60
        if d:  # lower digits never carry into / borrow from digit d
            low_x = [int("".join(map(str, r))) for r in x[:, n - d :]]
            low_y = [int("".join(map(str, r))) for r in y[:, n - d :]]
            assert all((p + q < 10**d) if op == ADD else (q <= p) for p, q in zip(low_x, low_y, strict=True))
    x, y, op, labels = suites.handpicked(n, per_class=3)
    assert (complexity.classify(x, y, op) == labels).all() and len(set(labels.tolist())) == 15


@pytest.mark.parametrize("n", DIGITS)
def test_tiny_model_forward_and_verification(n):
    layout = Layout(n)
    torch.manual_seed(n)
    model = Transformer(ModelShape(n_layers=2, n_heads=3, n_ctx=layout.n_ctx, d_model=24, d_head=8, d_mlp=48)).eval()
    suite = verify.RandomSuite(n, (ADD, SUB), 150, block_size=100)
    tested = 0
    for k in range(suite.n_blocks):
        counts = verify.evaluate_block(model, suite, k)
        tested += int(counts.tested.sum())
        assert counts.wrong_pos.shape == (n + 2,)
    assert tested == 300
    x, y, op = suite.block(0)
    tokens = encode(x, y, op)
    plain = scoring.score(model, tokens, n)
    fast = scoring.score(model, tokens, n, fast=True)
    assert plain.pred.shape == (100, n + 2)
    assert np.array_equal(plain.failed, fast.failed) and np.array_equal(plain.pred, fast.pred)
    hand = verify.HandpickedSuite(n, (ADD, SUB))
    assert verify.evaluate_block(model, hand, 0).tested.sum() == len(hand.block(0)[2])


# ------------------------------------------------------------------------------------------------ Impact tags


def _hit(layout: Layout, digits: list[int], sign: bool = False) -> np.ndarray:
    row = np.zeros(layout.n_answer, bool)
    for d in digits:
        row[layout.n_digits + 1 - d] = True
    row[0] |= sign
    return row


def test_impact_tags_of_a_d12_model_both_ways():
    layout = Layout(12)  # answer digits A12..A0, the sign A13
    cases = [
        # (digits, pure_add, default, reference)
        ([13], False, "Impact:A[13]", "Impact:A31"),
        ([11], False, "Impact:A[11]", "Impact:A1"),
        ([10, 1, 0], False, "Impact:A[10]10", "Impact:A10"),
        ([10], False, "Impact:A[10]", "Impact:A10"),
        ([13, 12, 5], False, "Impact:A[13][12]5", "Impact:A5321"),
        ([7, 6, 5], False, "Impact:A765", "Impact:A765"),
        ([12, 11], True, "Impact:A[12][11]", "Impact:A21"),
    ]
    rows = np.array([_hit(layout, d) for d, *_ in cases])
    pure = [p for _, p, *_ in cases]
    assert [impact_tag(r, layout, p) for r, p in zip(rows, pure, strict=True)] == [c[2] for c in cases]
    assert [impact_tag(r, layout, p, compat=True) for r, p in zip(rows, pure, strict=True)] == [c[3] for c in cases]
    assert impact_tags(rows[:6], layout, False) == [c[2] for c in cases[:6]]
    assert impact_tags(rows[:6], layout, False, compat=True) == [c[3] for c in cases[:6]]
    # the sign of an addition-only model adds no digit
    assert impact_tags(_hit(layout, [], sign=True)[None], layout, True) == ["Impact:A"]
    assert impact_tags(_hit(layout, [3], sign=True)[None], layout, True, compat=True) == ["Impact:A3"]
    # parsing: the default grammar round-trips; the reference's strings read as what they say
    for digits, _, default, reference in cases:
        assert parse_impact(default) == tuple(sorted(digits, reverse=True))
        assert parse_impact(reference) == tuple(sorted({int(c) for c in reference[8:]}, reverse=True))
    for k in range(1, 4):
        for subset in itertools.combinations(range(14), k):
            text = format_minor(subset)
            assert parse_impact(text) == tuple(sorted(subset, reverse=True))
            assert parse_impact("Impact:" + text) == parse_impact(text)
    for bad in ("Impact:B5", "A[5]", "A[13", "A1[0]", "A[013]", "A5x"):
        with pytest.raises(InputError):
            parse_impact(bad)


def test_impact_tags_are_the_references_up_to_8_digits():
    for n in (2, 5, 6, 8):
        layout = Layout(n)
        rows = np.array(list(itertools.product((False, True), repeat=n + 2)))
        for pure in (False, True):
            assert impact_tags(rows, layout, pure) == impact_tags(rows, layout, pure, compat=True)


def impact_string(changed: np.ndarray, layout: Layout, pure_add: bool) -> str:
    """The reference's get_answer_impact, plainly (the oracle): the changed answer positions' meanings, "A"
    dropped, characters sorted descending, "A" in front; `(none)` when nothing changed."""
    names = layout.position_meanings(pure_add)[layout.answer_start :]
    joined = "".join(nm for nm, hit in zip(names, changed, strict=True) if hit).replace("A", "")
    return "A" + "".join(sorted(joined, reverse=True)) if joined else "(none)"


def test_intervention_impacts_both_ways():
    for n in (2, 6, 8):  # every row: the reference's strings up to 8 digits
        layout = Layout(n)
        for row in itertools.product((False, True), repeat=n + 2):
            for pure in (False, True):
                ref = impact_string(np.array(row), layout, pure)
                assert intervention_impact(np.array(row), layout, pure) == ref
                assert intervention_impact(np.array(row), layout, pure, compat=True) == ref
    layout = Layout(12)
    row = _hit(layout, [13, 11])
    assert intervention_impact(row, layout, False) == "A[13][11]"
    assert (
        intervention_impact(row, layout, False, compat=True) == impact_string(row, layout, False) == "A3111"
    )  # not deduplicated
    assert intervention_impact(_hit(layout, [10], sign=True), layout, True) == "A[10]+"
    assert intervention_impact(_hit(layout, []), layout, False) == "(none)"


def test_the_algorithm_filters_read_both_grammars():
    d13 = ["Impact:A[13]5"]
    assert algo_tasks.impacts(d13, 13, False) and algo_tasks.impacts(d13, 5, False)
    assert not any(algo_tasks.impacts(d13, d, False) for d in (1, 3, 10))
    assert algo_tasks.impacts(d13, 13, True) and not algo_tasks.impacts(d13, 5, True)  # compat: highest only
    ref = ["Impact:A31"]  # the reference's tag for A13
    assert (
        algo_tasks.impacts(ref, 3, True)
        and algo_tasks.impacts(ref, 1, False)
        and not algo_tasks.impacts(ref, 13, False)
    )
    assert algo_tasks.impacts(["Impact:A765"], 6, False) and not algo_tasks.impacts(["Impact:A765"], 6, True)
    assert not names_digit("Impact:A??", 1, False)
    # the filter of an A11 task on a d12 model's nodes, both ways
    n = 12
    f = algo_tasks.SA.filter(n, 11)
    node = {
        "is_head": True,
        "position": 2 * n + 5,
        "tags": ["Impact:A[11]", f"Attn:P{n - 12}=50", f"Attn:P{2 * n - 11}=40"],
    }
    assert f.matches(node, compat=False)
    node_ref = dict(node, tags=["Impact:A1", "Attn:P0=50", f"Attn:P{2 * n - 11}=40"])
    assert not f.matches(node_ref, compat=True)  # the reference's A11 tag never matches digit 11


def test_quanta_maps_of_a_d20_model_are_legible(tmp_path):
    layout = Layout(20)
    records = [
        {"position": p, "layer": p % 2, "is_head": p % 3 != 0, "num": p % 3 if p % 3 else 0,
         "tags": ["Fail%:5", "Impact:A[20][19][18]7" if p % 2 else "Impact:A[13]5", "Attn:P3=60", "Attn:P33=30"]}
        for p in range(layout.n_ctx)
    ]  # fmt: skip
    assert cell(records[1], "impact") == ("A[20][19]\n[18]7", 4.0)  # two lines fit a column
    assert cell(dict(records[1], tags=["Impact:A[20][19][18]"]), "impact") == ("A20..18", 3.0)
    assert cell(records[0], "impact") == ("A[13]5", 2.0)
    assert len(scale("impact", 20).ticks) <= 12 and scale("impact", 6).ticks == tuple(float(c) for c in range(9))
    svg, png = draw(records, layout, 2, 3, "impact", tmp_path / "m", "add_d20_l2_h3: impact")
    from matplotlib.image import imread

    height, width = imread(png).shape[:2]
    assert width >= 64 * 80 and svg.stat().st_size > 0  # 0.8 in (80 px) per useful position


# ------------------------------------------------------------------------------------------------ GrokFast


def test_grokfast_as_the_reference_runs_it_and_with_the_fixes():
    p = torch.nn.Parameter(torch.zeros(3))
    g1, g2, g3 = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, -1.0, 4.0]), torch.tensor([2.0, 2.0, 2.0])
    ref, fixed = _GrokFast([p], fixes=False), _GrokFast([p], fixes=True)
    ema = None
    for g in (g1, g2, g3):
        p.grad = g.clone()
        ref.apply()
        assert torch.allclose(p.grad, (1 + GROKFAST_LAMB) * g)  # the filter state is dropped: only x3
        p.grad = g.clone()
        fixed.apply()
        ema = g.clone() if ema is None else GROKFAST_ALPHA * ema + (1 - GROKFAST_ALPHA) * g
        assert torch.allclose(p.grad, g + GROKFAST_LAMB * ema)  # grokfast's gradfilter_ema, state kept
    again = _GrokFast([p], fixes=True)
    again.load_state_dict(fixed.state_dict())
    assert again.started and torch.equal(again.ema[0], fixed.ema[0])


def test_a_mixed_gf_model_trains_and_resumes_with_the_fixes(tmp_path):
    tiny = dict(d_model=16, d_head=4, lr=1e-3, log_every=5, checkpoint_every=5, fixes=True)
    cfg = TrainConfig("mix_d13_l1_h2_t12_gf_s111111", **tiny)
    whole = train_in(cfg, tmp_path / "whole", resume=False, progress=False)
    part = train_in(cfg, tmp_path / "part", resume=False, progress=False, stop_after=7)
    rest = train_in(cfg, tmp_path / "part", resume=True, progress=False)
    assert whole.complete and rest.complete and not part.complete
    a, b = torch.load(whole.weights, weights_only=True), torch.load(rest.weights, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the EMA state travels in the checkpoint
    config = json.loads(whole.train_json.read_text())["Config"]
    assert config["grokfast"] and config["fixes"] and config["n_ctx"] == 43 and config["perc_sub"] == 66


# ------------------------------------------------------------------------------------------------ catalog


def test_catalog_lists_the_53_models_with_the_insert_pairings():
    data = tomllib.loads(CATALOG.read_text())
    models = data["model"]
    assert [m["name"] for m in models] == list(ZOO) and len(models) == 53
    assert {m["name"]: m["insert"] for m in models if "insert" in m} == INSERT_OF
    assert all(m.get("note") for m in models)
    for m in models:
        main = parse_name(m["name"])
        assert bool(main.insert_mode) == ("insert" in m)
        if "insert" in m:
            insert = parse_name(m["insert"])
            assert insert.n_digits == main.n_digits and insert.op == "add" and insert.insert_mode == 0
            assert m["insert"] in ZOO  # every insert model is itself in the zoo
    text = CATALOG.read_text()
    marked = "# (*) insert model: the picker's choice (since 2024-06-10); first trained from add_d6_l2_h3_t20K_s572091"
    for name in PICKER_CHOICE:
        assert INSERT_OF[name] == PICKER_INSERT
        assert f'{marked}\n[[model]]\nname = "{name}"' in text
    assert {parse_name(n).n_digits for n in ZOO} == set(range(5, 16)) | {20}
