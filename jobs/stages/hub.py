"""Hub folders and the Hub they are published to.

A hub folder holds one model's files flat, as published (`<name>.pth`, `<name>_train.json`,
`<name>_behavior.json`, `<name>_maths.json`, `<name>_accuracy.json`, the quanta maps), its model card
`README.md` and `manifest.json` (sha256 and size of every other file, package versions, seeds, command line).

Publishing goes through a small protocol, `Hub`: list a repository's files (with what is known of their
content), upload files, download one. `HfHub` speaks to the Hugging Face Hub through huggingface_hub (the token
comes from the environment or the user's saved login and is never printed or written); before its first request
it checks, once and without retries, that the Hub answers at all (`HubUnreachable` otherwise: one line, within
HF_HUB_ETAG_TIMEOUT seconds, instead of huggingface_hub's retries). `LocalFolderHub` keeps each repository as a
folder, for tests and for offline mirrors.

Repository ids follow the Hugging Face Hub's rule (`check_repo`). A fetched file is checked against the sha256
the repository's `manifest.json` gives it (and against what the Hub reports of it) before it enters the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
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


# one part of a repository id, as the Hugging Face Hub allows it (huggingface_hub.utils.validate_repo_id): 1 to
# 96 ASCII letters, digits, '-', '_', '.', starting and ending with a letter, digit or '_'
_REPO_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?")


def check_repo(repo: str) -> str:
    """`repo` when it is a Hugging Face Hub repository id OWNER/NAME; else one InputError line."""
    parts = repo.split("/") if isinstance(repo, str) else []
    ok = (
        len(parts) == 2
        and all(_REPO_PART.fullmatch(p) for p in parts)
        and "--" not in repo
        and ".." not in repo
        and not repo.endswith(".git")
    )
    if not ok:
        raise InputError(
            f"--repo {repo!r}: not a Hugging Face repository id: expected OWNER/NAME, each part 1 to 96 letters, "
            "digits, '-', '_' or '.' (no spaces), not starting or ending with '-' or '.', no '--' or '..', "
            "not ending in '.git'"
        )
    return repo


class HubUnreachable(InputError):
    """The Hub does not answer (no network, HF_HUB_OFFLINE, a closed port): one line, nothing retried."""


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _network_error(exc: BaseException) -> bool:
    """An error of the network or of the HTTP client itself (requests, httpx, ...), not of the Hub's answer."""
    package = type(exc).__module__.split(".")[0].rstrip("0123456789")
    return isinstance(exc, (ConnectionError, TimeoutError)) or package in ("requests", "httpx", "httpcore", "urllib3")


