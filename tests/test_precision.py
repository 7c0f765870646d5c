"""bf16 scoring with fp32 verdicts, and exhaustive blocks that share their prefixes (issue 12).

Fast scoring (bf16 autocast and/or shared prefixes) re-scores in fp32 every question whose verdict could differ,
so the counts, the failing examples and the accuracy report equal the plain fp32 path's, apart from the
`scoring` field (how many were re-scored, and the bound).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from analysis.accuracy import accuracy_report
from arith.device import bf16_supported, resolve_precision
from arith.errors import InputError, plural
from arith.model import ModelShape, Transformer
from arith.prefix import prefix_answer_logits, prefix_splits
from arith.questions import exhaustive_block, random_block
from arith.scoring import _plain_logits, score
from arith.verify import BlockCounts, ExhaustiveSuite, RandomSuite, evaluate_block
from arith.vocab import ADD, SUB, Layout, encode
from arith.weights import load_model, model_info
from jobs.stages.verify_store import make_fingerprint, prepare_suite
from tests.conftest import varith

CPU = torch.device("cpu")


def _random_model(n: int, n_layers: int = 2, seed: int = 1) -> Transformer:
    layout = Layout(n)
    shape = ModelShape(n_layers=n_layers, n_heads=3, n_ctx=layout.n_ctx, d_model=48, d_head=16, d_mlp=96)
    model = Transformer(shape)
    model.reset_parameters(torch.Generator().manual_seed(seed))
    return model.eval()


def _total(model, suite, precision: str, share: bool) -> BlockCounts:
    total = BlockCounts.empty(suite.n_digits)
    for k in range(suite.n_blocks):
        total = total + evaluate_block(model, suite, k, precision=precision, fast=share)
    return total


def _report(counts, suite) -> dict:
    report = accuracy_report(counts, suite, "m", extra={"mode": "reference"})
    return {k: v for k, v in report.items() if k != "scoring"}


def test_auto_precision_follows_the_hardware_and_bad_names_are_input_errors():
    assert resolve_precision("auto", CPU) == ("bf16" if bf16_supported(CPU) else "fp32")
    assert resolve_precision("fp32", CPU) == "fp32" and resolve_precision("bf16", CPU) == "bf16"
    with pytest.raises(InputError, match="unknown precision"):
        resolve_precision("fp16", CPU)


@pytest.mark.parametrize(
    ("flags", "fast"),
    [({"avx512_f", "avx512_bw", "avx512_vl"}, False), ({"avx512_f", "avx512_bf16"}, True), ({"amx_bf16"}, True)],
)
def test_auto_picks_bf16_only_where_the_cpu_has_bf16_instructions(monkeypatch, flags, fast):
    """An AVX-512 CPU without avx512_bf16/AMX runs bf16 matmuls by emulation, several times slower than fp32:
    `--precision auto` must stay in fp32 there."""
    import arith.device

    monkeypatch.setattr(arith.device, "cpu_flags", lambda: flags)
    assert bf16_supported(CPU) is fast
    assert resolve_precision("auto", CPU) == ("bf16" if fast else "fp32")


@pytest.mark.parametrize(("n", "n_layers"), [(1, 2), (2, 1), (3, 2), (3, 3)])
def test_fast_logits_equal_the_plain_forward(n, n_layers):
    """The fast forward (layer 0 from its (position, token) table, the last layer at the answer positions only,
    shared prefixes or one segment per question) gives the plain forward's answer logits."""
    layout = Layout(n)
    model = _random_model(n, n_layers=n_layers)
    x, y, op = exhaustive_block(n, SUB, 0, 3000)
    tokens = torch.as_tensor(encode(x, y, op))
    assert prefix_splits(layout)[-1] == layout.n_ctx - 1
    plain = _plain_logits(model, tokens, layout, "fp32", 1024)
    for share in (True, False):
        fast = prefix_answer_logits(model, tokens, layout, batch_size=700, share=share)
        torch.testing.assert_close(fast, plain, atol=1e-4, rtol=1e-4)
    # a block that starts and ends inside a group of questions sharing all but the last digit of y (short groups
    # padded), and the same questions in reverse order (the groups found all the same)
    x, y, op = exhaustive_block(n, SUB, 3, min(10 ** (2 * n), 2997))
    tokens = torch.as_tensor(encode(x, y, op))
    plain = _plain_logits(model, tokens, layout, "fp32", 1024)
    for order in (torch.arange(len(tokens)), torch.arange(len(tokens)).flip(0)):
        fast = prefix_answer_logits(model, tokens[order], layout, batch_size=97)
        torch.testing.assert_close(fast, plain[order], atol=1e-4, rtol=1e-4)
    # any order of questions (random ones share little) gives the same logits
    tokens = torch.as_tensor(encode(*random_block(3, 0, n, ADD, 500)))
    torch.testing.assert_close(
        prefix_answer_logits(model, tokens, layout), _plain_logits(model, tokens, layout, "fp32", 1024), atol=1e-4,
        rtol=1e-4,
    )  # fmt: skip


