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
    from jobs.stages import regenerate as rg

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


# ------------------------------------------------------------------------------------------------ before any work


@pytest.mark.parametrize(
    "folder, what",
    [
        ("_behavior.json", "behaviour file"),
        ("_behavior.meta.json", "behaviour sidecar"),
        ("_quanta_neg.png", "quanta map"),  # a view this model may never draw: refused all the same
    ],
)
def test_an_output_path_that_is_a_folder_is_refused_before_any_work(blank, tmp_path, folder, what):
    path = Path(f"{BLANK}/{BLANK}{folder}")
    path.mkdir()
    (path / "keep.txt").write_text("mine")
    proc = ablate(str(blank), cwd=tmp_path)  # the default Dask cluster: refused before it starts
    assert_one_line_error(proc, what, str(path), "is a folder", "left as it is")
    assert "dask" not in proc.stdout.lower()
    assert (path / "keep.txt").read_text() == "mine" and not Path(f"{BLANK}/{BLANK}.zarr").exists()
    if "quanta" in folder:  # without pictures it is no output
        proc = ablate(str(blank), "--cluster", "none", "--no-pictures", cwd=tmp_path)
        assert "answers none of the" in proc.stderr, proc.stderr


def test_algo_checks_the_maths_file_its_map_and_the_ablation_outputs_first(blank, tmp_path):
    maths = Path(f"{BLANK}/{BLANK}_maths.json")
    algo_map = Path(f"{BLANK}/{BLANK}_quanta_algo.svg")
    for path, what, runs in ((maths, "maths file", ((), ("--reduce-only",))), (algo_map, "quanta map", ((),))):
        path.mkdir()
        for extra in runs:
            if extra:  # --reduce-only reads a behaviour file's search: give it one
                Path(f"{BLANK}/{BLANK}_behavior.json").write_text(json.dumps([NODE]))
            proc = varith("algo", str(blank), "--no-progress", *extra, cwd=tmp_path)
            assert_one_line_error(proc, what, str(path), "is a folder")
            assert not Path(f"{BLANK}/{BLANK}.zarr").exists()
            Path(f"{BLANK}/{BLANK}_behavior.json").unlink(missing_ok=True)
        path.rmdir()
    # the ablation algo runs first when there is no behaviour file checks its outputs too
    Path(f"{BLANK}/{BLANK}_quanta_impact.png").mkdir()
    assert_one_line_error(varith("algo", str(blank), cwd=tmp_path), "quanta map", "_quanta_impact.png")
    # a maths file that is not one (someone's notes) is never replaced
    Path(f"{BLANK}/{BLANK}_quanta_impact.png").rmdir()
    maths.write_text("my notes\n")
    assert_one_line_error(varith("algo", str(blank), cwd=tmp_path), str(maths), "not a behaviour or maths file")
    assert maths.read_text() == "my notes\n" and not Path(f"{BLANK}/{BLANK}.zarr").exists()


def test_truncated_weights_are_one_line_and_start_no_cluster(blank, tmp_path):
    blank.write_bytes(blank.read_bytes()[:3000])
    for command in ("ablate", "algo"):
        proc = varith(command, str(blank), "--no-progress", cwd=tmp_path)  # default: a local Dask cluster
        assert_one_line_error(proc, f"weights {blank}", "not a readable torch state dict")
        assert "dask" not in proc.stdout.lower(), proc.stdout
    assert not Path(f"{BLANK}/{BLANK}.zarr").exists()


# ------------------------------------------------------------------------------------------------ algo after ablate


def test_algo_after_another_ablation_says_which_command_to_run(demo_model, tmp_path):
    import re

    folder = tmp_path / DEMO_NAME
    folder.mkdir()
    for suffix in (".pth", "_train.json"):
        shutil.copy(Path(demo_model).with_name(DEMO_NAME + suffix), folder / (DEMO_NAME + suffix))
    w = f"{DEMO_NAME}/{DEMO_NAME}.pth"
    maths = folder / f"{DEMO_NAME}_maths.json"

    def run(*args):
        return varith(*args, "--cluster", "none", "--no-progress", cwd=tmp_path)

    assert run("algo", w).returncode == 0  # the corrected ablation, then the search
    proc = run("ablate", w, "--compat", "--no-pictures")
    assert proc.returncode == 0, proc.stderr
    # the maths file and its map were made from the file the compat ablation replaced: one warning line
    (stale,) = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert "stale" in stale and maths.name in stale and f"`varith algo {w} --compat`" in stale, stale
    before = maths.read_bytes()
    proc = run("algo", w)
    assert_one_line_error(
        proc,
        f"was made by `varith ablate {w} --compat`",
        f"is of the one `varith ablate {w}` made",
        f"`varith algo {w} --compat`",
        f"`varith ablate {w}` first",
        f"`varith algo {w} --fresh`",
    )
    assert not re.search(r"[0-9a-f]{40}", proc.stderr), proc.stderr  # in words, no hashes
    proc = varith("algo", w, "--reduce-only", cwd=tmp_path)
    assert_one_line_error(proc, "cannot be rebuilt", f"`varith algo {w} --compat`")
    assert maths.read_bytes() == before
    # the advice works, and the maths file is current again (compare no longer warns)
    assert run("algo", w, "--compat").returncode == 0
    proc = varith("compare", str(maths.relative_to(tmp_path)), str(maths.relative_to(tmp_path)), cwd=tmp_path)
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr
    # a question-file ablation (into another store): algo names it and the command for the varied questions
    Path(tmp_path / "q.txt").write_text("".join(f"{a:02d}+{(a * 37) % 100:02d}\n" for a in range(100)))
    proc = run("ablate", w, "--question-file", "q.txt", "--store", "q.zarr", "--no-pictures")
    assert proc.returncode == 0, proc.stderr
    proc = run("algo", w)
    assert_one_line_error(proc, f"`varith ablate {w} --question-file q.txt`", f"`varith ablate {w}` first")
