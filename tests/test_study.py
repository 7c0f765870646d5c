"""`varith study` (issue 22) as a stage: the CLI end to end on the tiny trained model, keep-every-node equals the
baseline, two models on one Dask cluster with a killed worker give the in-process JSON, a restart reuses the
store, bad node names and a missing behaviour file are one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import DEMO_NAME, assert_one_line_error, varith, worker_killed_when

FIGURES = ("baseline", "circuit", "random_circuits", "complement", "untrained_twin")


def _copy_run(demo_model: Path, folder: Path) -> Path:
    """The demo run's weights and train json in `folder/<name>/` (no behaviour file, no store)."""
    run = folder / DEMO_NAME
    run.mkdir(parents=True)
    for f in Path(demo_model).parent.glob(f"{DEMO_NAME}*"):
        if f.is_file() and f.suffix in (".pth", ".json") and "_train" in f.name or f.suffix == ".pth":
            shutil.copy(f, run / f.name)
    return run / f"{DEMO_NAME}.pth"


@pytest.fixture(scope="module")
def ablated(demo_model, tmp_path_factory) -> Path:
    """A copy of the demo run with its behaviour file (ablation in this process); returns the weights."""
    from jobs.stages import ablate as ablation

    weights = _copy_run(demo_model, tmp_path_factory.mktemp("study"))
    job = ablation.job_for(weights)
    settings = ablation.Settings(progress=False)
    ablation.write_outputs(job, settings, ablation.analyse(None, job, settings), pictures=False)
    return weights


def _study(*args, cwd):
    return varith("study", *args, "--cluster", "none", "--no-progress", cwd=cwd)


