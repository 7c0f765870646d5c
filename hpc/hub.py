"""Hub folders and the Hub they are published to.

A hub folder holds one model's files flat, as published (`<name>.pth`, `<name>_train.json`,
`<name>_behavior.json`, `<name>_maths.json`, `<name>_accuracy.json`, the quanta maps), its model card
`README.md` and `manifest.json` (sha256 and size of every other file, package versions, seeds, command line).

Publishing goes through a small protocol, `Hub`: list a repository's files (with what is known of their
content), upload files, download one. `HfHub` speaks to the Hugging Face Hub through huggingface_hub (the token
comes from the environment or the user's saved login and is never printed or written); `LocalFolderHub` keeps
each repository as a folder, for tests and for offline mirrors.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from arith.errors import InputError
from arith.files import atomic_write_json, sha256_file

MANIFEST = "manifest.json"
CARD = "README.md"
DEFAULT_REPO = "PhilipQuirke/VerifiedArithmetic"
PACKAGES = ("torch", "numpy", "accelerate", "submitit", "dask", "zarr", "huggingface_hub", "verified-arithmetic")


# ------------------------------------------------------------------------------------------------ manifest


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def file_entry(path: Path) -> dict:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def write_manifest(folder: str | Path, model: str, seeds: Mapping[str, int], **meta) -> dict:
    """`manifest.json` of a hub folder: every other file's sha256 and size, package versions, seeds, the
    command line and `meta`."""
    folder = Path(folder)
    files = {p.name: file_entry(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    manifest = {
        "model": model,
        "files": files,
        "seeds": dict(seeds),
        "packages": package_versions(),
        "command": list(sys.argv),
        "created_at": time.time(),
    } | meta
    atomic_write_json(folder / MANIFEST, manifest, indent=1)
    return manifest


def manifest_problem(folder: str | Path) -> str | None:
    """None when the folder's manifest lists exactly its other files and each matches; else one line."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{folder / MANIFEST}: missing or unreadable"
    present = {p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST}
    if set(files) != present:
        extra, missing = sorted(present - set(files)), sorted(set(files) - present)
        return f"{folder}: files {extra} not in the manifest, {missing} missing"
    for name, info in files.items():
        if not isinstance(info, dict) or info.get("sha256") != sha256_file(folder / name):
            return f"{folder / name} does not match its sha256 in the manifest"
    return None


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file (what the Hub reports for files not kept in LFS)."""
    h = hashlib.sha1()
    h.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ the Hub


@dataclass(frozen=True)
class RemoteFile:
    """What a Hub says of one file: its size and its sha256 (LFS files) or git blob id (small files)."""

    size: int
    sha256: str | None = None
    git_sha1: str | None = None

    def same_as(self, path: Path) -> bool:
        if self.size != path.stat().st_size:
            return False
        if self.sha256 is not None:
            return self.sha256 == sha256_file(path)
        if self.git_sha1 is not None:
            return self.git_sha1 == git_blob_sha1(path)
        return False


class Hub(Protocol):
    def files(self, repo: str) -> dict[str, RemoteFile]:
        """The repository's files ({} when it does not exist yet)."""

    def upload(self, repo: str, folder: Path, names: Sequence[str], message: str) -> None:
        """Put `folder/<name>` for each name at the repository's top level, in one commit."""

    def download(self, repo: str, name: str, dest: Path) -> Path:
        """Copy one file of the repository to `dest/<name>`; returns that path."""


def check_repo(repo: str) -> str:
    parts = repo.split("/")
    if len(parts) != 2 or not all(parts) or any(p in (".", "..") for p in parts):
        raise InputError(f"--repo {repo!r}: expected OWNER/NAME")
    return repo


@dataclass(frozen=True)
class LocalFolderHub:
    """Each repository is the folder `root/OWNER/NAME`; files lie flat in it."""

    root: Path

    def _dir(self, repo: str) -> Path:
        return Path(self.root) / check_repo(repo)

    def files(self, repo: str) -> dict[str, RemoteFile]:
        d = self._dir(repo)
        if not d.is_dir():
            return {}
        return {p.name: RemoteFile(p.stat().st_size, sha256=sha256_file(p)) for p in sorted(d.iterdir()) if p.is_file()}

    def upload(self, repo: str, folder: Path, names: Sequence[str], message: str) -> None:
        d = self._dir(repo)
        d.mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copyfile(Path(folder) / name, d / name)

    def download(self, repo: str, name: str, dest: Path) -> Path:
        src = self._dir(repo) / name
        if not src.is_file():
            raise InputError(f"{repo}: no file {name}")
        Path(dest).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, Path(dest) / name)
        return Path(dest) / name


