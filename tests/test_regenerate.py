"""`varith regenerate`: the catalog, the plan, a tiny regeneration of an addition model and the ins1 model
that needs it (debug backend, every file checked), resuming after an interruption, failures that stop only
their own model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.behavior import load_records
from arith.files import sha256_file
from arith.names import PUBLISHED, parse_name
from hpc import hub
from hpc import regenerate as rg
from hpc import runs as run_state
from hpc.rundir import RunDir
from jobs.cli import main

INS = "ins1_mix_d6_l3_h4_t40K_s372001"
ADD = "add_d6_l2_h3_t15K_s372001"
TINY_INS, TINY_ADD = "ins1_mix_d6_l3_h4_t40_s372001", "add_d6_l2_h3_t40_s372001"
FAST = ["--scale", "tiny", "--cluster", "debug", "--steps", "40", "--questions", "2000"]


def regenerate(out: Path, *extra: str) -> int:
    return main(["regenerate", *FAST, "--out", str(out), "--models", INS, *extra])


def stage_lines(text: str) -> dict[str, list[str]]:
    """'name: stage started|skipped' progress lines -> {name: [stages run]}, {name: [stages skipped]}."""
    ran: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "] " in line and line.endswith("(this process)") and " started " in line:
            name, rest = line.split("] ", 1)[1].split(": ", 1)
            ran.setdefault(name, []).append(rest.split()[0])
    return ran


def test_catalog_is_the_published_list_with_the_insert_models_of_spec_13():
    catalog = rg.read_catalog()
    assert [e.name for e in catalog.models] == list(PUBLISHED)
    inserts = {e.name: e.insert for e in catalog.models if e.insert}
    assert inserts["ins1_mix_d6_l3_h4_t40K_s372001"] == "add_d6_l2_h3_t15K_s372001"
    for name in ("ins1_mix_d6_l3_h4_t40K_s173289", "ins1_mix_d6_l3_h3_t40K_s572091", "ins1_mix_d6_l3_h4_t50K_s572091"):
        assert inserts[name] == "add_d6_l2_h3_t20K_s173289"
    assert all(e.note for e in catalog.models)
    tiny = catalog.recipe("tiny")
    assert tiny.steps and dict(tiny.train)["d_model"] == 32 and dict(tiny.train)["d_head"] == 8
    assert catalog.recipe("full").questions == 1_000_000


def test_plan_puts_insert_models_first_and_keeps_the_name_shape():
    catalog = rg.read_catalog()
    steps = rg.plan(catalog, catalog.recipe("tiny"), ["ins1_mix_d6_l3_h3_t40K_s572091"])
    assert [s.source for s in steps] == ["add_d6_l2_h3_t20K_s173289", "ins1_mix_d6_l3_h3_t40K_s572091"]
    assert [s.name for s in steps] == ["add_d6_l2_h3_t300_s173289", "ins1_mix_d6_l3_h3_t300_s572091"]
    assert steps[1].insert == steps[0].name
    # an insert model that is not in the catalog is trained first, with only what the ins model needs of it
    lone = rg.Catalog((rg.Entry(INS, "n", "add_d6_l2_h3_t20K_s111111"),), catalog.recipes)
    first, main_step = rg.plan(lone, lone.recipe("full"))
    assert not first.published and first.stages == rg.INSERT_STAGES and main_step.stages == rg.STAGES
    full = rg.plan(catalog, catalog.recipe("full"))
    assert len(full) == 13 and [s.name for s in full] == [s.source for s in full]
    pos = {s.source: i for i, s in enumerate(full)}
    assert all(pos[s.insert_source] < pos[s.source] for s in full if s.insert_source)
    with pytest.raises(rg.InputError, match="not in the catalog"):
        rg.plan(catalog, catalog.recipe("full"), ["add_d2_l1_h1_t1K_s000001"])


def test_dry_run_prints_every_model_its_stages_dependencies_and_where(tmp_path, capsys):
    assert main(["regenerate", "--scale", "full", "--cluster", "local", "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for name in PUBLISHED:
        assert f"\n{name}\n" in out
    assert "after: add_d6_l2_h3_t20K_s173289 (weights and behaviour file)" in out
    assert out.count("  train  local job (submitit)") == 13 and out.count("  hub    this process") == 13
    assert not (tmp_path / "o").exists()
    assert main(["regenerate", "--cluster", "slurm", "--dry-run"]) == 2  # needs --profile
    assert "--profile" in capsys.readouterr().err
    profile = Path(rg.__file__).parent / "profiles"
    prof = next(iter(sorted(profile.glob("*.toml"))))
    assert main(["regenerate", "--cluster", "slurm", "--profile", str(prof), "--models", ADD, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "train  SLURM job (submitit)" in out and "verify Dask workers on SLURM" in out
    for bad in (["--steps", "0"], ["--models", "add_d9_l1_h1_t1K_s000001"], ["--steps", "1500"]):
        assert main(["regenerate", "--dry-run", *bad]) == 2, bad
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def check_hub_folder(out: Path, name: str) -> None:
    folder = out / "hub" / name
    run = RunDir.of(out / "runs", name)
    files = {p.name for p in folder.iterdir()}
    for kind in ("weights", "train", "behavior", "maths", "accuracy"):
        assert run.artifact(kind).name in files
    assert {"README.md", "manifest.json"} <= files
    assert hub.manifest_problem(folder) is None
    load_records(folder / f"{name}_behavior.json")
    load_records(folder / f"{name}_maths.json")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == files - {"manifest.json"}
    for f in ("weights", "train", "behavior", "maths", "accuracy"):
        assert manifest["files"][run.artifact(f).name]["sha256"] == sha256_file(run.artifact(f))
    assert manifest["seeds"]["training"] == parse_name(name).seed and manifest["scale"] == "tiny"
    accuracy = json.loads((folder / f"{name}_accuracy.json").read_text())["random"]
    assert accuracy["weights_sha256"] == sha256_file(run.weights) and accuracy["suite"]["n_questions"] == 2000
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: pytorch\n") and f"# {name}" in card
    assert "## Accuracy" in card and "95% confidence" in card and "varith regenerate --models" in card


def test_tiny_regeneration_lands_every_file_and_resumes_after_an_interruption(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    real_ablate = rg.Stages.run_ablate

    def interrupted(self, step):
        if step.name == TINY_INS:
            raise KeyboardInterrupt
        return real_ablate(self, step)

    monkeypatch.setattr(rg.Stages, "run_ablate", interrupted)
    assert regenerate(out) == 130  # Ctrl-C in the ins1 model's ablation
    first = stage_lines(capsys.readouterr().out)
    assert first == {TINY_ADD: list(rg.STAGES), TINY_INS: ["train", "verify", "ablate"]}
    assert rg.read_record(RunDir.of(out / "runs", TINY_INS))["stage"] == "ablate"
    rows = {r.name: r for r in run_state.collect(out / "runs")}
    assert rows[TINY_ADD].stage == "hub done" and rows[TINY_INS].stage == "ablate interrupted"
    weights_time = RunDir.of(out / "runs", TINY_INS).weights.stat().st_mtime_ns

    monkeypatch.setattr(rg.Stages, "run_ablate", real_ablate)
    assert regenerate(out) == 0
    text = capsys.readouterr().out
    assert stage_lines(text) == {TINY_INS: ["ablate", "algo", "hub"]}
    assert f"{TINY_ADD}: train skipped (done and checked)" in text
    assert RunDir.of(out / "runs", TINY_INS).weights.stat().st_mtime_ns == weights_time
    for name in (TINY_ADD, TINY_INS):
        check_hub_folder(out, name)
    assert main(["status", "--runs-dir", str(out / "runs")]) == 0
    assert "hub done" in capsys.readouterr().out

    # a damaged output is made again and nothing else (the same bytes come back, so the hub folder stands)
    RunDir.of(out / "runs", TINY_ADD).accuracy_json.write_text("{}")
    assert regenerate(out) == 0
    assert stage_lines(capsys.readouterr().out) == {TINY_ADD: ["verify"]}
    (out / "hub" / TINY_INS / "README.md").write_text("edited by hand")
    assert regenerate(out) == 0
    assert stage_lines(capsys.readouterr().out) == {TINY_INS: ["hub"]}
    for name in (TINY_ADD, TINY_INS):
        check_hub_folder(out, name)

    # the hub folder publishes (dry run) with every file listed
    assert (
        main(["publish", str(out / "hub" / TINY_INS), "--repo", "o/r", "--hub", str(tmp_path / "h"), "--dry-run"]) == 0
    )
    listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("would upload: ")]
    assert len(listed) == len(list((out / "hub" / TINY_INS).iterdir()))


class FakeStages(rg.Stages):
    """Stages that do nothing (never done before) but fail where told: {catalog name: stage}."""

    def __init__(self, opts, fail: dict[str, str]):
        super().__init__(opts)
        self.calls: list[tuple[str, str]] = []
        for stage in rg.STAGES:
            setattr(self, f"done_{stage}", lambda step: False)
            setattr(self, f"run_{stage}", self._runner(stage, fail))

    def _runner(self, stage: str, fail: dict[str, str]):
        def run(step):
            self.calls.append((step.source, stage))
            if fail.get(step.source) == stage:
                raise RuntimeError(f"{stage} broke")
            return []

        return run


def test_a_failed_model_stops_only_itself_and_what_needs_it(tmp_path):
    catalog = rg.read_catalog()
    models = ["add_d5_l1_h3_t30K_s372001", "ins1_mix_d6_l3_h4_t40K_s173289", "sub_d6_l2_h3_t30K_s372001"]
    steps = rg.plan(catalog, catalog.recipe("full"), models)
    fail = {"add_d5_l1_h3_t30K_s372001": "verify", "add_d6_l2_h3_t20K_s173289": "train"}
    stages = FakeStages(rg.Options(tmp_path, catalog.recipe("full")), fail)
    report = rg.regenerate(steps, stages.opts, stages)
    states = {o.name: (o.state, o.stage) for o in report.outcomes}
    assert states == {
        "add_d5_l1_h3_t30K_s372001": ("failed", "verify"),
        "add_d6_l2_h3_t20K_s173289": ("failed", "train"),
        "ins1_mix_d6_l3_h4_t40K_s173289": ("blocked", "train"),
        "sub_d6_l2_h3_t30K_s372001": ("done", None),
    }
    assert [s for n, s in stages.calls if n == "sub_d6_l2_h3_t30K_s372001"] == list(rg.STAGES)
    summary = rg.summary_text(report)
    assert "1/4 model(s) regenerated" in summary
    assert "failed: add_d5_l1_h3_t30K_s372001 add_d6_l2_h3_t20K_s173289 ins1_mix_d6_l3_h4_t40K_s173289" in summary
    assert "verify broke" in summary


def test_local_backend_trains_the_plain_models_of_one_seed_together(tmp_path, capsys):
    models = ["add_d5_l1_h3_t30K_s372001", "add_d5_l2_h3_t15K_s372001"]
    argv = ["regenerate", "--scale", "tiny", "--cluster", "local", "--steps", "30", "--questions", "500"]
    assert main([*argv, "--out", str(tmp_path), "--models", *models, "--dry-run"]) == 0
    assert "# trained ahead together, one sweep: add_d5_l1_h3_t30_s372001 add_d5_l2_h3_t30_s372001" in (
        capsys.readouterr().out
    )
    assert main([*argv, "--out", str(tmp_path), "--models", *models]) == 0
    text = capsys.readouterr().out
    assert "training ahead together (local job (submitit)): add_d5_l1_h3_t30_s372001 add_d5_l2_h3_t30_s372001" in text
    assert text.count("train skipped (done and checked)") == 2
    for name in ("add_d5_l1_h3_t30_s372001", "add_d5_l2_h3_t30_s372001"):
        assert hub.manifest_problem(tmp_path / "hub" / name) is None
