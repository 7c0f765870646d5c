"""Hub folders, their manifest, and `varith publish` / `varith fetch` against a local folder standing in for the
Hub (no network); repository ids by the Hub's rule; publishing with no network (HF_ENDPOINT at a closed port);
a fetched file that does not match the manifest never enters the cache. Both Hub layouts from a tiny regenerated
run (flat and per model, and back), the save -> reload round trip publishing requires, only changed files
uploaded and the publish manifest, fetching either layout, and training_loss.json of every era."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from arith.errors import InputError
from jobs.cli import main
from jobs.stages import hub
from tests.conftest import assert_one_line_error, varith

NAME = "add_d6_l2_h3_t15K_s372001"


def state_dict_bytes(scale: float = 1.0) -> bytes:
    """A small state dict as torch.save writes it (what a published `.pth` holds)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save({"w": scale * torch.arange(6, dtype=torch.float32).reshape(2, 3)}, buf)
    return buf.getvalue()


# each file as the pipeline writes it, so it survives the save -> reload round trip that publishing requires
FILES = {
    f"{NAME}.pth": state_dict_bytes(),
    f"{NAME}_train.json": b'{"Config": {}}',
    f"{NAME}_behavior.json": b"[]",
    f"{NAME}_maths.json": b"[]",
    f"{NAME}_accuracy.json": b"{}\n",
    f"{NAME}_quanta_fail.png": b"png",
    "README.md": b"---\nlibrary_name: pytorch\n---\n# card\n",
}


def hub_folder(root: Path) -> Path:
    folder = root / "hub" / NAME
    folder.mkdir(parents=True)
    for name, data in FILES.items():
        (folder / name).write_bytes(data)
    hub.write_manifest(folder, NAME, {"training": 372001})
    return folder