class HfHub:
    """The Hugging Face Hub (huggingface_hub). The token is whatever huggingface_hub finds (HF_TOKEN, or the
    saved login); it is never read, printed or written here."""

    def __init__(self):
        try:
            from huggingface_hub import HfApi
        except ImportError:
            raise InputError("huggingface_hub is not installed (pip install huggingface_hub)") from None
        self.api = HfApi()

    def files(self, repo: str) -> dict[str, RemoteFile]:
        from huggingface_hub.errors import RepositoryNotFoundError

        try:
            items = list(self.api.list_repo_tree(check_repo(repo), recursive=True))
        except RepositoryNotFoundError:
            return {}
        out = {}
        for item in items:
            if getattr(item, "size", None) is None:  # a folder
                continue
            lfs = getattr(item, "lfs", None)
            out[item.path] = RemoteFile(item.size, sha256=lfs.sha256 if lfs else None, git_sha1=item.blob_id)
        return out

    def upload(self, repo: str, folder: Path, names: Sequence[str], message: str) -> None:
        from huggingface_hub import CommitOperationAdd

        self.api.create_repo(check_repo(repo), exist_ok=True)
        ops = [CommitOperationAdd(path_in_repo=n, path_or_fileobj=str(Path(folder) / n)) for n in names]
        self.api.create_commit(repo, ops, commit_message=message)

    def download(self, repo: str, name: str, dest: Path) -> Path:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

        try:
            return Path(hf_hub_download(check_repo(repo), name, local_dir=str(dest)))
        except (EntryNotFoundError, RepositoryNotFoundError):
            raise InputError(f"{repo}: no file {name}") from None


def hub_for(spec: str | None) -> Hub:
    """`None`/`hf`: the Hugging Face Hub; a folder path: a LocalFolderHub there."""
    if spec in (None, "", "hf"):
        return HfHub()
    return LocalFolderHub(Path(spec))


# ------------------------------------------------------------------------------------------------ publish / fetch


@dataclass(frozen=True)
class PublishPlan:
    upload: tuple[str, ...]  # new or changed
    unchanged: tuple[str, ...]


def publish_plan(hub: Hub, repo: str, folder: str | Path) -> PublishPlan:
    """What publishing a hub folder would upload; refused unless its manifest checks out."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    problem = manifest_problem(folder)
    if problem:
        raise InputError(f"not publishing: {problem}")
    remote = hub.files(repo)
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    unchanged = tuple(n for n in names if n in remote and remote[n].same_as(folder / n))
    return PublishPlan(tuple(n for n in names if n not in unchanged), unchanged)


def publish(hub: Hub, repo: str, folder: str | Path, plan: PublishPlan) -> None:
    if plan.upload:
        hub.upload(repo, Path(folder), plan.upload, f"varith publish {Path(folder).name}")


FETCHED = ("weights", "train", "behavior", "maths", "accuracy")


def cache_dir() -> Path:
    """Where fetched models live: $VARITH_CACHE, else ~/.cache/verified-arithmetic."""
    import os

    return Path(os.environ.get("VARITH_CACHE") or Path.home() / ".cache" / "verified-arithmetic")


def fetch(hub: Hub, repo: str, name: str, dest: Path) -> list[Path]:
    """Download `<name>.pth` and its JSON files that the repository holds into `dest/<name>/` (skipping those
    already there with the same content); the weights and train json must exist."""
    from arith.names import artifact_path, parse_name

    parse_name(name)
    remote = hub.files(repo)
    folder = Path(dest) / name
    out = []
    for kind in FETCHED:
        file = artifact_path(folder, name, kind)
        info = remote.get(file.name)
        if info is None:
            if kind in ("weights", "train"):
                raise InputError(f"{repo}: no {file.name}")
            continue
        if not (file.is_file() and info.same_as(file)):
            hub.download(repo, file.name, folder)
        out.append(file)
    return out
