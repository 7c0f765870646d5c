"""Verdicts that never lie (issue 19): non-finite logits fail, non-finite weights are refused, failing examples
show the greedy answer `varith predict` gives, and `--precision auto` never takes bf16 where it does not pay."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import arith.scoring
from arith.scoring import PrecisionChoice, score
from arith.verify import BlockCounts, ExhaustiveSuite, RandomSuite, choose_precision, evaluate_block
from arith.vocab import ADD, Layout, encode, parse_questions, tokens_to_strings
from arith.weights import load_model, model_info
from jobs.stages.verify_store import make_fingerprint, prepare_suite
from tests.conftest import DEMO_NAME, assert_one_line_error, varith
from tests.test_verify_dask import TINY, make_random_model

FAST_WAYS = [dict(fast=True), dict(prefix=True), dict(precision="bf16"), dict(precision="bf16", prefix=True)]


def _copy_run(weights: Path, folder: Path, edit) -> Path:
    """The run of `weights` copied into `folder`, its state dict changed in place by `edit(sd)`."""
    folder.mkdir(parents=True)
    name = weights.name[: -len(".pth")]
    shutil.copy(weights.with_name(f"{name}_train.json"), folder / f"{name}_train.json")
    sd = torch.load(weights, map_location="cpu", weights_only=True)
    edit(sd)
    torch.save(sd, folder / weights.name)
    return folder / weights.name


def _overflow_token_7(sd) -> None:
    """Finite weights whose forward overflows: token 7's embedding is +-3e38, so LayerNorm of any position
    holding a 7 turns NaN, and so do the logits after it: some questions get NaN logits, others none."""
    row = torch.full_like(sd["embed.W_E"][7], 3e38)
    row[len(row) // 2 :] = -3e38
    sd["embed.W_E"][7] = row


@pytest.fixture(scope="module")
def overflowing(demo_model, tmp_path_factory) -> Path:
    return _copy_run(demo_model, tmp_path_factory.mktemp("overflow") / DEMO_NAME, _overflow_token_7)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_random_model(tmp_path_factory.mktemp("tiny"), TINY)


@pytest.fixture(scope="module")
def nan_weights(tiny, tmp_path_factory) -> Path:
    def poison(sd):
        sd["blocks.0.attn.W_Q"].view(-1)[:12] = float("nan")

    return _copy_run(tiny, tmp_path_factory.mktemp("nan") / TINY, poison)


# ------------------------------------------------------------------ (a) non-finite logits are failures


def _nan_rows(model, tokens, layout) -> np.ndarray:
    logits = model(torch.as_tensor(tokens), logit_positions=layout.predict_slice)
    return ~torch.isfinite(logits).all(dim=-1).all(dim=-1).numpy()


def test_questions_with_nan_logits_fail_on_every_scoring_path(overflowing):
    """The plain forward gives some questions NaN logits (not all): exactly those fail more than before, and the
    fast, prefix and bf16 paths give the very same verdicts."""
    shape, n, _cfg = model_info(overflowing)
    model = load_model(overflowing, shape)
    tokens = encode(*ExhaustiveSuite(n, (ADD,)).block(0))
    nan = _nan_rows(model, tokens, Layout(n))
    assert 0 < nan.sum() < len(tokens)
    plain = score(model, tokens, n)
    assert plain.failed[nan].all() and plain.wrong[nan].any(axis=1).all()
    for mode in ("reference", "exact"):
        want = score(model, tokens, n, mode=mode)
        assert want.failed[nan].all()
        for kw in FAST_WAYS:
            got = score(model, tokens, n, mode=mode, **kw)
            np.testing.assert_array_equal(got.failed, want.failed)
            np.testing.assert_array_equal(got.pred, want.pred)
            assert np.isfinite(got.bound) and 0 <= got.rechecked <= len(tokens)


def test_fast_path_rescores_non_finite_fast_logits_and_keeps_its_bound_finite(demo_model, monkeypatch):
    """Should the fast forward give non-finite logits (here: injected on some rows, calibration rows included),
    those questions are re-scored by the plain forward, whose verdict stands, and the bound stays finite."""
    shape, n, _cfg = model_info(demo_model)
    model = load_model(demo_model, shape)
    tokens = encode(*ExhaustiveSuite(n, (ADD,)).block(0))
    real = arith.scoring.prefix_answer_logits
    poisoned = np.arange(0, len(tokens), 7)

    def fast_with_nan(*args, **kwargs):
        logits = real(*args, **kwargs)
        logits[torch.as_tensor(poisoned), 1, 3] = float("nan")
        logits[torch.as_tensor(poisoned[::2]), 0, 0] = float("inf")
        return logits

    monkeypatch.setattr(arith.scoring, "prefix_answer_logits", fast_with_nan)
    plain = score(model, tokens, n)
    for kw in FAST_WAYS:
        got = score(model, tokens, n, **kw)
        np.testing.assert_array_equal(got.failed, plain.failed)
        np.testing.assert_array_equal(got.pred, plain.pred)
        assert np.isfinite(got.bound) and got.bound < 1 and got.rechecked >= len(poisoned) - 256


def test_nan_weights_fail_every_question_and_their_store_rows_check_out(nan_weights, tmp_path):
    """NaN weights loaded past the file check (in-process): every question fails on every path, and the
    re-check figures stay in range, so the store's checks accept the block (no endless "redoing them")."""
    from arith.model import Transformer
    from arith.train import TrainConfig

    n = 2
    model = Transformer(TrainConfig(TINY, d_model=16, d_head=4).shape)
    model.load_state_dict(torch.load(nan_weights, map_location="cpu", weights_only=True))
    model.eval()
    suite = RandomSuite(n, (ADD,), 600, block_size=300)
    fp = make_fingerprint("0" * 64, suite.fingerprint(), "reference", "bf16", 4)
    store = prepare_suite(tmp_path / "s.zarr", suite.name, fp, suite.n_blocks, n, 4, suite=suite)
    for k in range(suite.n_blocks):
        for precision, fast in (("fp32", False), ("fp32", True), ("bf16", True)):
            counts = evaluate_block(model, suite, k, cap=4, precision=precision, fast=fast)
            assert counts.failed.sum() == counts.tested.sum() == 300
            assert np.isfinite(counts.bound) and 0 <= counts.rechecked <= 300
        store.write_block(k, counts)
    assert store.validate() == {}
    assert store.read_counts().failed.sum() == 600