@pytest.mark.parametrize(("precision", "prefix"), [("bf16", False), ("bf16", True), ("fp32", True), ("fp32", False)])
def test_fast_scores_equal_fp32_scores_on_a_random_model_n3(precision, prefix):
    """Random weights: small logit margins everywhere, so many questions are re-scored; predictions and
    verdicts equal the plain fp32 path's all the same (blocks of the n=3 exhaustive enumeration)."""
    model = _random_model(3)
    for start in (0, 431_000):
        tokens = encode(*exhaustive_block(3, ADD, start, start + 4000))
        fast = score(model, tokens, 3, precision=precision, fast=True, prefix=prefix)
        plain = score(model, tokens, 3)
        np.testing.assert_array_equal(fast.pred, plain.pred)
        np.testing.assert_array_equal(fast.failed, plain.failed)
        assert fast.bound > 0 and 0 <= fast.rechecked <= len(tokens)
        for mode in ("exact", "reference"):
            other = score(model, tokens, 3, mode=mode, precision=precision, fast=True, prefix=prefix)
            np.testing.assert_array_equal(other.failed, score(model, tokens, 3, mode=mode).failed)


def test_demo_model_exhaustive_and_random_reports_equal_fp32(demo_model):
    """The trained 2-digit model: all 10,000 questions with shared prefixes in bf16 and fp32, and 20,000
    random questions in bf16, give the plain fp32 path's report byte for byte (less the `scoring` field)."""
    shape, n, _cfg = model_info(demo_model)
    model = load_model(demo_model, shape)
    ex = ExhaustiveSuite(n, (ADD,), block_size=3000)
    plain = _total(model, ex, "fp32", share=False)
    assert plain.rechecked == 0 and plain.bound == 0.0
    want = json.dumps(_report(plain, ex))
    for precision in ("bf16", "fp32"):
        fast = _total(model, ex, precision, share=True)
        assert json.dumps(_report(fast, ex)) == want
        assert fast.bound > 0 and fast.rechecked < 10_000 // 10  # a trained model is confident
        assert accuracy_report(fast, ex, "m")["scoring"]["rechecked"] == fast.rechecked
    rnd = RandomSuite(n, (ADD,), 20_000, block_size=5000)
    assert json.dumps(_report(_total(model, rnd, "bf16", True), rnd)) == json.dumps(
        _report(_total(model, rnd, "fp32", True), rnd)
    )


def test_store_fingerprint_holds_precision_and_rows_hold_rechecks(tmp_path):
    suite = RandomSuite(2, (ADD,), 2000, block_size=1000)
    fp32 = make_fingerprint("0" * 64, suite.fingerprint(), "reference", "fp32", 4)
    bf16 = make_fingerprint("0" * 64, suite.fingerprint(), "reference", "bf16", 4)
    assert fp32 != bf16
    store = prepare_suite(tmp_path / "s.zarr", suite.name, bf16, suite.n_blocks, 2, 4, suite=suite)
    model = _random_model(2, n_layers=1)
    counts = [evaluate_block(model, suite, k, cap=4, precision="bf16") for k in range(2)]
    for k, c in enumerate(counts):
        store.write_block(k, c)
    back = store.read_counts()
    assert back.rechecked == counts[0].rechecked + counts[1].rechecked > 0
    assert back.bound == max(c.bound for c in counts)
    with pytest.raises(InputError, match="other settings"):
        prepare_suite(tmp_path / "s.zarr", suite.name, fp32, suite.n_blocks, 2, 4, suite=suite)


