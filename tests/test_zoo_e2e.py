"""The zoo end to end at tiny scale, as a user types it: one model of each family at its smallest and largest digit
count (add_d5 and add_d20, sub_d12, mix_d13, ins1_mix_d12 with its insert model add_d12, the GrokFast add_d10)
through train -> verify -> ablate -> algo -> hub folders in both layouts, every manifest checking out, a publish of
both layouts to a local stand-in for the Hub, a fetch of each layout, and the zoo table over it all.

The models train 40 steps (too few to answer anything: the tiny recipe lets the ablation find no useful node),
so this checks that every stage runs at every shape up to n_ctx 64, not what the models learn."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from analysis import zoo
from arith.manifest import MANIFEST
from arith.names import parse_name
from jobs.stages import hub
from tests.conftest import varith

MODELS = {
    "add_d5_l1_h3_t15K_s372001": "add_d5_l1_h3_t40_s372001",
    "add_d20_l2_h3_t80K_s572091": "add_d20_l2_h3_t40_s572091",
    "sub_d12_l2_h3_t75K_s371793": "sub_d12_l2_h3_t40_s371793",
    "mix_d13_l3_h4_t85K_s572091": "mix_d13_l3_h4_t40_s572091",
    "ins1_mix_d12_l3_h4_t85K_s572091": "ins1_mix_d12_l3_h4_t40_s572091",
    "add_d10_l2_h3_t40K_gf_s572091": "add_d10_l2_h3_t40_gf_s572091",
}
INSERT = "add_d12_l2_h3_t40_s572091"  # add_d12_l2_h3_t50K_s572091, the ins1 model's insert model (a zoo model too)


@pytest.fixture(scope="module")
def zoo_out(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("zoo")
    proc = varith(
        "regenerate", "--models", *MODELS, "--scale", "tiny", "--cluster", "none", "--steps", "40",
        "--questions", "300", "--layout", "both", "--out", "out", cwd=work,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"{len(MODELS) + 1}/{len(MODELS) + 1} model(s) regenerated" in proc.stdout, proc.stdout[-2000:]
    return work / "out"


def test_every_family_runs_every_stage_into_both_layouts(zoo_out):
    for run_name in [*MODELS.values(), INSERT]:
        run = zoo_out / "runs" / run_name
        name = parse_name(run_name)
        assert json.loads((run / "stage.json").read_text())["state"] == "done", run_name
        report = json.loads((run / f"{run_name}_accuracy.json").read_text())["random"]
        ops = sum(p > 0 for p in (name.perc_add, name.perc_sub))
        assert report["suite"]["n_digits"] == name.n_digits and report["tested"] == 300 * ops, report["suite"]
        assert isinstance(json.loads((run / f"{run_name}_maths.json").read_text()), list)
        flat, per_model = zoo_out / "hub" / run_name, zoo_out / "hub" / f"QuantaMaths_{run_name}"
        for folder in (flat, per_model):
            assert hub.manifest_problem(folder) is None, folder
            assert json.loads((folder / MANIFEST).read_text())["model"] == run_name
        assert (flat / f"{run_name}.pth").read_bytes() == (per_model / "model.pth").read_bytes()
        for file in ("training_loss.json", "behaviors.json", "features.json", "README.md"):
            assert (per_model / file).is_file(), per_model / file
    # the GrokFast model trained with its filter; the ins1 model from its zoo insert model (add_d12, 40 steps here)
    gf = MODELS["add_d10_l2_h3_t40K_gf_s572091"]
    assert json.loads((zoo_out / "runs" / gf / f"{gf}_train.json").read_text())["Config"]["grokfast"] is True
    ins = MODELS["ins1_mix_d12_l3_h4_t85K_s572091"]
    config = json.loads((zoo_out / "runs" / ins / f"{ins}_train.json").read_text())["Config"]
    assert (config["insert_training_seed"], config["insert_n_training_steps"]) == (572091, 40)


def test_both_layouts_publish_fetch_and_give_the_same_zoo_table(zoo_out, tmp_path):
    stand_in = tmp_path / "stand-in"
    published = varith("publish", str(zoo_out / "hub"), "--repo", "me/zoo", "--hub", str(stand_in), cwd=tmp_path)
    assert published.returncode == 0, published.stderr
    ours = {r.model: r for r in zoo.zoo_rows([zoo_out])}
    assert set(ours) == {*MODELS.values(), INSERT}
    for model, row in ours.items():
        assert row.stages == ("train", "verify", "ablate", "algo", "hub"), row
        name = parse_name(model)
        ops = sum(p > 0 for p in (name.perc_add, name.perc_sub))
        assert sum(c.tested for c in row.classes) == 300 * ops, row.classes
        assert (row.result("ADD") is not None) == (name.perc_add > 0)
    # fetched from each layout, the same rows (less the hub stage: the cache holds no card or manifest)
    for run_name in (MODELS["add_d20_l2_h3_t80K_s572091"], MODELS["add_d10_l2_h3_t40K_gf_s572091"]):
        for repo in ("me/zoo", f"me/QuantaMaths_{run_name}"):
            cache = tmp_path / f"cache-{repo.split('/')[1]}-{run_name}"
            hub.fetch(hub.LocalFolderHub(stand_in), repo, run_name, cache)
            (fetched,) = zoo.zoo_rows([cache])
            assert fetched.content().classes == ours[run_name].content().classes, repo
    # the table as a user writes it: Markdown, CSV and a picture, one row per model
    made = varith("zoo", str(zoo_out), "--out", "table", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    rows = list(csv.DictReader((tmp_path / "table" / "zoo.csv").open()))
    assert sorted(r["model"] for r in rows) == sorted(ours)
    assert (tmp_path / "table" / "zoo.png").stat().st_size > 0 and (tmp_path / "table" / "zoo.md").is_file()