def test_sufficiency_cli_end_to_end_restart_and_keep_everything(ablated):
    cwd = ablated.parent.parent
    rel = f"{DEMO_NAME}/{DEMO_NAME}.pth"
    args = ("sufficiency", rel, "--seeds", "2", "--random", "2", "--restore", "1", "--chunk", "200")
    proc = _study(*args, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    out = ablated.with_name(f"{DEMO_NAME}_sufficiency.json")
    assert ablated.with_name(f"{DEMO_NAME}_sufficiency.png").stat().st_size > 0
    result = json.loads(out.read_text())
    for key in (*FIGURES, "restoration", "completeness"):
        assert key in result, key
    for key in FIGURES:
        add = result[key]["ADD"]
        assert {"tested", "failed", "accuracy", "interval", "digits"} <= set(add)
        assert add["interval"][0] <= add["accuracy"] <= add["interval"][1]
    assert result["baseline"]["ADD"]["accuracy"] == 1.0  # the demo model answers every question
    assert result["untrained_twin"]["ADD"]["accuracy"] < 0.5
    assert len(result["restoration"]["greedy"]) == 2  # the circuit, then one node added back
    assert {"layer0", "heads", "mlps", "question_positions", "answer_positions"} == set(result["restoration"]["groups"])
    assert 0 <= result["completeness"]["ADD"]["completeness"] <= 1.0 + 1e-9

    # a restart reuses every stored block (no chunk rewritten) and writes the same JSON
    done = next(ablated.parent.glob(f"{DEMO_NAME}.zarr/study/sufficiency/mean/*/done/c"))
    stamps = {p: p.stat().st_mtime_ns for p in done.rglob("*") if p.is_file()}
    assert len(stamps) == 2 * 3  # 2 seeds x 3 chunks of the 525 questions
    again = _study(*args, cwd=cwd)
    assert again.returncode == 0, again.stderr
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert json.loads(out.read_text()) == result

    # keeping every node is the baseline, exactly
    from analysis.interventions import node_universe
    from arith.weights import model_info

    shape, _n, _c = model_info(ablated)
    (cwd / "all.txt").write_text("\n".join(n.name() for n in node_universe(shape)) + "\n")
    proc = _study("sufficiency", rel, "--nodes", "all.txt", "--random", "1", "--restore", "0", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    every = json.loads(out.read_text())
    assert every["circuit"] == every["baseline"]
    assert every["circuit"]["ADD"]["failed"] == 0


def test_patch_cli_maps_every_node_with_a_matched_null(ablated):
    cwd = ablated.parent.parent
    proc = _study("patch", f"{DEMO_NAME}/{DEMO_NAME}.pth", "--digit", "0", "--path", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(ablated.with_name(f"{DEMO_NAME}_patch.json").read_text())
    a0 = result["digits"]["A0"]
    assert a0["change"] == "x0" and a0["pairs"] > 0 and a0["null_pairs"] > 0
    rec = {r["node"]: r for r in a0["nodes"]}
    assert len(rec) == len(a0["nodes"])
    for r in a0["nodes"]:
        assert 0 <= r["rate"] <= 1 and r["lo"] <= r["rate"] <= r["hi"] and "null_rate" in r
    assert max(r["rate"] for r in a0["nodes"]) > 0.5  # some node carries x0 into A0
    assert "A0" in result["untrained_twin"] and "A0" in result["paths"]
    assert ablated.with_name(f"{DEMO_NAME}_patch.png").is_file()


def test_bad_node_names_and_missing_behaviour_file_are_one_line(ablated, demo_model, tmp_path):
    cwd = ablated.parent.parent
    rel = f"{DEMO_NAME}/{DEMO_NAME}.pth"
    (cwd / "bad.txt").write_text("P06L0H1\nP99L0H0\n")
    assert_one_line_error(_study("sufficiency", rel, "--nodes", "bad.txt", cwd=cwd), "bad.txt line 2", "P99L0H0")
    (cwd / "worse.txt").write_text("L0H1\n")
    assert_one_line_error(_study("sufficiency", rel, "--nodes", "worse.txt", cwd=cwd), "'L0H1'")
    bare = _copy_run(demo_model, tmp_path)
    proc = _study("sufficiency", str(bare), cwd=tmp_path)
    assert_one_line_error(proc, "behavior file", "varith ablate")


def test_two_models_one_dask_cluster_killed_worker_same_json(ablated, tmp_path):
    """Two models (two run folders) through one local Dask cluster with a worker killed mid-run give the JSON
    the blocks give in this process."""
    from hpc.cluster import ClusterSpec, open_cluster
    from jobs.stages import study
    from jobs.stages.template import preload

    second = tmp_path / "other" / DEMO_NAME
    second.mkdir(parents=True)
    for f in ablated.parent.glob(f"{DEMO_NAME}*.json"):
        shutil.copy(f, second / f.name)
    shutil.copy(ablated, second / ablated.name)
    settings = study.Settings(seeds=2, random=2, restore=0, chunk=100, progress=False)
    stage = study.SufficiencyStage(settings)
    weights = [ablated, second / ablated.name]
    here = [
        stage.run(study.job_for("sufficiency", w, store=tmp_path / f"here{i}.zarr"), _InProcess())
        for i, w in enumerate(weights)
    ]
    jobs = [study.job_for("sufficiency", w, store=tmp_path / f"dask{i}.zarr") for i, w in enumerate(weights)]
    spec = ClusterSpec(kind="local", workers=2, torch_threads=1, preload=preload(stage))
    with open_cluster(spec) as handle:
        done = Path(stage._group(jobs[0]).location) / "done" / "c"
        with worker_killed_when(handle.client, done):
            there = [stage.run(job, handle) for job in jobs]
    assert there == here
    drop = {"node_source"}  # the behaviour file's path differs; the figures are the same weights' figures
    assert {k: v for k, v in here[0].items() if k not in drop} == {k: v for k, v in here[1].items() if k not in drop}
    assert stage.reduce(jobs[1]) == there[1]  # the store alone gives the result


class _InProcess:
    client = None
    task_resources = None


def test_probe_finds_an_operand_digit_at_its_own_position(ablated, tmp_path):
    from dataclasses import replace

    from jobs.stages import study

    job = study.job_for("probe", ablated, store=tmp_path / "p.zarr")
    job = replace(job, x=job.x[:160], y=job.y[:160], op=job.op[:160])
    settings = study.Settings(variables=("x0",), perm=1, folds=3, chunk=80, progress=False)
    result = study.ProbeStage(settings).run(job, _InProcess())
    by_site = {r["site"]: r for r in result["variables"]["x0"]}
    p = job.model.layout.n_digits - 1  # x's units digit token
    assert by_site[f"P{p:02d}L0.resid_pre"]["accuracy"] > 0.95  # the token itself
    assert by_site[f"P{p:02d}L0.resid_post"]["accuracy"] > 0.8  # after layer 0 (160 questions, 3 folds)
    assert by_site[f"P{p:02d}L0.resid_post"]["null"] < 0.4  # permuted labels: near chance (0.1)
    assert len(result["transfer"]["matrix"]) == len(result["sites"])
    study.write_outputs(job, result)
    assert job.picture.is_file()
