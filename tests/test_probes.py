"""Probes: variables by hand, capture against the model's own cache, and a probe that must work (an operand digit at
its own token after layer 0 of the trained demo model) against its permutation null."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis import probes
from arith.questions import random_block
from arith.vocab import ADD, SUB, Layout, encode, int_to_digits


@pytest.fixture(scope="module")
def demo(demo_model):
    from arith.weights import load_model, model_info

    shape, _, _ = model_info(demo_model)
    return load_model(demo_model, shape).eval()


def test_variables_by_hand():
    x = int_to_digits(np.array([57, 19, 45, 30]), 2)
    y = int_to_digits(np.array([68, 20, 54, 31]), 2)
    op = np.array([ADD, SUB, ADD, SUB])
    assert probes.labels(x, y, op, "x0").tolist() == [7, 9, 5, 0]
    assert probes.labels(x, y, op, "y1").tolist() == [6, 2, 5, 3]
    assert probes.labels(x, y, op, "carry_out0").tolist() == [1, 0, 0, 0]  # 7+8, 9+0, 5+4, 0+1
    assert probes.labels(x, y, op, "carry_in1").tolist() == [1, 0, 0, 0]
    assert probes.labels(x, y, op, "carry_out1").tolist() == [1, 0, 0, 0]  # 5+6+1, 1+2, 4+5, 3+3
    assert probes.labels(x, y, op, "sign").tolist() == [0, 1, 0, 1]  # 19-20 < 0, 30-31 < 0
    # |x - y| as big - small, column 0: 68-57 (8-7) no borrow; 20-19 (0-9) borrows; 54-45 (4-5) borrows; 31-30 not
    assert probes.labels(x, y, op, "borrow0").tolist() == [0, 1, 1, 0]
    assert probes.labels(x, y, op, "sum9_0").tolist() == [0, 1, 1, 0]
    assert probes.labels(x, y, op, "sum9_1").tolist() == [0, 0, 1, 0]
    with pytest.raises(ValueError):
        probes.labels(x, y, op, "x2")
    with pytest.raises(ValueError):
        probes.labels(x, y, op, "carry")


def test_capture_reads_the_model_cache(demo):
    x, y, op = random_block(5, 0, 2, ADD, 50)
    where = probes.sites(demo.shape, positions=[1, 6])
    feats = probes.capture(demo, x, y, op, where, chunk=16)
    points = [f"blocks.0.{p}" for p in ("hook_resid_pre", "hook_resid_post", "attn.hook_z")]
    _, cache = demo.run_with_cache(torch.from_numpy(encode(x, y, op)), points)
    for site, f in zip(where, feats, strict=True):
        point = {"resid_pre": "hook_resid_pre", "resid_post": "hook_resid_post", "z": "attn.hook_z"}[site.kind]
        want = cache[f"blocks.{site.layer}.{point}"][:, site.position]
        want = want[:, site.head] if site.kind == "z" else want
        np.testing.assert_allclose(f, want.numpy(), atol=1e-5, err_msg=site.name())
    assert len(where) == 2 * (2 + demo.shape.n_heads)


def test_operand_digit_probe_at_its_own_token_beats_its_null(demo):
    layout = Layout(2)
    x, y, op = random_block(6, 0, 2, ADD, 400)
    own = probes.Site("resid_post", 0, layout.n_digits - 1)  # the units digit of x
    far = probes.Site("resid_post", 0, layout.n_ctx - 1)  # the last token: the answer's units digit
    feats = probes.capture(demo, x, y, op, [own, far])
    labels = probes.labels(x, y, op, "x0")
    scores = probes.probe_sites(feats[:1], labels, seed=1, variable="x0", folds=3, n_perm=2)
    assert scores[0].accuracy > 0.95, scores[0]
    assert scores[0].null_hi < 0.3 and abs(scores[0].null_mean - 0.1) < 0.1, scores[0]
    assert scores[0].p_value == pytest.approx(1 / 3) and scores[0].chance == pytest.approx(0.1)
    once = probes.probe_score(feats[1], labels, seed=1, variable="x0", site=1, folds=2, n_perm=0)
    again = probes.probe_score(feats[1], labels, seed=1, variable="x0", site=1, folds=2, n_perm=0)
    assert once.accuracy == again.accuracy and np.isnan(once.null_mean)  # deterministic; no null asked for
    matrix = probes.transfer_matrix(feats, labels, seed=1, variable="x0")
    assert matrix.shape == (2, 2) and matrix[0, 0] > 0.95
    # degenerate labels give NaN, not an error
    assert np.isnan(probes.probe_score(feats[0], np.zeros(len(labels), dtype=int), seed=1).accuracy)


def test_sites_and_names():
    from arith.model import ModelShape

    shape = ModelShape(n_layers=2, n_heads=3, n_ctx=10, d_model=16, d_head=8, d_mlp=32)
    all_sites = probes.sites(shape)
    assert len(all_sites) == 10 * 2 * (2 + 3)
    assert probes.Site("z", 1, 3, 2).name() == "P03L1H2.z"
    with pytest.raises(ValueError):
        probes.Site("z", 0, 0)
    assert len(set(all_sites)) == len(all_sites)
    _ = SUB
