"""Hub folders, their manifest, and `varith publish` / `varith fetch` against a local folder standing in for the
Hub (no network)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from arith.errors import InputError
from hpc import hub
from jobs.cli import main

NAME = "add_d6_l2_h3_t15K_s372001"
FILES = {
    f"{NAME}.pth": b"weights",
    f"{NAME}_train.json": b'{"Config": {}}',
    f"{NAME}_behavior.json": b"[]",
    f"{NAME}_maths.json": b"[]",
    f"{NAME}_accuracy.json": b"{}",
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
    (folder / f"{NAME}.pth").write_bytes(b"other weights")
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
    assert (cache / NAME / f"{NAME}.pth").read_bytes() == b"weights"

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
            lfs = {"size": 7, "oid": hub.sha256_file(weights), "pointerSize": 130}
            return [
                RepoFolder(path="sub", oid="x"),
                RepoFile(path=weights.name, size=7, oid="ignored", lfs=lfs),
                RepoFile(path="README.md", size=card.stat().st_size, oid=hub.git_blob_sha1(card)),
            ]

        def create_repo(self, repo, exist_ok=False):
            assert exist_ok

        def create_commit(self, repo, operations, commit_message):
            self.commits.append((repo, [op.path_in_repo for op in operations], commit_message))

    hf = hub.HfHub.__new__(hub.HfHub)
    hf.api = FakeApi()
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