def test_cli_verify_of_weights_whose_forward_overflows_reports_the_failures(overflowing, tmp_path):
    """In process and through Dask: the questions with NaN logits are counted failed (not 100%), both ways
    alike, and no block is redone."""
    shape, n, _cfg = model_info(overflowing)
    model = load_model(overflowing, shape)
    x, y, op = ExhaustiveSuite(n, (ADD,)).block(0)
    nan = int(_nan_rows(model, encode(x, y, op), Layout(n)).sum())
    reports = {}
    for cluster in ("none", "local"):
        out = tmp_path / f"{cluster}.json"
        proc = varith(
            "verify", str(overflowing), "--exhaustive", "--cluster", cluster, "--no-progress", "--out", str(out),
            "--store", str(tmp_path / "store.zarr"), *(["--workers", "1"] if cluster == "local" else []),
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "redoing" not in proc.stderr and "100.0000%" not in proc.stdout
        reports[cluster] = json.loads(out.read_text())["exhaustive"]
        assert reports[cluster]["failed"] >= nan > 0
    drop = ("scoring",)
    assert {k: v for k, v in reports["none"].items() if k not in drop} == {
        k: v for k, v in reports["local"].items() if k not in drop
    }


# ------------------------------------------------------------------ (b) non-finite weights are refused


@pytest.mark.parametrize(
    "command",
    [
        ("verify", "{w}", "--exhaustive", "--cluster", "none"),
        ("verify", "{w}", "--suite", "handpicked", "--cluster", "local"),
        ("predict", "--model", "{w}", "12+34"),
        ("ablate", "{w}"),
        ("algo", "{w}"),
    ],
)
def test_every_command_refuses_nan_weights_naming_the_tensor(nan_weights, command):
    proc = varith(*(part.format(w=nan_weights) for part in command))
    assert_one_line_error(proc, str(nan_weights), "blocks.0.attn.W_Q holds 12 non-finite values (nan)", "refusing")


def test_weights_without_train_json_and_inf_values_are_refused_too(tiny, tmp_path):
    def poison(sd):
        sd["unembed.b_U"][2] = float("-inf")
        sd["blocks.0.ln1.w"][0] = float("inf")

    weights = _copy_run(tiny, tmp_path / TINY, poison)
    weights.with_name(f"{TINY}_train.json").unlink()
    assert_one_line_error(
        varith("predict", "--model", str(weights), "12+34"), "blocks.0.ln1.w holds 1 non-finite value (inf)"
    )


def test_the_attention_masks_ignore_buffer_is_not_a_non_finite_weight(demo_model):
    sd = torch.load(demo_model, map_location="cpu", weights_only=True)
    assert float(sd["blocks.0.attn.IGNORE"]) == float("-inf")
    proc = varith("predict", "--model", str(demo_model), "12+34")
    assert proc.returncode == 0 and proc.stdout.strip() == "+046"


# ------------------------------------------------------------------ greedy answers in the accuracy file


def test_failing_examples_show_the_answer_varith_predict_gives(tiny, tmp_path):
    """The random model fails every question; the accuracy file's `predicted` is what `varith predict` prints,
    which is not the teacher-forced per-token argmax for some of them."""
    out = tmp_path / "acc.json"
    proc = varith("verify", str(tiny), "--suite", "handpicked", "--cluster", "none", "--no-progress", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    failures = json.loads(out.read_text())["handpicked"]["failures"]
    assert len(failures) >= 10
    questions = [f["question"].rstrip("=") for f in failures]
    predicted = varith("predict", "--model", str(tiny), *questions)
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stdout.split() == [f["predicted"] for f in failures]
    shape, n, _cfg = model_info(tiny)
    model = load_model(tiny, shape)
    teacher = tokens_to_strings(score(model, encode(*parse_questions(questions, n)), n).pred.astype(np.int64))
    assert teacher != [f["predicted"] for f in failures]


# ------------------------------------------------------------------ --precision auto


def _random_model(n: int, confident: bool) -> torch.nn.Module:
    from arith.model import ModelShape, Transformer

    layout = Layout(n)
    model = Transformer(ModelShape(n_layers=2, n_heads=3, n_ctx=layout.n_ctx, d_model=48, d_head=16, d_mlp=96))
    model.reset_parameters(torch.Generator().manual_seed(1))
    if confident:
        with torch.no_grad():
            model.unembed.b_U[0] += 30.0  # one token leads by far everywhere: margins like a trained model's
    return model.eval()


# seconds per probe of (bf16 fast, fp32 fast, plain fp32) on a CPU with bf16 instructions: bf16 twice as fast
BF16_HARDWARE = (0.5, 1.0, 1.5)


@pytest.mark.parametrize("suite", [RandomSuite(3, (ADD,), 200_000), ExhaustiveSuite(3, (ADD,))])
def test_auto_falls_back_to_fp32_on_near_tied_logits_and_keeps_bf16_on_confident_ones(suite):
    tied = choose_precision(_random_model(3, False), suite, native_bf16=True, speeds=BF16_HARDWARE)
    assert tied.precision == "fp32" and "re-score" in tied.reason, tied
    sure = choose_precision(_random_model(3, True), suite, native_bf16=True, speeds=BF16_HARDWARE)
    assert sure.precision == "bf16" and "expected to take" in sure.reason, sure
    # no bf16 instructions, a run too short to pay for the probe, or a precision asked for: no probe
    assert choose_precision(_random_model(3, True), suite, native_bf16=False).precision == "fp32"
    short = RandomSuite(3, (ADD,), 1000)
    assert choose_precision(_random_model(3, True), short, native_bf16=True, speeds=BF16_HARDWARE).precision == "fp32"
    assert choose_precision(_random_model(3, False), suite, requested="bf16") == PrecisionChoice(
        "bf16", "--precision bf16", "bf16"
    )


def test_auto_measures_the_speeds_itself_when_not_given():
    choice = choose_precision(_random_model(2, True), RandomSuite(2, (ADD,), 100_000), native_bf16=True)
    assert choice.precision in ("fp32", "bf16") and "expected to take" in choice.reason


def test_auto_decides_fp32_without_timing_when_most_answers_would_be_rescored(monkeypatch):
    import arith.scoring

    def no_timing(fn):
        raise AssertionError("timed a forward although the re-check share already decides")

    monkeypatch.setattr(arith.scoring, "_seconds", no_timing)
    model = _random_model(3, False)
    with torch.no_grad():  # every logit equal: every answer token ties with the runner-up, all would be re-scored
        model.unembed.W_U.zero_()
        model.unembed.b_U.zero_()
    choice = choose_precision(model, RandomSuite(3, (ADD,), 200_000), native_bf16=True)
    assert choice.precision == "fp32" and "fp32's time in re-checks" in choice.reason, choice


def test_verify_records_the_chosen_precision_and_why(demo_model, tmp_path, monkeypatch):
    for env, words in (("0", "auto: no native bf16"), ("1", "under the 100,000")):
        monkeypatch.setenv("VARITH_NATIVE_BF16", env)
        out = tmp_path / f"{env}.json"
        proc = varith(
            "verify", str(demo_model), "--exhaustive", "--cluster", "none", "--no-progress", "--out", str(out),
            "--store", str(tmp_path / f"{env}.zarr"),  # its own store: the blocks are scored by this run
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        scoring = json.loads(out.read_text())["exhaustive"]["scoring"]
        assert scoring["precision"] == "fp32" and scoring["requested"] == "auto" and words in scoring["reason"]
        assert f"scored in fp32 ({scoring['reason']})" in proc.stdout


def test_block_counts_keep_the_choice_when_summed():
    a, b = BlockCounts.empty(2), BlockCounts.empty(2)
    b.choice = PrecisionChoice("fp32", "why")
    assert (a + b).choice == b.choice and (b + a).choice == b.choice
