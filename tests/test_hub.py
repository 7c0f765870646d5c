"""Hub folders, their manifest, and `varith publish` / `varith fetch` against a local folder standing in for the
Hub (no network); repository ids by the Hub's rule; publishing with no network (HF_ENDPOINT at a closed port);
a fetched file that does not match the manifest never enters the cache."""

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