def test_manifest_lists_every_file_and_notices_changes(tmp_path):
    folder = hub_folder(tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(manifest["files"]) == sorted(FILES)
    assert manifest["seeds"] == {"training": 372001} and "torch" in manifest["packages"]
    assert isinstance(manifest["command"], list)
    assert hub.manifest_problem(folder) is None
    (folder / f"{NAME}_maths.json").write_bytes(b"[{}]")
    assert "does not match" in hub.manifest_problem(folder)
    (folder / "extra.txt").write_text("x")
    assert "not in the manifest" in hub.manifest_problem(folder)


def test_publish_dry_run_lists_the_right_files(tmp_path, capsys):
    folder = hub_folder(tmp_path)
    stand_in = tmp_path / "fake-hub"
    args = ["publish", str(folder), "--repo", "someone/models", "--hub", str(stand_in)]
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    listed = sorted(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("would upload: "))
    assert listed == sorted([*FILES, "manifest.json"])
    assert not stand_in.exists()  # a dry run uploads nothing

    assert main(args) == 0
    capsys.readouterr()
    assert sorted(p.name for p in (stand_in / "someone" / "models").iterdir()) == listed

    # after a change, only the changed file and the manifest would go up again
    (folder / "README.md").write_text("---\nlibrary_name: pytorch\n---\n# better card\n")
    hub.write_manifest(folder, NAME, {"training": 372001})
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert sorted(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("would upload")) == [
        "README.md",
        "manifest.json",
    ]
    assert f"unchanged: {NAME}.pth" in out


def test_publish_refuses_a_folder_whose_manifest_does_not_check_out(tmp_path, capsys):
    folder = hub_folder(tmp_path)
    (folder / f"{NAME}.pth").write_bytes(state_dict_bytes(2.0))
    assert main(["publish", str(folder), "--repo", "a/b", "--hub", str(tmp_path / "h"), "--dry-run"]) == 2
    assert "not publishing" in capsys.readouterr().err
    assert main(["publish", str(folder), "--repo", "no-slash", "--hub", str(tmp_path / "h")]) == 2


def test_fetch_into_the_cache_then_offline(tmp_path, capsys, monkeypatch):
    folder = hub_folder(tmp_path)
    stand_in = hub.LocalFolderHub(tmp_path / "fake-hub")
    stand_in.upload("o/r", folder, [n for n in FILES if n != "README.md"], "test")
    cache = tmp_path / "cache"
    monkeypatch.setenv("VARITH_CACHE", str(cache))
    assert main(["fetch", NAME, "--repo", "o/r", "--hub", str(tmp_path / "fake-hub")]) == 0
    got = sorted(Path(line).name for line in capsys.readouterr().out.split())
    assert got == sorted(n for n in FILES if n.endswith((".pth", ".json")))
    assert (cache / NAME / f"{NAME}.pth").read_bytes() == FILES[f"{NAME}.pth"]

    # a second fetch downloads nothing that is there unchanged
    class Counting(hub.LocalFolderHub):
        downloads = 0

        def download(self, repo, name, dest):
            Counting.downloads += 1
            return super().download(repo, name, dest)

    hub.fetch(Counting(tmp_path / "fake-hub"), "o/r", NAME, cache)
    assert Counting.downloads == 0
    with pytest.raises(InputError, match="no add_d5"):
        hub.fetch(stand_in, "o/r", "add_d5_l1_h3_t30K_s372001", cache)


def test_remote_file_git_blob_id_matches_git(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("hello\n")
    try:
        expected = subprocess.run(["git", "hash-object", str(p)], capture_output=True, text=True).stdout.strip()
    except OSError:
        pytest.skip("no git")
    assert hub.git_blob_sha1(p) == expected
    assert hub.RemoteFile(6, git_sha1=expected).same_as(p)
    assert not hub.RemoteFile(6, git_sha1="0" * 40).same_as(p)


def test_hf_hub_reads_lfs_and_git_ids_and_commits_the_files(tmp_path):
    """HfHub against a stand-in for huggingface_hub's HfApi (no network, no token)."""
    from huggingface_hub.hf_api import RepoFile, RepoFolder

    folder = hub_folder(tmp_path)
    weights, card = folder / f"{NAME}.pth", folder / "README.md"

    class FakeApi:
        commits: list = []

        def list_repo_tree(self, repo, recursive=False):
            assert recursive
            size = weights.stat().st_size
            lfs = {"size": size, "oid": hub.sha256_file(weights), "pointerSize": 130}
            return [
                RepoFolder(path="sub", oid="x"),
                RepoFile(path=weights.name, size=size, oid="ignored", lfs=lfs),
                RepoFile(path="README.md", size=card.stat().st_size, oid=hub.git_blob_sha1(card)),
            ]

        def create_repo(self, repo, exist_ok=False):
            assert exist_ok

        def create_commit(self, repo, operations, commit_message):
            self.commits.append((repo, [op.path_in_repo for op in operations], commit_message))

    hf = hub.HfHub(api=FakeApi(), probe=False)
    plan = hub.publish_plan(hf, "o/r", folder)
    assert set(plan.unchanged) == {weights.name, "README.md"}
    assert set(plan.upload) == set(FILES) - set(plan.unchanged) | {"manifest.json"}
    hub.publish(hf, "o/r", folder, plan)
    assert FakeApi.commits == [("o/r", list(plan.upload), f"varith publish {NAME}")]


def test_fetch_without_the_hub_uses_the_cache(tmp_path, capsys, monkeypatch):
    class Offline(hub.LocalFolderHub):
        def files(self, repo):
            raise ConnectionError("no network")

    monkeypatch.setattr(hub, "hub_for", lambda spec: Offline(tmp_path))
    cache = tmp_path / "cache"
    assert main(["fetch", NAME, "--cache", str(cache)]) == 2
    assert "is not cached" in capsys.readouterr().err
    (cache / NAME).mkdir(parents=True)
    (cache / NAME / f"{NAME}.pth").write_bytes(b"w")
    assert main(["fetch", NAME, "--cache", str(cache)]) == 0
    captured = capsys.readouterr()
    assert "using the cached copy" in captured.err and captured.out.strip().endswith(f"{NAME}.pth")


CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens there, a connection is refused at once


def no_network(monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", CLOSED)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_publish_without_a_network(tmp_path, monkeypatch):
    """A dry run needs no network: every file of the manifest, marked not compared; a real upload is one line."""
    no_network(monkeypatch)
    hub_folder(tmp_path)
    folder = Path("hub") / NAME
    proc = varith("publish", str(folder), "--repo", "me/tiny", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "Retrying" not in proc.stderr
    listed = sorted(line.split(": ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("would upload: "))
    manifest = json.loads((tmp_path / folder / "manifest.json").read_text())
    assert listed == sorted([*manifest["files"], "manifest.json"])
    assert "not compared: no network" in proc.stdout and CLOSED in proc.stdout

    proc = varith("publish", str(folder), "--repo", "me/tiny", cwd=tmp_path)
    assert_one_line_error(proc, "cannot reach the Hugging Face Hub", CLOSED, "nothing uploaded")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_one_line_error(varith("publish", str(folder), "--repo", "me/tiny", cwd=tmp_path), "HF_HUB_OFFLINE")


def test_fetch_without_a_network_is_one_line(tmp_path, monkeypatch):
    no_network(monkeypatch)
    proc = varith("fetch", NAME, "--repo", "me/tiny", "--cache", "cache", cwd=tmp_path)
    assert_one_line_error(proc, "cannot reach the Hugging Face Hub", CLOSED, "is not cached")


@pytest.mark.parametrize(
    "repo",
    ["me/ti ny", "no-slash", "a/b/c", "me/.x", "me/x-", "me/a--b", "me/a..b", "me/x.git", "/x", "me/" + "n" * 97],
)
def test_a_repo_id_the_hub_would_refuse_is_one_line_before_anything(tmp_path, repo):
    """Checked first: the folder does not even exist, and no request is made."""
    proc = varith("publish", "missing", "--repo", repo, "--dry-run", cwd=tmp_path)
    assert_one_line_error(proc, "not a Hugging Face repository id", repr(repo))
    assert_one_line_error(varith("fetch", NAME, "--repo", repo, "--hub", ".", cwd=tmp_path), repr(repo))
    assert list(tmp_path.iterdir()) == []


def test_valid_repo_ids_pass():
    for repo in ("me/tiny", "PhilipQuirke/VerifiedArithmetic", "a_b/c.d-e", "0/1", "me/" + "n" * 96):
        assert hub.check_repo(repo) == repo


def test_fetch_refuses_a_file_that_does_not_match_the_manifest_and_caches_nothing(tmp_path):
    hub_folder(tmp_path)
    assert varith("publish", f"hub/{NAME}", "--repo", "me/tiny", "--hub", "stand-in", cwd=tmp_path).returncode == 0
    served = tmp_path / "stand-in" / "me" / "tiny"
    (served / f"{NAME}_maths.json").write_bytes(b'[{"tampered": 1}]')
    args = ("fetch", NAME, "--repo", "me/tiny", "--hub", "stand-in", "--cache", "cache")
    assert_one_line_error(varith(*args, cwd=tmp_path), f"{NAME}_maths.json", "does not match its sha256", "manifest")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]  # no file of it, no staging left

    # a good fetch, then the Hub's copy tampered: the cached copy is not replaced by the bad one
    (served / f"{NAME}_maths.json").write_bytes(FILES[f"{NAME}_maths.json"])
    proc = varith(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cached = tmp_path / "cache" / NAME
    assert sorted(p.name for p in cached.iterdir()) == sorted(n for n in FILES if n.endswith((".pth", ".json")))
    (served / f"{NAME}.pth").write_bytes(b"other weights")
    assert_one_line_error(varith(*args, cwd=tmp_path), f"{NAME}.pth", "does not match its sha256")
    assert (cached / f"{NAME}.pth").read_bytes() == FILES[f"{NAME}.pth"]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [NAME]

    # a file the manifest does not list is refused too
    (served / f"{NAME}.pth").write_bytes(FILES[f"{NAME}.pth"])
    manifest = json.loads((served / "manifest.json").read_text())
    del manifest["files"][f"{NAME}_accuracy.json"]
    (served / "manifest.json").write_text(json.dumps(manifest))
    assert_one_line_error(varith(*args, cwd=tmp_path), f"{NAME}_accuracy.json", "not in its manifest.json")


# ------------------------------------------------------------------------------------------------ both layouts

TINY = "add_d5_l1_h3_t300_s372001"  # what `regenerate --scale tiny` makes of add_d5_l1_h3_t30K_s372001
TINY_ARGS = ("regenerate", "--models", "add_d5_l1_h3_t30K_s372001", "--scale", "tiny", "--cluster", "none")


def tiny_regeneration(tmp_path_factory) -> Path:
    """A regeneration output folder (`out/runs/<TINY>`, `out/hub/<TINY>`) of the tiny add_d5_l1 model, made once
    per test session (about 10 s) and shared by the hub and zoo tests; treat it as read-only."""
    work = tmp_path_factory.getbasetemp() / "tiny-regeneration"
    out = work / "out"
    if not (out / "hub" / TINY / "manifest.json").is_file():
        work.mkdir(exist_ok=True)
        proc = varith(*TINY_ARGS, "--questions", "2000", "--out", "out", cwd=work)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.fixture(scope="module")
def tiny_out(tmp_path_factory) -> Path:
    return tiny_regeneration(tmp_path_factory)


def both_layouts(out: Path, hub_dir: Path) -> tuple[Path, Path]:
    """The flat and per-model hub folders of the tiny run, with the regenerated card."""
    card = (out / "hub" / TINY / "README.md").read_text()
    flat, per_model = hub.build_folders(out / "runs" / TINY, hub_dir, "both", card=card)
    return flat, per_model


PER_MODEL_NAMES = {
    "weights": "model.pth",
    "train": "training_loss.json",
    "behavior": "behaviors.json",
    "maths": "features.json",
    "accuracy": "accuracy.json",
}


def test_both_layouts_from_a_run_and_back(tiny_out, tmp_path):
    from analysis.zoo import FLAT, PER_MODEL, layout_of
    from arith.names import artifact_path

    run = tiny_out / "runs" / TINY
    flat, per_model = both_layouts(tiny_out, tmp_path / "hub")
    assert (flat.name, per_model.name) == (TINY, f"QuantaMaths_{TINY}")
    assert (layout_of(flat), layout_of(per_model)) == (FLAT, PER_MODEL)
    # flat: the run's files as they are, as regenerate's hub folder
    assert sorted(p.name for p in flat.iterdir()) == sorted(p.name for p in (tiny_out / "hub" / TINY).iterdir())
    # per model: the same bytes under the per-model names (our behaviour and maths files keep the split)
    for kind, name in PER_MODEL_NAMES.items():
        assert (per_model / name).read_bytes() == artifact_path(run, TINY, kind).read_bytes(), kind
    pictures = sorted(p.name.removeprefix(f"{TINY}_") for p in run.glob(f"{TINY}_quanta_*"))
    assert pictures and all((per_model / pic).is_file() for pic in pictures)
    assert not [p.name for p in per_model.iterdir() if TINY in p.name]
    card = (per_model / "README.md").read_text()
    assert f"{TINY}_" not in card.replace(f"OUT/runs/{TINY}/", "")  # every file named by its per-model name
    assert "(quanta_algo.png)" in card and "`behaviors.json`" in card and "`features.json`" in card
    for folder, layout in ((flat, FLAT), (per_model, PER_MODEL)):
        assert hub.manifest_problem(folder) is None
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["layout"] == layout and manifest["model"] == TINY
        assert manifest["seeds"]["training"] == 372001 and "verification" in manifest["seeds"]
        assert hub.round_trip(folder).ok, hub.round_trip(folder).problems

    # per model -> flat gives the flat folder back, card included (the manifest's time aside)
    back = hub.build_folder(per_model, tmp_path / "back" / TINY, "flat")
    for p in flat.iterdir():
        if p.name != "manifest.json":
            assert (back / p.name).read_bytes() == p.read_bytes(), p.name
    assert sorted(p.name for p in back.iterdir()) == sorted(p.name for p in flat.iterdir())

    # up to date (what regenerate's hub stage checks, in either layout), until a file changes
    assert hub.folder_matches(run, flat, "flat") and hub.folder_matches(run, per_model, "per-model")
    assert hub.folder_matches(tiny_out / "hub" / TINY, per_model, "per-model")
    assert not hub.folder_matches(run, per_model, "flat")
    (per_model / "features.json").write_text("[]")
    hub.write_manifest(per_model, TINY, {"training": 372001}, layout="per-model")
    assert not hub.folder_matches(run, per_model, "per-model")
    with pytest.raises(InputError, match="--layout sideways"):
        hub.build_folders(run, tmp_path / "x", "sideways")


def test_a_legacy_maths_file_is_split_into_behaviors_and_features():
    from analysis.zoo import split_records

    behavior = [{"position": 9, "layer": 0, "is_head": True, "num": 0, "tags": ["Fail%:3", "Impact:A765"]}]
    maths = [  # the reference saved every tag in the maths file
        {"position": 9, "layer": 0, "is_head": True, "num": 0, "tags": ["Fail%:3", "Impact:A765", "Algo:A5.SA"]},
        {"position": 10, "layer": 1, "is_head": False, "num": 0, "tags": ["Fail%:1"]},
    ]
    behaviors, features = split_records(behavior, maths)
    assert [r["tags"] for r in behaviors] == [["Fail%:3", "Impact:A765"], ["Fail%:1"]]
    assert [r["tags"] for r in features] == [["Algo:A5.SA"], []]  # every useful node, also untagged ones
    assert [(r["position"], r["is_head"]) for r in features] == [(9, True), (10, False)]


def publish_lines(out: str) -> dict[str, list[str]]:
    got: dict[str, list[str]] = {}
    for line in out.splitlines():
        if ": " in line and line.split(": ", 1)[0] in ("upload", "would upload", "unchanged"):
            verb, name = line.split(": ", 1)
            got.setdefault(verb, []).append(name)
    return {k: sorted(v) for k, v in got.items()}


def test_publish_either_layout_uploads_only_changed_files_and_records_it(tiny_out, tmp_path, capsys):
    flat, per_model = both_layouts(tiny_out, tmp_path / "hub")
    stand_in, record = tmp_path / "stand-in", tmp_path / "published.json"
    common = ["--hub", str(stand_in), "--record", str(record)]
    # one call, both folders: the flat one to --repo, the per-model one to OWNER/QuantaMaths_<name>
    assert main(["publish", str(tmp_path / "hub"), "--repo", "me/zoo", *common, "--dry-run"]) == 0
    assert not stand_in.exists()
    entries = {e["layout"]: e for e in json.loads(record.read_text())["models"]}
    assert entries["flat"]["repo"] == "me/zoo" and entries["per-model"]["repo"] == f"me/QuantaMaths_{TINY}"
    for e, folder in ((entries["flat"], flat), (entries["per-model"], per_model)):
        assert e["model"] == TINY and e["round_trip"] is True and e["dry_run"] is True and e["error"] is None
        assert sorted(e["changed"]) == sorted(p.name for p in folder.iterdir()) and e["uploaded"] == []
    capsys.readouterr()

    assert main(["publish", str(tmp_path / "hub"), "--repo", "me/zoo", *common]) == 0
    out = capsys.readouterr().out
    assert f"== {per_model} -> me/QuantaMaths_{TINY} (per-model)" in out
    served = stand_in / "me" / f"QuantaMaths_{TINY}"
    assert sorted(p.name for p in served.iterdir()) == sorted(p.name for p in per_model.iterdir())
    assert sorted(p.name for p in (stand_in / "me" / "zoo").iterdir()) == sorted(p.name for p in flat.iterdir())

    # the card changes: only it and the manifest go up again, and the record says so
    (per_model / "README.md").write_text((per_model / "README.md").read_text() + "\nA better card.\n")
    hub.write_manifest(per_model, TINY, {"training": 372001}, layout="per-model")
    assert main(["publish", str(per_model), "--repo", f"me/QuantaMaths_{TINY}", *common]) == 0
    assert publish_lines(capsys.readouterr().out)["upload"] == ["README.md", "manifest.json"]
    (entry,) = [e for e in json.loads(record.read_text())["models"] if e["folder"] == str(per_model)]
    assert entry["uploaded"] == entry["changed"] == ["README.md", "manifest.json"]
    assert "model.pth" in entry["unchanged"] and entry["round_trip"] is True
    assert (served / "README.md").read_bytes() == (per_model / "README.md").read_bytes()


def test_a_file_that_does_not_survive_the_round_trip_is_not_published(tiny_out, tmp_path):
    _, per_model = both_layouts(tiny_out, tmp_path / "hub")
    accuracy = per_model / "accuracy.json"
    accuracy.write_text(json.dumps(json.loads(accuracy.read_text()), indent=2))  # not as the pipeline writes it
    hub.write_manifest(per_model, TINY, {"training": 372001}, layout="per-model")
    trip = hub.round_trip(per_model)
    assert not trip.ok and trip.problems[0].startswith("accuracy.json: a save -> reload round trip")
    proc = varith("publish", str(per_model), "--owner", "me", "--hub", "stand-in", "--record", "r.json", cwd=tmp_path)
    assert_one_line_error(proc, "not publishing", "accuracy.json", "round trip")
    assert not (tmp_path / "stand-in").exists()
    (entry,) = json.loads((tmp_path / "r.json").read_text())["models"]
    assert entry["round_trip"] is False and entry["uploaded"] == [] and "accuracy.json" in entry["error"]
    assert entry["repo"] == f"me/QuantaMaths_{TINY}" and entry["round_trip_problems"]

    # a damaged JSON file is refused the same way, by its checked reader
    (per_model / "behaviors.json").write_text("[{not json")
    hub.write_manifest(per_model, TINY, {"training": 372001}, layout="per-model")
    assert any(p.startswith("behaviors.json: ") for p in hub.round_trip(per_model).problems)


def test_publish_bad_folders_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(varith("publish", "empty", "--repo", "me/x", cwd=tmp_path), "empty", "no model's files")
    hub_folder(tmp_path)
    assert_one_line_error(varith("publish", f"hub/{NAME}", cwd=tmp_path), "a flat hub folder needs --repo")


def test_fetch_either_layout_into_the_same_cache_files(tiny_out, tmp_path, capsys):
    from arith.names import artifact_path

    flat, per_model = both_layouts(tiny_out, tmp_path / "hub")
    stand_in = hub.LocalFolderHub(tmp_path / "stand-in")
    stand_in.upload("me/zoo", flat, [p.name for p in flat.iterdir()], "flat")
    stand_in.upload(f"me/QuantaMaths_{TINY}", per_model, [p.name for p in per_model.iterdir()], "per model")
    got = {}
    for repo in ("me/zoo", f"me/QuantaMaths_{TINY}"):
        cache = tmp_path / f"cache-{repo.split('/')[1]}"
        paths = hub.fetch(stand_in, repo, TINY, cache)
        got[repo] = {p.name: p.read_bytes() for p in paths}
        run = tiny_out / "runs" / TINY
        assert got[repo] == {
            artifact_path(run, TINY, k).name: artifact_path(run, TINY, k).read_bytes() for k in hub.FETCHED
        }
    # without --repo, the flat default repository first, then the per-model one (here only the latter has it)
    stand_in.upload("PhilipQuirke/VerifiedArithmetic", hub_folder(tmp_path), list(FILES), "another model")
    stand_in.upload(f"PhilipQuirke/QuantaMaths_{TINY}", per_model, [p.name for p in per_model.iterdir()], "pm")
    args = ["fetch", TINY, "--hub", str(tmp_path / "stand-in"), "--cache", str(tmp_path / "c")]
    assert main(args) == 0
    assert {Path(line).name for line in capsys.readouterr().out.split()} == set(got["me/zoo"])
    assert main([*args, "--layout", "flat"]) == 2
    assert f"no {TINY}.pth (flat) nor model.pth" in capsys.readouterr().err
    # a per-model repository whose manifest is of another model is refused
    with pytest.raises(InputError, match="not add_d5_l1_h3_t301_s372001"):
        hub.fetch(stand_in, f"me/QuantaMaths_{TINY}", "add_d5_l1_h3_t301_s372001", tmp_path / "c2")


# training_loss.json as each era wrote it (upstream spec 5.3, 14.1)
HISTORIC = {
    "Config": {"n_layers": 1, "n_heads": 3, "d_vocab": 15, "d_mlp": 2040, "d_head": 170, "n_digits": 5, "n_ctx": 18},
    "AvgFinalLoss": 0.0125,
    "FinalLoss": 0.011,
    "TrainingLoss": [2.5, 1.0, 0.011],
}
MID_2024 = {
    "Config": {"model_name": NAME, "n_layers": 1, "n_heads": 3, "d_model": 510, "n_digits": 5, "avg_final_loss": 0},
    "AvgFinalLoss": 0.02,
    "FinalLoss": 0.0,  # 0: the Config's value stays
    "TrainingLoss": [1.0, 0.5],
}
CURRENT = {"Config": {"model_name": NAME, "n_layers": 1, "n_heads": 3, "n_digits": 5, "final_loss": 0.3}}


@pytest.mark.parametrize("era", ["historic", "mid-2024", "current"])
def test_training_loss_json_of_every_era_reads_and_fetches(tmp_path, era):
    from arith.weights import read_train_json, shape_from_config

    data = {"historic": HISTORIC, "mid-2024": MID_2024, "current": CURRENT}[era]
    repo = tmp_path / "stand-in" / "me" / f"QuantaMaths_{NAME}"
    repo.mkdir(parents=True)
    (repo / "model.pth").write_bytes(state_dict_bytes())
    (repo / "training_loss.json").write_text(json.dumps(data))
    stand_in = hub.LocalFolderHub(tmp_path / "stand-in")
    notes = []
    paths = hub.fetch(stand_in, f"me/QuantaMaths_{NAME}", NAME, tmp_path / "cache", note=notes.append)
    assert [p.name for p in paths] == [f"{NAME}.pth", f"{NAME}_train.json"] and "no manifest.json" in notes[0]
    train = tmp_path / "cache" / NAME / f"{NAME}_train.json"
    assert read_train_json(train) == data  # as the file holds it
    config = read_train_json(repo / "training_loss.json", name=NAME, complete=True)["Config"]
    assert config["d_model"] == 510 and shape_from_config(config).d_model == 510
    assert config["model_name"] == NAME
    if era == "historic":
        assert (config["avg_final_loss"], config["final_loss"]) == (0.0125, 0.011)
    if era == "mid-2024":
        assert config["avg_final_loss"] == 0.02 and "final_loss" not in config
    assert read_train_json(train, complete=True)["Config"]["model_name"] == NAME  # from the file's name


@pytest.mark.parametrize(
    "text, problem",
    [
        ("{", "unreadable"),
        ('{"Config": []}', "'Config' object"),
        ('{"Config": {}, "TrainingLoss": "x"}', "'TrainingLoss' is not a list of numbers"),
        ('{"Config": {}, "AvgFinalLoss": "low"}', "'AvgFinalLoss' is not a number"),
        ('{"Config": {"model_name": "add_d5_l1_h3_t15K_s372001"}}', "is of add_d5_l1_h3_t15K_s372001, not"),
    ],
)
def test_a_damaged_training_loss_json_is_one_line_and_nothing_is_cached(tmp_path, text, problem):
    repo = tmp_path / "stand-in" / "me" / f"QuantaMaths_{NAME}"
    repo.mkdir(parents=True)
    (repo / "model.pth").write_bytes(state_dict_bytes())
    (repo / "training_loss.json").write_text(text)
    hub.write_manifest(repo, NAME, {"training": 372001}, layout="per-model")
    args = ("fetch", NAME, "--repo", f"me/QuantaMaths_{NAME}", "--hub", "stand-in", "--cache", "cache")
    assert_one_line_error(varith(*args, cwd=tmp_path), "training_loss.json", problem, "nothing fetched")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