class HfHub:
    """The Hugging Face Hub (huggingface_hub). The token is whatever huggingface_hub finds (HF_TOKEN, or the
    saved login); it is never read, printed or written here. The endpoint is huggingface_hub's (HF_ENDPOINT).

    `probe`: before the first request, one request to the endpoint with a short timeout and no retries; when it
    gets no answer (or HF_HUB_OFFLINE is set) every call raises HubUnreachable. A request that fails later is
    one InputError line too (the Hub's HTTP status, or the network error), never a traceback."""

    def __init__(self, api=None, probe: bool = True):
        try:
            from huggingface_hub import HfApi, constants
        except ImportError:
            raise InputError("huggingface_hub is not installed (pip install huggingface_hub)") from None
        self.api = api if api is not None else HfApi()
        self.endpoint = str(getattr(self.api, "endpoint", None) or constants.ENDPOINT).rstrip("/")
        self.timeout = float(getattr(constants, "HF_HUB_ETAG_TIMEOUT", 10) or 10)
        self._reached = not probe

    def reach(self) -> None:
        """HubUnreachable unless the endpoint answers one request (any HTTP status) within `timeout` seconds."""
        if self._reached:
            return
        from huggingface_hub import constants

        offline = getattr(constants, "is_offline_mode", None)
        if (offline() if offline else getattr(constants, "HF_HUB_OFFLINE", False)) or os.environ.get(
            "HF_HUB_OFFLINE", ""
        ).upper() in ("1", "ON", "YES", "TRUE"):
            raise HubUnreachable(f"cannot reach the Hugging Face Hub: HF_HUB_OFFLINE is set ({self.endpoint})")
        from huggingface_hub.utils import get_session

        try:
            get_session().head(self.endpoint, timeout=self.timeout)
        except Exception as exc:  # any failure to get an answer: DNS, refused, timeout, TLS, proxy
            raise HubUnreachable(f"cannot reach the Hugging Face Hub at {self.endpoint} ({_first_line(exc)})") from None
        self._reached = True

    def _call(self, what: str, fn, *args, **kwargs):
        """fn(*args, **kwargs) after `reach`, its failures as one InputError line."""
        from huggingface_hub.errors import HfHubHTTPError

        self.reach()
        try:
            return fn(*args, **kwargs)
        except InputError:
            raise
        except HfHubHTTPError as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            hint = " (log in: huggingface-cli login, or set HF_TOKEN)" if status in (401, 403) else ""
            raise InputError(f"{what}: the Hugging Face Hub refused it (HTTP {status}){hint}") from None
        except Exception as exc:
            if _network_error(exc):  # after the probe answered: the network went, or a request timed out
                raise HubUnreachable(
                    f"{what}: lost the Hugging Face Hub at {self.endpoint} ({_first_line(exc)})"
                ) from None
            if isinstance(exc, (OSError, ValueError)):
                raise InputError(f"{what}: {_first_line(exc)}") from None
            raise

    def files(self, repo: str) -> dict[str, RemoteFile]:
        from huggingface_hub.errors import RepositoryNotFoundError

        check_repo(repo)

        def tree():
            try:
                return list(self.api.list_repo_tree(repo, recursive=True))
            except RepositoryNotFoundError:
                return []

        items = self._call(f"listing {repo}", tree)
        out = {}
        for item in items:
            if getattr(item, "size", None) is None:  # a folder
                continue
            lfs = getattr(item, "lfs", None)
            out[item.path] = RemoteFile(item.size, sha256=lfs.sha256 if lfs else None, git_sha1=item.blob_id)
        return out

    def upload(self, repo: str, folder: Path, names: Sequence[str], message: str) -> None:
        from huggingface_hub import CommitOperationAdd

        check_repo(repo)
        self._call(f"creating {repo}", self.api.create_repo, repo, exist_ok=True)
        ops = [CommitOperationAdd(path_in_repo=n, path_or_fileobj=str(Path(folder) / n)) for n in names]
        self._call(f"uploading to {repo}", self.api.create_commit, repo, ops, commit_message=message)

    def download(self, repo: str, name: str, dest: Path) -> Path:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

        check_repo(repo)

        def get():
            try:
                return Path(hf_hub_download(repo, name, local_dir=str(dest)))
            except (EntryNotFoundError, RepositoryNotFoundError):
                raise InputError(f"{repo}: no file {name}") from None

        return self._call(f"downloading {name} from {repo}", get)


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
    not_compared: str | None = None  # why the Hub's files could not be compared (then every file is in upload)


