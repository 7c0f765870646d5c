"""Node ablation: the batched, prefix-reusing path against one plain forward per node; tag rules by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.ablate import Node, clean_run, means_of, patch_for
from analysis.ablation import MeanRule, candidate_nodes, node_failures, position_failures, survey
from analysis.behavior import attention_tags, behavior_records, fail_tag, impact_tags, math_tags
from arith import complexity
from arith.decode import greedy_answers
from arith.model import ModelShape, Transformer
from arith.questions import random_block
from arith.scoring import score
from arith.vocab import ADD, SUB, Layout, encode


def _self_consistent(n_layers=2, n_heads=3, n=3, rows=96, seed=1):
    """A random-weight model and questions whose answers are its own greedy answers (it 'answers' them all)."""
    layout = Layout(n)
    shape = ModelShape(n_layers=n_layers, n_heads=n_heads, n_ctx=layout.n_ctx, d_model=48, d_head=16, d_mlp=96)
    model = Transformer(shape)
    model.reset_parameters(torch.Generator().manual_seed(seed))
    model.eval()
    xa, ya, opa = random_block(7, 0, n, ADD, rows // 2)
    xs, ys, ops = random_block(7, 0, n, SUB, rows // 2)
    tok = torch.from_numpy(encode(np.concatenate([xa, xs]), np.concatenate([ya, ys]), np.concatenate([opa, ops])))
    prompts = tok[:, : layout.n_question]
    answers = torch.from_numpy(greedy_answers(model, prompts, layout))
    return model, layout, torch.cat([prompts, answers], dim=1).long()


def test_batched_ablation_fails_exactly_the_questions_of_one_forward_per_node():
    model, layout, tokens = _self_consistent()
    sv = survey(model, tokens, layout, MeanRule.CORRECTED)
    assert sv.correct.all()  # the answers are the model's own
    nodes = candidate_nodes(list(range(layout.n_ctx)), 2, 3)
    failed, pred = node_failures(model, tokens, layout, sv.means, nodes)
    assert failed.any() and not failed.all()
    for i, node in enumerate(nodes):
        name, patch = patch_for(node, sv.means)
        plain = score(model, tokens, layout.n_digits, hooks={name: patch})
        np.testing.assert_array_equal(failed[i], plain.failed, err_msg=node.name())
        np.testing.assert_array_equal(pred[i], plain.pred, err_msg=node.name())


def test_compat_means_are_layer0_over_all_questions():
    model, layout, tokens = _self_consistent()
    compat = survey(model, tokens[:50], layout, MeanRule.COMPAT, chunk=16).means
    direct = means_of(clean_run(model, tokens[:50], layout))
    for layer in range(2):
        torch.testing.assert_close(compat.z[layer], direct.z[0])
        torch.testing.assert_close(compat.resid_post[layer], direct.resid_post[0])
    corrected = survey(model, tokens[:50], layout, MeanRule.CORRECTED, chunk=16).means
    torch.testing.assert_close(corrected.z[1], direct.z[1])


def test_position_failures_need_the_answer_positions():
    model, layout, tokens = _self_consistent()
    sv = survey(model, tokens, layout, MeanRule.CORRECTED)
    fails = position_failures(model, tokens, layout, sv.means)
    assert fails.shape == (layout.n_ctx,)
    assert fails[layout.answer_start - 1] > 0  # "=" predicts the sign
    assert fails[-1] == 0  # the last token predicts nothing


def test_tag_rules_by_hand():
    layout = Layout(6)
    assert fail_tag(3, 214) == "Fail%:1" and fail_tag(1, 214) == "Fail%:0" and fail_tag(214, 214) == "Fail%:100"
    wrong = np.zeros((3, 8), dtype=bool)
    wrong[0, [1, 2, 3]] = True  # A6 A5 A4
    wrong[1, 0] = True  # the sign only
    wrong[2, [0, 7]] = True
    assert impact_tags(wrong, layout, pure_add=False) == ["Impact:A654", "Impact:A7", "Impact:A70"]
    assert impact_tags(wrong, layout, pure_add=True) == ["Impact:A654", "Impact:A", "Impact:A0"]
    hit = np.zeros((1, complexity.N_CLASSES), dtype=bool)
    hit[0, [complexity.code_of(c) for c in ("S4", "S1", "M4+", "N2", "N1")]] = True
    assert math_tags(hit) == [["Math.Add:S14", "Math.Sub:M4", "Math.Neg:N12"]]
    row = np.array([0.5, 0.0, 0.3, 0.195, 0.005, 0.0])
    assert attention_tags(row) == ["Attn:P0=50", "Attn:P2=30", "Attn:P3=20"]


def test_behavior_records_hand_computed():
    layout = Layout(2)
    nodes = [Node.mlp(5, 0), Node.head(5, 0, 1), Node.head(4, 0, 0)]
    # questions: 12+34 (S0), 19+81 (S2), 30-41 (N1)
    x = np.array([[1, 2], [1, 9], [3, 0]], np.uint8)
    y = np.array([[3, 4], [8, 1], [4, 1]], np.uint8)
    op = np.array([ADD, ADD, SUB], np.uint8)
    codes = complexity.classify(x, y, op)
    failed = np.array([[1, 1, 0], [0, 0, 0], [0, 1, 1]], bool)
    wrong = np.zeros((3, 3, 4), bool)
    wrong[0, 0, 3] = wrong[0, 1, 2] = True
    wrong[2, 1, 1] = wrong[2, 2, 0] = True
    attention = np.zeros((1, 2, 8, 8))
    attention[0, 0, 4, :5] = [0.6, 0.4, 0, 0, 0]
    recs = behavior_records(nodes, failed, wrong, codes, attention, layout, pure_add=False)
    assert recs == [
        {
            "position": 4,
            "layer": 0,
            "is_head": True,
            "num": 0,
            "tags": ["Fail%:66", "Impact:A32", "Math.Add:S2", "Math.Neg:N1", "Attn:P0=60", "Attn:P1=40"],
        },
        {"position": 5, "layer": 0, "is_head": False, "num": 0, "tags": ["Fail%:66", "Impact:A10", "Math.Add:S02"]},
    ]


@pytest.mark.parametrize("width, name", [(2, "P09L0H1"), (1, "P9L0H1")])
def test_node_names_and_order(width, name):
    assert Node.head(9, 0, 1).name(width) == name
    assert Node.mlp(14, 1).name() == "P14L1MLP"
    assert sorted([Node.mlp(9, 0), Node.head(9, 1, 0), Node.head(9, 0, 2), Node.head(8, 2, 0)]) == [
        Node.head(8, 2, 0),
        Node.head(9, 0, 2),
        Node.mlp(9, 0),
        Node.head(9, 1, 0),
    ]


def test_pca_metrics_and_tag_rule():
    from analysis.pca import metrics, tag

    rng = np.random.default_rng(0)
    cases = np.repeat(np.array([8, 9, 10], np.uint8), 100)
    centres = {8: -5.0, 9: 0.0, 10: 5.0}
    separable = np.stack([rng.normal(centres[int(c)], 0.3, 16) for c in cases])
    evr0, _sil, _ch, agree = metrics(separable, cases)
    assert evr0 > 90 and agree > 60  # one direction holds the cases, and the clusters follow them
    evr0_noise, _sil, _ch, agree_noise = metrics(rng.normal(0.0, 1.0, (300, 16)), cases)
    assert evr0_noise < 30 and agree_noise < 50
    # the rule: EVR[0] > 30%, silhouette >= 20, Calinski-Harabasz >= 50, agreement > 50
    assert tag(np.array([31.0, 20.0, 50.0, 51.0]), 3, ADD) == "Math.Add:A3.SP"
    assert tag(np.array([31.0, 20.0, 50.0, 51.0]), 2, SUB) == "Math.Sub:A2.MP"
    for weak in ([30.0, 20, 50, 51], [31, 19.9, 50, 51], [31, 20, 49.9, 51], [31, 20, 50, 50.0]):
        assert tag(np.array(weak), 3, ADD) is None
