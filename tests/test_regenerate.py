"""`varith regenerate`: the catalog, the plan, a tiny regeneration of an addition model and the ins1 model
that needs it (debug backend, every file checked), resuming after an interruption, failures that stop only
their own model; a damaged behaviour file redone with everything after it (the algorithm picture kept), the
stage order rule, the quanta maps' owners, and the run names regenerate prints accepted back."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from analysis.behavior import load_records
from arith.files import sha256_file
from arith.names import PUBLISHED, parse_name
from jobs.cli import main
from jobs.runs import lifecycle as run_state
from jobs.runs import rundir
from jobs.runs.rundir import RunDir
from jobs.stages import hub
from jobs.stages import regenerate as rg
from tests.conftest import assert_one_line_error, varith

INS = "ins1_mix_d6_l3_h4_t40K_s372001"
ADD = "add_d6_l2_h3_t15K_s372001"
TINY_INS, TINY_ADD = "ins1_mix_d6_l3_h4_t40_s372001", "add_d6_l2_h3_t40_s372001"
FAST = ["--scale", "tiny", "--cluster", "none", "--steps", "40", "--questions", "2000"]


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
    assert tiny.step_fraction == 0.01 and dict(tiny.train)["d_model"] == 32 and dict(tiny.train)["d_head"] == 8
    assert catalog.recipe("full").questions == 1_000_000


def test_plan_puts_insert_models_first_and_keeps_the_name_shape():
    catalog = rg.read_catalog()
    steps = rg.plan(catalog, catalog.recipe("tiny"), ["ins1_mix_d6_l3_h3_t40K_s572091"])
    assert [s.source for s in steps] == ["add_d6_l2_h3_t20K_s173289", "ins1_mix_d6_l3_h3_t40K_s572091"]
    # the tiny recipe scales each step count (t20K -> t200, t40K -> t400): distinct names stay distinct
    assert [s.name for s in steps] == ["add_d6_l2_h3_t200_s173289", "ins1_mix_d6_l3_h3_t400_s572091"]
    assert steps[1].arch == "ins1_mix_d6_l3_h3_t400,add_d6_l2_h3_t200_s173289"
    assert steps[1].insert == steps[0].name
    # an insert model that is not in the catalog is trained first, with only what the ins model needs of it
    lone = rg.Catalog((rg.Entry(INS, "n", "add_d6_l2_h3_t20K_s111111"),), catalog.recipes)
    first, main_step = rg.plan(lone, lone.recipe("full"))
    assert not first.published and first.stages == rg.INSERT_STAGES and main_step.stages == rg.STAGES
    full = rg.plan(catalog, catalog.recipe("full"))
    assert len(full) == len(PUBLISHED) == 53 and [s.name for s in full] == [s.source for s in full]
    tiny = rg.plan(catalog, catalog.recipe("tiny"))
    assert len({s.name for s in tiny}) == 53  # add_d5_l1_h3 t15K and t30K: t150 and t300
    # one step count for every model (--steps) makes two of them one run: refused, naming both
    with pytest.raises(rg.InputError, match="add_d5_l1_h3_t15K_s372001 and add_d5_l1_h3_t30K_s372001 share"):
        rg.plan(catalog, replace(catalog.recipe("tiny"), steps=40))
    pos = {s.source: i for i, s in enumerate(full)}
    assert all(pos[s.insert_source] < pos[s.source] for s in full if s.insert_source)
    with pytest.raises(rg.InputError, match="not in the catalog"):
        rg.plan(catalog, catalog.recipe("full"), ["add_d2_l1_h1_t1K_s000001"])


def test_models_takes_the_run_names_regenerate_prints(tmp_path, capsys):
    catalog = rg.read_catalog()
    tiny = catalog.recipe("tiny")
    by_catalog = rg.plan(catalog, tiny, ["ins1_mix_d6_l3_h3_t40K_s572091"])
    by_run_name = rg.plan(catalog, tiny, ["ins1_mix_d6_l3_h3_t400_s572091"])
    assert by_run_name == by_catalog
    assert main(["regenerate", "--scale", "tiny", "--out", str(tmp_path), "--models", ADD, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "add_d6_l2_h3_t150_s372001 (for add_d6_l2_h3_t15K_s372001)" in printed
    assert (
        main(
            [
                "regenerate",
                "--scale",
                "tiny",
                "--out",
                str(tmp_path),
                "--models",
                "add_d6_l2_h3_t150_s372001",
                "--dry-run",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == printed
    # a tiny name at full scale: one line that says which scale it belongs to
    proc = varith("regenerate", "--models", "add_d6_l2_h3_t150_s372001", "--dry-run", cwd=tmp_path)
    assert_one_line_error(proc, "add_d6_l2_h3_t150_s372001", "--scale tiny", ADD)


def test_a_stage_is_redone_when_a_stage_it_reads_finished_after_it(tmp_path):
    run = RunDir.of(tmp_path, "add_d5_l1_h3_t30K_s372001")
    run.path.mkdir()
    (run.path / "f").write_text("x")
    stamp = {"f": sha256_file(run.path / "f")}
    for stage in rg.STAGES:
        rg.write_record(run, stage, "done", stamp=stamp)
    assert all(rg.stamp_ok(run, stage) for stage in rg.STAGES[1:])
    rg.write_record(run, "ablate", "running")
    rg.write_record(run, "ablate", "done", stamp=stamp)  # redone: the same bytes, but later than algo and hub
    assert rg.stamp_ok(run, "verify") and rg.stamp_ok(run, "ablate")
    assert not rg.stamp_ok(run, "algo") and not rg.stamp_ok(run, "hub")
    rg.write_record(run, "algo", "done", stamp=stamp)
    assert rg.stamp_ok(run, "algo") and not rg.stamp_ok(run, "hub")
    rg.write_record(run, "verify", "done", stamp=stamp)  # verify feeds the hub folder, not the analyses
    assert rg.stamp_ok(run, "algo") and not rg.stamp_ok(run, "hub")
    rg.write_record(run, "hub", "done", stamp=stamp)
    assert all(rg.stamp_ok(run, stage) for stage in rg.STAGES[1:])


def test_each_quanta_map_has_one_owner_stage(tmp_path):
    name = "add_d5_l1_h3_t30K_s372001"
    run = RunDir.of(tmp_path, name)
    run.path.mkdir()
    views = ("fail", "impact", "attention", "add", "sub", "neg", "algo")
    for view in views:
        for ext in (".svg", ".png"):
            (run.path / f"{name}_quanta_{view}{ext}").write_text(view)
    (run.path / f"{name}_quanta_algo.txt").write_text("not a map")
    assert {p.name for p in run.quanta_maps("algo")} == {f"{name}_quanta_algo.svg", f"{name}_quanta_algo.png"}
    assert len(run.quanta_maps("ablate")) == 12 and not any("algo" in p.name for p in run.quanta_maps("ablate"))
    assert len(run.quanta_maps()) == 14
    assert {rundir.quanta_owner(v) for v in views} == {"ablate", "algo"}


def test_dry_run_prints_every_model_its_stages_dependencies_and_where(tmp_path, capsys):
    assert main(["regenerate", "--scale", "full", "--cluster", "local", "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for name in PUBLISHED:
        assert f"\n{name}\n" in out
    assert "after: add_d6_l2_h3_t20K_s173289 (weights and behaviour file)" in out
    assert out.count("  train  local job (submitit)") == 53 and out.count("  hub    this process") == 53
    assert "# compute: " in out and "--rates FILE" in out  # the compute the plan takes
    bench_lines = tmp_path / "bench.jsonl"
    bench_lines.write_text('{"figure": "training_steps_d6", "value": 10.0, "unit": "steps/s"}\n')
    argv = ["regenerate", "--models", ADD, "--rates", str(bench_lines), "--dry-run"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "  train  local job (submitit), 15,000 steps, 0.42 h" in out  # 15,000 steps at 10 steps/s
    assert "verify local Dask cluster, 1,000,000 questions\n" in out  # no verification rate given
    assert not (tmp_path / "o").exists()
    assert main(["regenerate", "--cluster", "slurm", "--dry-run"]) == 2  # needs --profile
    assert "--profile" in capsys.readouterr().err
    profile = Path(__file__).resolve().parent.parent / "hpc" / "profiles"
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
    check_card(card, name, out)


def check_card(card: str, name: str, out: Path) -> None:
    """This model's verdict before the publisher's note (marked as the published model's), column titles in
    words, no reference to a document the reader cannot open, the whole reproduce command."""
    assert "upstream_spec" not in card and "spec 9" not in card
    verdict = card.index("## Verdict of this model")
    assert "random questions this model answered" in card[verdict:]
    if "## The published model's note" in card:
        note = card.index("## The published model's note")
        assert verdict < note and "the note describes that model, not this one" in card[note:]
    assert "| operation | questions tested | questions failed | accuracy | verdict |" in card
    assert "| operation | complexity class | questions tested | questions failed |" in card
    command = card.split("## Reproduce", 1)[1].split("```")[1].strip()
    words = command.split()
    assert words[:3] == ["varith", "regenerate", "--models"] and words[3] != "{name}"
    assert words[words.index("--out") + 1] == str(out) and words[words.index("--scale") + 1] == "tiny"
    assert "--cluster" in words


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

    # a damaged output is made again, and what reads it after it (the hub folder), nothing else
    RunDir.of(out / "runs", TINY_ADD).accuracy_json.write_text("{}")
    assert regenerate(out) == 0
    assert stage_lines(capsys.readouterr().out) == {TINY_ADD: ["verify", "hub"]}
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
    # submitit's local controller makes the folder it is given as is: no literal `%j` folder is left behind
    submitit = tmp_path / "runs" / ".submitit"
    assert submitit.is_dir() and not any("%" in p.name for p in submitit.rglob("*"))


# ------------------------------------------------------------------------------------------------ issue 19
# A behaviour file deleted or blanked, then the same regenerate again: ablate made it again and removed only its
# own maps; the algorithm search was redone after it (its stamp read the new behaviour file), its map kept; the
# hub folder and its card have the algorithm picture. 300 tiny steps: the model has nodes with an algorithm purpose.

ALGO_MODEL, ALGO_TINY = "add_d5_l1_h3_t30K_s372001", "add_d5_l1_h3_t300_s372001"
ALGO_ARGS = ("regenerate", "--models", ALGO_MODEL, "--scale", "tiny", "--cluster", "none", "--questions", "2000")


@pytest.fixture(scope="module")
def algo_work(tmp_path_factory) -> Path:
    """A working folder where `varith regenerate ... --out out` made the tiny add_d5_l1 model."""
    work = tmp_path_factory.mktemp("regen")
    proc = varith(*ALGO_ARGS, "--out", "out", cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return work


def ran_stages(text: str, name: str) -> list[str]:
    return [
        line.split(": ", 1)[1].split()[0] for line in text.splitlines() if f"] {name}: " in line and " started " in line
    ]


def algo_picture_everywhere(out: Path) -> None:
    run = RunDir.of(out / "runs", ALGO_TINY)
    algo_maps = {p.name for p in run.quanta_maps("algo")}
    assert algo_maps == {f"{ALGO_TINY}_quanta_algo.svg", f"{ALGO_TINY}_quanta_algo.png"}
    assert run.quanta_maps("ablate"), "the ablation maps are drawn too"
    folder = out / "hub" / ALGO_TINY
    assert algo_maps <= {p.name for p in folder.iterdir()}
    assert hub.manifest_problem(folder) is None
    card = (folder / "README.md").read_text()
    assert f"]({ALGO_TINY}_quanta_algo.png)" in card
    check_card(card, ALGO_TINY, Path("out"))
    stamps = rg.read_record(run)["stamps"]
    assert stamps["algo"][run.behavior_json.name] == sha256_file(run.behavior_json)
    assert stamps["algo"][f"{ALGO_TINY}_quanta_algo.png"] == sha256_file(run.path / f"{ALGO_TINY}_quanta_algo.png")


@pytest.mark.parametrize("damage", ["blank", "delete"])
def test_a_damaged_behaviour_file_redoes_ablate_then_algo_then_hub_and_keeps_the_algo_picture(
    algo_work, tmp_path, damage
):
    work = tmp_path / "work"
    shutil.copytree(algo_work, work, symlinks=True)
    out = work / "out"
    algo_picture_everywhere(out)
    run = RunDir.of(out / "runs", ALGO_TINY)
    behaviour = run.behavior_json.read_bytes()
    before = rg.read_record(run)["order"]
    if damage == "blank":
        run.behavior_json.write_bytes(b"")
    else:
        run.behavior_json.unlink()
    # the run name it printed is accepted back as --models
    args = [a if a != ALGO_MODEL else ALGO_TINY for a in ALGO_ARGS]
    proc = varith(*args, "--out", "out", cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ran_stages(proc.stdout, ALGO_TINY) == ["ablate", "algo", "hub"]
    assert "algo skipped" not in proc.stdout
    assert run.behavior_json.read_bytes() == behaviour
    algo_picture_everywhere(out)
    order = rg.read_record(run)["order"]
    assert order["ablate"] > before["hub"] and order["ablate"] < order["algo"] < order["hub"]
    # and once more: every stage checked and skipped
    proc = varith(*args, "--out", "out", cwd=work)
    assert proc.returncode == 0 and ran_stages(proc.stdout, ALGO_TINY) == []


def test_a_published_hub_folder_fetches_and_predicts_by_name(algo_work, tmp_path, monkeypatch):
    """publish to a local stand-in, fetch into the cache, then `predict --model NAME` finds it there."""
    folder = algo_work / "out" / "hub" / ALGO_TINY
    monkeypatch.setenv("VARITH_CACHE", str(tmp_path / "cache"))
    assert varith("publish", str(folder), "--repo", "me/tiny", "--hub", "hubs", cwd=tmp_path).returncode == 0
    proc = varith("fetch", ALGO_TINY, "--repo", "me/tiny", "--hub", "hubs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "cache" / ALGO_TINY / f"{ALGO_TINY}.pth").is_file()
    proc = varith("predict", "--model", ALGO_TINY, "12345+54321", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.split()) == 1 and len(proc.stdout.strip()) == 7  # the n+2 answer tokens
    other = "add_d5_l1_h3_t301_s372001"
    assert_one_line_error(varith("predict", "--model", other, "1+1", cwd=tmp_path), other, "varith fetch")