def publish_plan(hub: Hub, repo: str, folder: str | Path, dry_run: bool = False) -> PublishPlan:
    """What publishing a hub folder would upload; refused unless its manifest checks out. A dry run that cannot
    reach the Hub lists every file of the manifest, not compared (`not_compared` says why); a real one raises
    HubUnreachable."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    problem = manifest_problem(folder)
    if problem:
        raise InputError(f"not publishing: {problem}")
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    try:
        remote = hub.files(repo)
    except HubUnreachable as exc:
        if not dry_run:
            raise
        return PublishPlan(tuple(names), (), f"no network: {exc}")
    unchanged = tuple(n for n in names if n in remote and remote[n].same_as(folder / n))
    return PublishPlan(tuple(n for n in names if n not in unchanged), unchanged)


def publish(hub: Hub, repo: str, folder: str | Path, plan: PublishPlan) -> None:
    if plan.upload:
        hub.upload(repo, Path(folder), plan.upload, f"varith publish {Path(folder).name}")


FETCHED = ("weights", "train", "behavior", "maths", "accuracy")


def cache_dir(cache: str | Path | None = None) -> Path:
    """Where fetched models live: `cache` when given (`--cache`), else $VARITH_CACHE, else
    ~/.cache/verified-arithmetic."""
    if cache:
        return Path(cache)
    return Path(os.environ.get("VARITH_CACHE") or Path.home() / ".cache" / "verified-arithmetic")


def cached_model(name: str, cache: str | Path | None = None) -> Path:
    """The folder `fetch` puts model `name` in: `cache_dir(cache)/<name>/` (the one rule, for fetch and for
    whatever loads a model by name)."""
    return cache_dir(cache) / name


def model_weights(model: str | Path, cache: str | Path | None = None) -> Path:
    """The weights a `--model` argument means: the file when there is one; a bare model name (no folder part,
    `.pth` optional) that is no file here: its weights in the fetch cache (`cached_model`), one InputError line
    when they are not there; anything else as given (its loader names what is wrong)."""
    from arith.names import artifact_path, parse_name

    path = Path(model)
    if path.exists() or len(path.parts) != 1:
        return path
    name = path.name.removesuffix(".pth")
    try:
        parse_name(name)
    except InputError:
        return path
    cached = artifact_path(cached_model(name, cache), name, "weights")
    if cached.is_file():
        return cached
    raise InputError(
        f"--model {model}: no such file here, and {name} is not in the fetch cache ({cached.parent}); "
        f"varith fetch {name} puts it there"
    )


def _manifest_sha256(hub: Hub, repo: str, name: str, remote: Mapping[str, RemoteFile], staging: Path):
    """{file: sha256} of the repository's manifest.json when it is this model's; None when the repository has
    no manifest (a repository of several models, as published before manifests)."""
    info = remote.get(MANIFEST)
    if info is None:
        return None
    got = hub.download(repo, MANIFEST, staging)
    if not info.same_as(got):
        raise InputError(f"{repo}: {MANIFEST} is not what the Hub lists for it (size or checksum); nothing fetched")
    try:
        manifest = json.loads(got.read_text())
        model, files = manifest["model"], manifest["files"]
        shas = {f: e["sha256"] for f, e in files.items()} if model == name else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise InputError(f"{repo}: {MANIFEST} is unreadable; nothing fetched") from None
    return shas


def fetch(hub: Hub, repo: str, name: str, dest: Path, note=None) -> list[Path]:
    """Download `<name>.pth` and its JSON files that the repository holds into `dest/<name>/` (skipping those
    already there with the same content); the weights and train json must exist.

    Every file is checked before any enters the cache: against what the Hub lists for it (size, sha256 or git
    id), and against the sha256 the repository's `manifest.json` gives it when the manifest is this model's (a
    file the manifest lacks is refused too). Downloads land in a hidden staging folder beside the cache folder
    and are moved in only when all check out; on a mismatch: one InputError line, and the staging folder (with
    the bad file) is removed, the cache left as it was. `note(text)` hears of a repository without this model's
    manifest."""
    from arith.names import artifact_path, parse_name

    parse_name(name)
    remote = hub.files(repo)
    folder = Path(dest) / name
    staging = Path(dest) / f".{name}.fetching"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        expected = _manifest_sha256(hub, repo, name, remote, staging)
        if expected is None and note is not None:
            note(f"{repo} has no {MANIFEST} of {name}: its files are checked against the Hub's own checksums only")
        out, ready = [], []
        for kind in FETCHED:
            file = artifact_path(folder, name, kind)
            info = remote.get(file.name)
            if info is None:
                if kind in ("weights", "train"):
                    raise InputError(f"{repo}: no {file.name}")
                continue
            want = None
            if expected is not None:
                want = expected.get(file.name)
                if want is None:
                    raise InputError(f"{repo}: {file.name} is not in its {MANIFEST}; nothing fetched")
            out.append(file)
            if file.is_file() and info.same_as(file) and (want is None or sha256_file(file) == want):
                continue
            got = hub.download(repo, file.name, staging)
            if not info.same_as(got):
                raise InputError(
                    f"{repo}: {file.name} is not what the Hub lists for it (size or checksum); nothing fetched"
                )
            if want is not None and sha256_file(got) != want:
                if file.is_file() and sha256_file(file) != want:  # an older bad copy does not stay cached either
                    file.unlink()
                raise InputError(f"{repo}: {file.name} does not match its sha256 in {MANIFEST}; nothing fetched")
            ready.append((got, file))
        if ready:
            folder.mkdir(parents=True, exist_ok=True)
        for got, file in ready:
            os.replace(got, file)
        return out
    finally:
        shutil.rmtree(staging, ignore_errors=True)