def test_cli_precisions_write_the_same_report(demo_model, tmp_path):
    outs = {}
    for precision in ("fp32", "bf16", "auto"):
        out = tmp_path / f"{precision}.json"
        proc = varith(
            "verify", str(demo_model), "--exhaustive", "--precision", precision, "--cluster", "none",
            "--no-progress", "--out", str(out), "--store", str(tmp_path / f"{precision}.zarr"),
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        report = json.loads(out.read_text())["exhaustive"]
        assert set(report["scoring"]) == {"rechecked", "logit_error_bound", "precision", "requested", "reason"}
        assert report["scoring"]["requested"] == precision
        # 10,000 questions: too few for auto to probe bf16
        assert report["scoring"]["precision"] == (precision if precision != "auto" else "fp32")
        n_rechecked = plural(report["scoring"]["rechecked"], "question")
        rechecked = f"fast scoring: {n_rechecked} re-scored by the plain fp32 forward"
        assert rechecked in proc.stdout
        outs[precision] = json.dumps({k: v for k, v in report.items() if k != "scoring"})
    assert outs["fp32"] == outs["bf16"] == outs["auto"]
    bad = varith("verify", str(demo_model), "--exhaustive", "--precision", "fp16", "--cluster", "none")
    assert bad.returncode == 2


def test_trained_3_digit_model_exhaustive_and_1m_random_reports_equal_fp32(tmp_path):
    """A trained 3-digit addition model, all 10^6 questions: shared prefixes (fp32 and bf16) give the plain fp32
    path's report byte for byte (less the `scoring` field), and a trained model leaves little to re-check. Then
    10^6 random questions, half of them subtractions this model never learnt (nearly all fail, with margins of
    every size): the fast forward in fp32 and bf16 gives the plain path's report too."""
    from arith.train import TrainConfig
    from tests.conftest import DEMO_KW, train_in

    name = "add_d3_l1_h3_t3K_s123456"
    result = train_in(TrainConfig(name, **DEMO_KW), tmp_path / name, resume=False, progress=False)
    shape, n, _cfg = model_info(result.weights)
    model = load_model(result.weights, shape)
    ex = ExhaustiveSuite(n, (ADD,), block_size=125_000)
    plain = _total(model, ex, "fp32", share=False)
    assert plain.tested.sum() == 10**6
    want = json.dumps(_report(plain, ex))
    for precision in ("fp32", "bf16"):
        fast = _total(model, ex, precision, share=True)
        assert json.dumps(_report(fast, ex)) == want, precision
        assert fast.rechecked < 10**6 // 20, (precision, fast.rechecked)
    rnd = RandomSuite(n, (ADD, SUB), 500_000, block_size=100_000)
    plain = _total(model, rnd, "fp32", share=False)
    assert plain.tested.sum() == 10**6 and 400_000 < plain.failed.sum() < 900_000
    want = json.dumps(_report(plain, rnd))
    for precision in ("fp32", "bf16"):
        assert json.dumps(_report(_total(model, rnd, precision, share=True), rnd)) == want, precision


def test_last_level_groups_questions_by_parent_prefix():
    """Exhaustive order: the last level reads each parent's keys and values once for its (up to) ten questions;
    short groups at a block's edges are padded and the padding is marked. Questions that share little (a shuffled
    block with one big group) run one per group."""
    from arith.prefix import _grouping

    parent = np.repeat(np.arange(5), 10)[3:-4]  # 43 questions: groups of 7, 10, 10, 10, 6
    slots, real, group_parent = _grouping(parent)
    assert slots.shape == (5, 10) and real.sum() == 43 and list(group_parent) == [0, 1, 2, 3, 4]
    assert sorted(slots[real]) == list(range(43))
    assert (parent[slots] == group_parent[:, None]).all()  # padding repeats a member of the same group
    uneven = np.random.default_rng(0).permutation(np.r_[np.arange(100), np.zeros(10, dtype=np.int64)])
    slots, real, group_parent = _grouping(uneven)  # padding to 11 per group would multiply the rows by 10
    assert slots.shape == (110, 1) and real.all() and (group_parent == uneven).all()


def test_scores_do_not_depend_on_the_batch_size():
    """The default batch (arith.scoring.batch_rows: a CPU batch's widest activation under 32 MiB) and odd batch
    sizes that split prefix groups give the same predictions and verdicts, on both paths."""
    from arith.scoring import batch_rows

    model = _random_model(3)
    assert batch_rows(model) * model.shape.n_ctx * model.shape.d_mlp * 4 <= 32 * 2**20
    tokens = encode(*exhaustive_block(3, ADD, 5000, 7000))
    want = score(model, tokens, 3, batch_size=len(tokens))
    for fast in (False, True):
        for batch in (None, 7, 333):
            got = score(model, tokens, 3, batch_size=batch, fast=fast, prefix=fast)
            np.testing.assert_array_equal(got.pred, want.pred)
            np.testing.assert_array_equal(got.failed, want.failed)
