"""`varith ablate` end to end on a trained tiny model: the store, the JSON, reduce-only, Dask, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.behavior import load_records
from jobs.stages import ablate as ablation
from tests.conftest import assert_one_line_error, varith, worker_killed_when

NAME = "add_d2_l1_h3_t3K_s123456"


@pytest.fixture()
def run_dir(demo_model, tmp_path) -> Path:
    """A copy of the trained demo model's run folder (weights and train json)."""
    run = tmp_path / "runs" / NAME
    run.mkdir(parents=True)
    for f in (demo_model, demo_model.with_name(f"{NAME}_train.json")):
        shutil.copy(f, run / f.name)
    return run


def ablate(*args, cwd=None):
    return varith("ablate", *args, "--no-progress", cwd=cwd)


def test_ablation_lands_json_sidecar_pictures_and_reduces_byte_for_byte(run_dir):
    proc = ablate(str(run_dir / f"{NAME}.pth"), "--cluster", "none")
    assert proc.returncode == 0, proc.stderr
    out = run_dir / f"{NAME}_behavior.json"
    records = load_records(out)
    assert records, "a trained model has useful nodes"
    assert json.loads(out.read_text()) == records  # parses back into the same nodes and tags
    assert records == sorted(records, key=lambda r: (r["position"], r["layer"], not r["is_head"], r["num"]))
    for r in records:
        assert r["tags"][0].startswith("Fail%:") and r["tags"][1].startswith("Impact:A")
    meta = json.loads((run_dir / f"{NAME}_behavior.meta.json").read_text())
    assert meta["mode"] == "corrected" and meta["useful_nodes"] == len(records)
    assert (run_dir / f"{NAME}_quanta_fail.svg").is_file() and (run_dir / f"{NAME}_quanta_fail.png").is_file()
    first = out.read_bytes()
    out.unlink()
    proc = ablate(str(run_dir / f"{NAME}.pth"), "--reduce-only", "--no-pictures")
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == first
    # compat keeps its own results beside the corrected ones and says so
    proc = ablate(str(run_dir / f"{NAME}.pth"), "--cluster", "none", "--compat", "--no-pictures")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run_dir / f"{NAME}_behavior.meta.json").read_text())["mode"] == "compat"
    assert ablate(str(run_dir / f"{NAME}.pth"), "--reduce-only", "--no-pictures").returncode == 0
    assert out.read_bytes() == first


def test_dask_with_a_killed_worker_gives_the_in_process_result(run_dir, tmp_path):
    from hpc.cluster import ClusterSpec, open_cluster

    weights = run_dir / f"{NAME}.pth"
    settings = ablation.Settings(progress=False)
    here = ablation.analyse(None, ablation.job_for(weights, store=tmp_path / "here.zarr"), settings)
    job = ablation.job_for(weights, store=tmp_path / "dask.zarr")
    spec = ClusterSpec(kind="local", workers=2, torch_threads=1, preload=("jobs.stages.ablate",))
    with open_cluster(spec) as handle:
        nodes = tmp_path / "dask.zarr" / "ablate" / "corrected" / "nodes" / "done" / "c"
        with worker_killed_when(handle.client, nodes):
            there = ablation.analyse(handle.client, job, settings, handle.task_resources)
    assert there == here


def test_batched_store_results_match_plain_forwards(run_dir, tmp_path):
    """Every stored (node, question) failure equals a plain forward with that node ablated."""
    from analysis.ablate import Node, patch_for
    from analysis.ablation import MeanRule, survey
    from arith.scoring import score
    from arith.weights import load_model

    weights = run_dir / f"{NAME}.pth"
    job = ablation.job_for(weights, store=tmp_path / "s.zarr")
    records = ablation.analyse(None, job, ablation.Settings(progress=False))
    model = load_model(weights, job.model.shape)
    tokens = torch.from_numpy(__import__("arith.vocab", fromlist=["encode"]).encode(job.x, job.y, job.op)).long()
    sv = survey(model, tokens, job.model.layout, MeanRule.CORRECTED)
    kept = tokens[sv.correct]
    for r in records:
        node = Node(r["position"], r["layer"], not r["is_head"], r["num"])
        name, patch = patch_for(node, sv.means)
        fails = int(score(model, kept, 2, hooks={name: patch}).failed.sum())
        assert r["tags"][0] == f"Fail%:{int(100 * fails / len(kept))}"


def test_bad_input_is_one_line_and_loses_nothing(run_dir, tmp_path):
    weights = str(run_dir / f"{NAME}.pth")
    (tmp_path / "six.txt").write_text("123456+654321\n")
    assert_one_line_error(ablate(weights, "--cluster", "none", "--question-file", str(tmp_path / "six.txt")), "digits")
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    assert_one_line_error(
        ablate(weights, "--cluster", "none", "--question-file", str(tmp_path / "empty.txt")), "no questions"
    )
    # a store made for other questions: refused, and the stored results stay
    assert ablate(weights, "--cluster", "none", "--no-pictures").returncode == 0
    store = run_dir / f"{NAME}.zarr"
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    (tmp_path / "q.txt").write_text("12+34\n99+01\n")
    proc = ablate(weights, "--cluster", "none", "--question-file", str(tmp_path / "q.txt"))
    assert_one_line_error(proc, "was made by other settings", "--fresh")
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before


def test_a_model_that_answers_nothing_gets_no_behaviour_file(tmp_path):
    from arith.model import Transformer
    from arith.train import TrainConfig, config_record
    from arith.weights import save_weights

    name = "add_d2_l1_h3_t20_s000009"
    cfg = TrainConfig(name, d_model=16, d_head=4)
    run = tmp_path / name
    run.mkdir()
    model = Transformer(cfg.shape)
    model.reset_parameters(torch.Generator().manual_seed(0))
    save_weights(model, run / f"{name}.pth")
    (run / f"{name}_train.json").write_text(json.dumps({"Config": config_record(cfg)}))
    proc = ablate(str(run / f"{name}.pth"), "--cluster", "none")
    assert_one_line_error(proc, "answers none of the")
    assert not (run / f"{name}_behavior.json").exists()  # never an empty list (tests/test_ablate_inputs.py)


def test_pca_tags_come_from_the_store(run_dir):
    weights = str(run_dir / f"{NAME}.pth")
    assert ablate(weights, "--cluster", "none", "--no-pictures", "--pca").returncode == 0
    out = run_dir / f"{NAME}_behavior.json"
    first = out.read_bytes()
    tags = [t for r in load_records(out) for t in r["tags"] if t.startswith("Math.Add:A")]
    assert all(t.endswith(".SP") for t in tags)
    assert ablate(weights, "--reduce-only", "--no-pictures", "--pca").returncode == 0
    assert out.read_bytes() == first


def test_a_runs_folder_fans_out_over_its_runs(run_dir):
    proc = ablate(str(run_dir.parent), "--cluster", "none", "--no-pictures")
    assert proc.returncode == 0, proc.stderr
    assert f"{NAME}:" in proc.stdout and (run_dir / f"{NAME}_behavior.json").is_file()
    assert np.asarray(load_records(run_dir / f"{NAME}_behavior.json")).size > 0
