"""`varith zoo`: one table over every model, the same rows from our runs (a regeneration's output) as from the
folders they were published to (either layout, a local stand-in for the Hub) and from the fetch cache; the
counts per question class and their 95% bound; training_loss.json of an older era; a folder with nothing in it
and a damaged JSON file are one error line."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest

from analysis import zoo
from analysis.accuracy import binomial_upper_bound
from jobs.cli import main
from jobs.stages import hub
from tests.conftest import assert_one_line_error, varith
from tests.test_hub import HISTORIC, TINY, both_layouts, state_dict_bytes, tiny_regeneration

MIX = "mix_d6_l3_h4_t40K_s372001"


@pytest.fixture(scope="module")
def tiny_out(tmp_path_factory) -> Path:
    return tiny_regeneration(tmp_path_factory)


def test_the_same_rows_from_our_runs_as_from_published_and_fetched_folders(tiny_out, tmp_path):
    ours = zoo.zoo_rows([tiny_out])
    (row,) = ours
    assert row.model == TINY and row.stages == ("train", "verify", "ablate", "algo", "hub")
    behavior = json.loads((tiny_out / "runs" / TINY / f"{TINY}_behavior.json").read_text())
    heads = sum(r["is_head"] for r in behavior)
    assert (row.useful_heads, row.useful_mlps) == (heads, len(behavior) - heads)
    assert row.algo_nodes and row.suite == "random" and row.final_loss is not None
    (add,) = row.classes
    assert (add.name, add.tested) == ("ADD", 2000) and add.bound == binomial_upper_bound(add.tested, add.failed)
    assert set(row.sources) == {str(tiny_out / "runs" / TINY), str(tiny_out / "hub" / TINY)}

    # published in both layouts to a stand-in Hub; each repository folder is one published model
    flat, per_model = both_layouts(tiny_out, tmp_path / "hub")
    stand_in = tmp_path / "stand-in"
    assert main(["publish", str(tmp_path / "hub"), "--repo", "me/zoo", "--hub", str(stand_in)]) == 0
    for published in (stand_in / "me" / "zoo", stand_in / "me" / f"QuantaMaths_{TINY}", stand_in, tmp_path / "hub"):
        rows = zoo.zoo_rows([published])
        assert [r.content() for r in rows] == [row.content()], published

    # fetched from each layout: the cache has the files, not the card and manifest (so no hub stage)
    for repo in ("me/zoo", f"me/QuantaMaths_{TINY}"):
        cache = tmp_path / f"cache-{repo.split('/')[1]}"
        hub.fetch(hub.LocalFolderHub(stand_in), repo, TINY, cache)
        (fetched,) = zoo.zoo_rows([cache])
        assert fetched.stages == row.stages[:-1]
        assert fetched.content() == replace(row.content(), stages=fetched.stages)


def write_flat_model(folder: Path, name: str, by_operation: dict, suite: str = "random") -> None:
    """A flat folder's files of one model: weights, a train json, an accuracy report of `suite`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.pth").write_bytes(state_dict_bytes())
    (folder / f"{name}_train.json").write_text(json.dumps({"Config": {"final_loss": 0.25}, "TrainingLoss": [1, 0.25]}))
    report = {"model": name, "suite": {"suite": suite}, "by_operation": by_operation}
    if suite == "exhaustive":
        report["exhaustive"] = "every question was checked"
    (folder / f"{name}_accuracy.json").write_text(json.dumps({suite: report}, indent=1) + "\n")


