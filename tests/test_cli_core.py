import json
import shutil

import pytest
import torch

from arith.model import ModelShape, Transformer
from arith.weights import save_weights
from tests.conftest import assert_one_line_error, varith


@pytest.mark.parametrize("command", ["train", "predict", "classify", "verify"])
def test_every_subcommand_has_help(command):
    proc = varith(command, "--help")
    assert proc.returncode == 0 and "usage:" in proc.stdout


def test_predict_greedy_decodes_the_trained_model(demo_model):
    proc = varith("predict", "--model", str(demo_model), "99+99", "12+3", "07+05")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["+198", "+015", "+012"]
    # questions from stdin, one per line, and the full sequence on request
    proc = varith("predict", "--model", str(demo_model), "--full", stdin="45+55\n\n00+00\n")
    assert proc.stdout.splitlines() == ["45+55=+100", "", "00+00=+000"]


def test_predict_prints_malformed_predictions_as_they_are(tmp_path):
    shape = ModelShape(n_layers=1, n_heads=3, n_ctx=10, d_model=16, d_head=4, d_mlp=64)
    model = Transformer(shape)
    with torch.no_grad():
        model.unembed.b_U.copy_(torch.tensor([0.0] * 12 + [50.0, 0.0, 0.0]))  # always predicts '='
    path = tmp_path / "add_d2_l1_h3_t20_s111111.pth"
    save_weights(model, path)
    (tmp_path / "add_d2_l1_h3_t20_s111111_train.json").write_text(
        json.dumps(
            {"Config": {"n_layers": 1, "n_heads": 3, "d_model": 16, "d_head": 4, "d_mlp_multiplier": 4, "n_digits": 2}}
        )
    )
    proc = varith("predict", "--model", str(path), "12+34")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "===="


def test_verify_writes_accuracy_json(demo_model, tmp_path):
    # a private copy, so nothing another test left beside the session's demo model can count here
    model = tmp_path / demo_model.name
    shutil.copy(demo_model, model)
    train_json = demo_model.name.replace(".pth", "_train.json")
    shutil.copy(demo_model.with_name(train_json), tmp_path / train_json)
    # `--cluster none`: no Dask, the blocks in this process, into the store beside the weights (as on any cluster)
    proc = varith("verify", str(model), "--exhaustive", "--cluster", "none", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / model.name.replace(".pth", ".zarr") / "verify" / "exhaustive").is_dir()
    report = json.loads(model.with_name(model.name.replace(".pth", "_accuracy.json")).read_text())["exhaustive"]
    assert report["tested"] == 10_000 and report["failed"] == 0
    assert sum(c["tested"] for c in report["by_class"]["ADD"].values()) == 10_000
    assert set(report["by_class"]["ADD"]) == {"S0", "S1", "S2"}
    assert "every one of the 10,000 2-digit addition questions" in report["exhaustive"]
    assert "S2" in proc.stdout and "100.0000%" in proc.stdout


def test_train_cli_writes_artifacts_and_resumes(tmp_path):
    args = [
        "train",
        "add_d2_l1_h3_t60_s111111",
        "--out",
        str(tmp_path),
        "--d-model",
        "16",
        "--d-head",
        "4",
        "--checkpoint-every",
        "20",
        "--no-progress",
    ]
    proc = varith(*args, "--stop-after", "40")
    assert proc.returncode == 0, proc.stderr
    assert "stopped after 40 steps" in proc.stdout
    proc = varith(*args)
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "add_d2_l1_h3_t60_s111111"
    assert (run / "add_d2_l1_h3_t60_s111111.pth").is_file()
    assert len(json.loads((run / "add_d2_l1_h3_t60_s111111_train.json").read_text())["TrainingLoss"]) == 60
    # runs trained directly show up in `varith status`, with a manifest of their artifacts
    status = varith("status", "--runs-dir", str(tmp_path))
    assert status.returncode == 0 and "add_d2_l1_h3_t60_s111111" in status.stdout and "done" in status.stdout
    assert "add_d2_l1_h3_t60_s111111.pth" in (run / "manifest.json").read_text()
    # --steps/--seed overrides rename the run to what it really is
    proc = varith(
        "train",
        "add_d2_l1_h3_t15K_s372001",
        "--steps",
        "10",
        "--seed",
        "222222",
        "--out",
        str(tmp_path),
        "--d-model",
        "16",
        "--d-head",
        "4",
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "add_d2_l1_h3_t10_s222222" / "add_d2_l1_h3_t10_s222222.pth").is_file()


def test_bad_input_gives_one_error_line(tmp_path, demo_model):
    assert_one_line_error(varith("train", "add_d6_l2_h3_t15K_s37"), "seed")
    assert_one_line_error(varith("train", "div_d6_l2_h3_t15K_s372001"), "div")
    assert_one_line_error(varith("train", "ins1_mix_d6_l3_h4_t40K_s372001", "--out", str(tmp_path)), "insert weights")
    assert_one_line_error(
        varith("predict", "--model", str(tmp_path / "add_d2_l1_h3_t20_s111111.pth"), "1+1"), "no such file"
    )
    corrupt = tmp_path / "add_d2_l1_h3_t20_s111111.pth"
    corrupt.write_bytes(b"\x00garbage")
    assert_one_line_error(varith("predict", "--model", str(corrupt), "1+1"), "not a readable torch state dict")
    # weights of another shape: the demo weights under a name that says 2 layers
    wrong = tmp_path / "add_d2_l2_h3_t3K_s123456.pth"
    shutil.copy(demo_model, wrong)
    assert_one_line_error(
        varith("predict", "--model", str(wrong), "1+1"), "missing key blocks.1.", "_train.json is missing"
    )
    assert_one_line_error(varith("predict", "--model", str(demo_model), "123+4"), "more than 2 digits")
    assert_one_line_error(varith("predict", "--model", str(demo_model), "1/2"), "expected <digits>")
    assert_one_line_error(varith("verify", str(demo_model), "--questions", "0"), "--questions")
    assert_one_line_error(varith("verify", str(demo_model), "--exhaustive", "--ops", "div"), "unknown operation")
    assert_one_line_error(varith("nonsense"), "invalid choice")
