"""`varith ablate`, `varith algo`, `varith compare` and regenerate's ablate stage on bad or empty input: one line,
exit 2, and no behaviour file lost or replaced by an empty one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import DEMO_NAME, assert_one_line_error, varith

BLANK = "add_d2_l1_h3_t20_s000009"  # an untrained addition model: it answers none of the questions


@pytest.fixture(scope="module")
def blank_run(tmp_path_factory) -> Path:
    """A run folder holding an untrained 2-digit addition model (weights and train json)."""
    from arith.model import Transformer
    from arith.train import TrainConfig, config_record
    from arith.weights import save_weights

    cfg = TrainConfig(BLANK, d_model=16, d_head=4)
    run = tmp_path_factory.mktemp("blank") / BLANK
    run.mkdir()
    model = Transformer(cfg.shape)
    model.reset_parameters(torch.Generator().manual_seed(0))
    save_weights(model, run / f"{BLANK}.pth")
    (run / f"{BLANK}_train.json").write_text(json.dumps({"Config": config_record(cfg)}))
    return run


@pytest.fixture()
def blank(blank_run, tmp_path, monkeypatch) -> Path:
    """A copy of the untrained run in a fresh working folder (the current directory); its relative weights path."""
    shutil.copytree(blank_run, tmp_path / BLANK)
    monkeypatch.chdir(tmp_path)
    return Path(BLANK) / f"{BLANK}.pth"


def ablate(*args: str, cwd: Path) -> object:
    return varith("ablate", *args, "--no-progress", cwd=cwd)


NODE = {"position": 6, "layer": 0, "is_head": True, "num": 1, "tags": ["Fail%:29", "Impact:A2"]}


def test_no_useful_nodes_leaves_the_behaviour_file_as_it_was(blank, tmp_path):
    behavior = blank.with_name(f"{BLANK}_behavior.json")
    sidecar = blank.with_name(f"{BLANK}_behavior.meta.json")
    behavior.write_text(json.dumps([NODE]))
    sidecar.write_text(json.dumps({"mode": "corrected", "useful_nodes": 1}))
    before = behavior.read_bytes(), sidecar.read_bytes()
    proc = ablate(str(blank), "--cluster", "none", cwd=tmp_path)
    assert_one_line_error(proc, "answers none of the", "left as it was")
    assert (behavior.read_bytes(), sidecar.read_bytes()) == before
    # with no behaviour file yet, none is written (an empty list would look like a finished analysis)
    behavior.unlink()
    sidecar.unlink()
    proc = ablate(str(blank), "--cluster", "none", cwd=tmp_path)
    assert_one_line_error(proc, "answers none of the", "no behaviour file written")
    assert not behavior.exists() and not sidecar.exists()


def test_question_file_takes_only_addition_and_subtraction(blank, tmp_path):
    behavior = blank.with_name(f"{BLANK}_behavior.json")
    Path("q.txt").write_text("# questions\n12+34\n\n12*34\n")
    proc = ablate(str(blank), "--cluster", "none", "--question-file", "q.txt", cwd=tmp_path)
    assert_one_line_error(proc, "q.txt", "line 4", "12*34")
    assert not Path(f"{BLANK}/{BLANK}.zarr").exists() and not behavior.exists()
    # subtraction on an addition model: run, with the warning varith predict gives
    Path("q.txt").write_text("12+34\n12-05\n")
    proc = ablate(str(blank), "--cluster", "none", "--question-file", "q.txt", cwd=tmp_path)
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert warnings == [
        f"varith ablate: warning: subtraction questions (e.g. 12-05) but model {BLANK} was trained on addition "
        "only; its answers to them mean nothing"
    ], proc.stderr
    pred = varith("predict", "--model", str(blank), "12-05", cwd=tmp_path)
    assert pred.stderr.strip() == warnings[0].replace("varith ablate", "varith predict")


def test_reduce_only_without_results_is_one_line(blank, tmp_path):
    proc = ablate(str(blank), "--reduce-only", "--store", "nonexist.zarr", cwd=tmp_path)
    assert_one_line_error(proc, "nonexist.zarr", "no corrected ablation results", "without --reduce-only")
    assert not Path("nonexist.zarr").exists()
    # a store holding the corrected ablation only: --compat --reduce-only finds no compat results
    assert ablate(str(blank), "--cluster", "none", cwd=tmp_path).returncode == 2  # answers nothing, store written
    assert Path(f"{BLANK}/{BLANK}.zarr/ablate/corrected").is_dir()
    proc = ablate(str(blank), "--reduce-only", "--compat", cwd=tmp_path)
    assert_one_line_error(proc, "no compat ablation results", "without --reduce-only")


def test_algo_refuses_behaviour_files_that_do_not_fit_the_weights(blank, tmp_path):
    behavior = blank.with_name(f"{BLANK}_behavior.json")
    sidecar = blank.with_name(f"{BLANK}_behavior.meta.json")
    maths = blank.with_name(f"{BLANK}_maths.json")

    def algo():
        return varith("algo", str(blank), "--cluster", "none", "--no-progress", cwd=tmp_path)

    behavior.write_text(json.dumps([NODE]))
    sidecar.write_text(json.dumps({"mode": "corrected", "weights_sha256": "0" * 64}))
    assert_one_line_error(algo(), str(behavior), "other weights", "varith ablate")
    sidecar.unlink()
    far = {"position": 99, "layer": 5, "is_head": True, "num": 7, "tags": ["Fail%:1"]}
    behavior.write_text(json.dumps([NODE, far]))
    assert_one_line_error(algo(), "node 1", "P99L5H7", "1 layers, 3 heads, 10 positions")
    behavior.write_text("[]")
    assert_one_line_error(algo(), str(behavior), "no useful nodes", "varith ablate")
    proc = varith("algo", str(blank), "--reduce-only", cwd=tmp_path)
    assert_one_line_error(proc, "no useful nodes")
    assert not maths.exists()


def test_regenerate_stops_a_model_that_answers_nothing(blank_run, tmp_path):
    from hpc import regenerate as rg

    opts = rg.Options(tmp_path / "out", rg.read_catalog().recipe("full"))  # tiny's 40-step models learn nothing
    step = rg.Step(BLANK, BLANK, published=False)  # train, then ablate
    run = opts.run(step)
    shutil.copytree(blank_run, run.path)

    class TrainedStages(rg.Stages):
        def done_train(self, step):
            return True

    outcome = rg.run_model(step, TrainedStages(opts))
    assert (outcome.state, outcome.stage) == ("failed", "ablate")
    assert "answers none of the" in outcome.error
    assert not run.behavior_json.exists()


def test_compare_refuses_a_behaviour_file_against_a_maths_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("a_behavior.json").write_text(json.dumps([NODE]))
    Path("a_maths.json").write_text(json.dumps([{**NODE, "tags": ["Algo:A1.SA"]}]))
    proc = varith("compare", "a_behavior.json", "a_maths.json", cwd=tmp_path)
    assert_one_line_error(proc, "a_behavior.json is a behaviour file", "a_maths.json a maths file")


def test_compat_says_which_file_it_replaced(demo_model, tmp_path, monkeypatch):
    folder = tmp_path / DEMO_NAME
    folder.mkdir()
    for suffix in (".pth", "_train.json"):
        shutil.copy(Path(demo_model).with_name(DEMO_NAME + suffix), folder / (DEMO_NAME + suffix))
    weights = f"{DEMO_NAME}/{DEMO_NAME}.pth"
    first = ablate(weights, "--cluster", "none", "--no-pictures", cwd=tmp_path)
    assert first.returncode == 0 and "note:" not in first.stderr, first.stderr
    proc = ablate(weights, "--cluster", "none", "--no-pictures", "--compat", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"note: {DEMO_NAME}/{DEMO_NAME}_behavior.json (made by the corrected ablation) now holds the compat" in (
        proc.stderr
    )