def test_each_question_class_gets_its_counts_rate_per_million_and_bound(tmp_path, capsys):
    ops = {
        "ADD": {"tested": 1_000_000, "failed": 0},
        "SUB": {"tested": 500_000, "failed": 5},
        "NEG": {"tested": 500_000, "failed": 1},
    }
    write_flat_model(tmp_path / "legacy", MIX, ops)
    add = "add_d2_l1_h3_t3K_s123456"
    write_flat_model(tmp_path / "legacy", add, {"ADD": {"tested": 10_000, "failed": 10}}, suite="exhaustive")
    rows = zoo.zoo_rows([tmp_path / "legacy"])  # one flat folder of several models, as the legacy repository
    assert [r.model for r in rows] == [add, MIX]
    mix = rows[1]
    for name, counts in ops.items():
        c = mix.result(name)
        assert (c.tested, c.failed) == (counts["tested"], counts["failed"])
        assert c.per_million == 1e6 * counts["failed"] / counts["tested"]
        assert c.bound == binomial_upper_bound(counts["tested"], counts["failed"])
    assert mix.result("ADD").bound_per_million == pytest.approx(2.9957, abs=1e-3)  # 0 of 1M: at most ~3 per million
    assert rows[0].result("ADD").bound == 0.001 and rows[0].suite == "exhaustive"  # checked: the exact rate
    assert mix.stages == ("train", "verify") and mix.useful_heads is None and mix.final_loss == 0.25

    assert main(["zoo", str(tmp_path / "legacy"), "--out", str(tmp_path / "table")]) == 0
    printed = capsys.readouterr().out
    md = (tmp_path / "table" / "zoo.md").read_text()
    assert md in printed and f"| {MIX} | train verify | random | 1000000 | 0 | 0 | 2.996 | 500000 | 5 | 10.00 |" in md
    with open(tmp_path / "table" / "zoo.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["model"] for r in table] == [add, MIX]
    assert table[1]["NEG failed"] == "1" and table[1]["SUB failures per million"] == "10.00"
    assert table[0]["SUB tested"] == "" and table[1]["useful heads"] == ""
    assert (tmp_path / "table" / "zoo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_older_training_loss_json_in_a_per_model_folder(tmp_path):
    folder = tmp_path / f"QuantaMaths_{MIX}"  # named by the folder: no manifest, no model_name
    folder.mkdir()
    (folder / "model.pth").write_bytes(state_dict_bytes())
    (folder / "training_loss.json").write_text(json.dumps(HISTORIC))
    (folder / "features.json").write_text(json.dumps([{"position": 1, "layer": 0, "is_head": True, "tags": []}]))
    (row,) = zoo.zoo_rows([tmp_path])
    assert (row.model, row.final_loss, row.algo_nodes, row.stages) == (MIX, 0.011, 0, ("train", "algo"))


def test_bad_input_is_one_line(tmp_path, tiny_out):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert_one_line_error(varith("zoo", "empty", cwd=tmp_path), "empty", "no model in it")
    assert_one_line_error(varith("zoo", "missing", cwd=tmp_path), "missing", "no such folder")
    for name, text, words in (
        ("behaviors.json", "[{", "not a behaviour or maths file"),
        ("accuracy.json", '{"random": ', "not an accuracy file"),
        ("training_loss.json", "{", "unreadable"),
    ):
        _, per_model = both_layouts(tiny_out, tmp_path / name)
        (per_model / name).write_text(text)
        assert_one_line_error(varith("zoo", str(per_model), cwd=tmp_path), name, words)


def test_a_sufficiency_study_beside_the_weights_adds_its_completeness_per_class(tmp_path):
    """`varith study sufficiency` writes `<name>_sufficiency.json` beside the weights: the zoo table shows the
    share of the baseline accuracy the circuit recovers, per class; a damaged one is one error line."""
    folder = tmp_path / "runs" / MIX
    write_flat_model(folder, MIX, {"ADD": {"tested": 100, "failed": 0}, "SUB": {"tested": 100, "failed": 1}})
    (row,) = zoo.zoo_rows([folder])
    assert row.completeness == ()
    study = {"completeness": {"ADD": {"completeness": 0.75, "normalised": 0.7}, "SUB": {"completeness": None}}}
    (folder / f"{MIX}_sufficiency.json").write_text(json.dumps(study))
    (row,) = zoo.zoo_rows([folder])
    assert row.completeness == (("ADD", 0.75), ("SUB", None))
    header, (cells,) = zoo.table([row])
    assert cells[header.index("ADD completeness")] == "0.750" and cells[header.index("SUB completeness")] == ""
    (folder / f"{MIX}_sufficiency.json").write_text("{")
    proc = varith("zoo", str(folder), "--out", str(tmp_path / "t"), cwd=tmp_path)
    assert_one_line_error(proc, f"{MIX}_sufficiency.json", "not a sufficiency study")
