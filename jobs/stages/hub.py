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

Two layouts (analysis.zoo: the flat legacy one, `<name>.pth`, `<name>_train.json`, ...; and the per-model one,
repository `QuantaMaths_<name>` with `model.pth`, `training_loss.json`, `behaviors.json`, `features.json`):
`build_folder` makes a hub folder of either from a run's artifacts (or converts a hub folder of the other layout);
publishing detects a folder's layout; fetching reads a repository of either into the cache, under the flat names
every command loads by. A folder is uploaded only when every file survives a save -> reload round trip with
identical bytes (`round_trip`), and only the files that changed; `publish_folder` returns the record of it that
the publish manifest keeps.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from arith.errors import InputError
from arith.files import atomic_write_json, sha256_file
from arith.manifest import MANIFEST, file_entry, files_problem, provenance

CARD = "README.md"
DEFAULT_REPO = "PhilipQuirke/VerifiedArithmetic"


# ------------------------------------------------------------------------------------------------ manifest


def write_manifest(folder: str | Path, model: str, seeds: Mapping[str, int], **meta) -> dict:
    """`manifest.json` of a hub folder: every other file's sha256 and size, package versions, seeds, the
    command line and `meta`."""
    folder = Path(folder)
    files = {p.name: file_entry(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    manifest = {"model": model, "files": files, "seeds": dict(seeds)} | provenance() | meta
    atomic_write_json(folder / MANIFEST, manifest, indent=1)
    return manifest


def manifest_problem(folder: str | Path) -> str | None:
    """None when the folder's manifest lists exactly its other files and each matches; else one line."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return f"{folder / MANIFEST}: missing or unreadable"
    problem = files_problem(folder, manifest, exact=True)
    return None if problem is None else (problem if problem.startswith(str(folder)) else f"{folder}: {problem}")


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


# ------------------------------------------------------------------------------------------------ building


def source_files(src: str | Path, model: str | None = None):
    """The files of one model (analysis.zoo.ModelFiles) in a run folder or a hub folder of either layout; one
    InputError line when the folder holds no model, several and `model` names none of them, or lacks the
    weights or the train json."""
    from analysis.zoo import models_in

    src = Path(src)
    if not src.is_dir():
        raise InputError(f"{src}: no such folder")
    found = models_in(src)
    if model is not None:
        found = [m for m in found if m.model == model]
    if len(found) != 1:
        what = f"no files of {model}" if model else ("no model's files" if not found else "several models' files")
        raise InputError(f"{src}: {what}; expected one model's run or hub folder")
    mf = found[0]
    missing = [k for k in ("weights", "train") if k not in mf.files]
    if missing:
        raise InputError(f"{src}: {mf.model} has no {' or '.join(missing)} file; nothing to build a hub folder from")
    return mf


def folder_name(model: str, layout: str) -> str:
    """The hub folder of `model` in `layout`: `<name>` (flat) or `QuantaMaths_<name>` (per model), also the
    per-model repository's name."""
    from analysis.zoo import hub_layout

    return hub_layout(layout).folder_name(model)


def rename_files_in(text: str, names: Mapping[str, str]) -> str:
    """`text` with every file name of `names` replaced by its new name (whole names, longest first): a model
    card written for one layout, for the other."""
    names = {old: new for old, new in names.items() if old != new}
    if not names:
        return text
    pattern = re.compile("|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)))
    return pattern.sub(lambda m: names[m.group(0)], text)


def _default_seeds(mf) -> dict:
    from analysis.accuracy import read_reports
    from arith.names import parse_name
    from arith.weights import read_train_json

    seeds = {"training": parse_name(mf.model).seed}
    if "accuracy" in mf.files:
        report = read_reports(mf.files["accuracy"]).get("random") or {}
        if (report.get("suite") or {}).get("seed") is not None:
            seeds["verification"] = report["suite"]["seed"]
    analysis_seed = read_train_json(mf.files["train"])["Config"].get("analysis_seed")
    if analysis_seed is not None:
        seeds["analysis"] = analysis_seed
    return seeds


def build_folder(
    src: str | Path,
    folder: str | Path,
    layout: str = "flat",
    *,
    model: str | None = None,
    card: str | None = None,
    seeds: Mapping[str, int] | None = None,
    **meta,
) -> Path:
    """The hub folder `folder` of one model in `layout` ("flat" or "per-model"), from its run folder or a hub
    folder of either layout (`src`; `model` picks one of several): built beside `folder` and then moved there.

    Flat: the run's files as they are (`<name>.pth`, `<name>_train.json`, `<name>_accuracy.json`,
    `<name>_behavior.json`, `<name>_maths.json`, `<name>_quanta_*`). Per model: the weights, train json, accuracy
    and pictures as they are under their per-model names (`model.pth`, `training_loss.json`, `accuracy.json`,
    `quanta_*`), `behaviors.json` (every tag that is not Algo:) and `features.json` (only Algo: tags, every useful
    node) split from the behaviour and maths files (analysis.zoo.split_records: for our runs, the same bytes).

    `card`: the model card's text, naming the files by their flat names (what analysis.card writes); without
    it, the source folder's README.md when it has one. Its file names are renamed for the layout. Then
    `manifest.json` (write_manifest) with `seeds` (default: training, verification and analysis seeds from
    the files), `layout` and `meta`. Returns the folder."""
    from analysis.zoo import FLAT, HubLayout, hub_layout
    from arith.files import atomic_write_bytes

    mf = source_files(src, model)
    name, lay, src_lay = mf.model, hub_layout(layout), HubLayout(mf.layout)
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for target, content in _contents(mf, lay).items():
            if isinstance(content, bytes):
                atomic_write_bytes(tmp / target, content)
            else:
                shutil.copyfile(content, tmp / target)
        if card is None and (Path(src) / CARD).is_file():
            card, card_layout = (Path(src) / CARD).read_text(), src_lay
        else:
            card_layout = HubLayout(FLAT)
        if card is not None:
            renames = {card_layout.file(name, k): lay.file(name, k) for k in mf.files}
            atomic_write_bytes(tmp / CARD, rename_files_in(card, renames).encode())
        write_manifest(tmp, name, dict(seeds) if seeds is not None else _default_seeds(mf), layout=lay.name, **meta)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def _contents(mf, lay) -> dict[str, Path | bytes]:
    """What each model file of a hub folder in layout `lay` holds: the source file to copy, or (per model:
    behaviors.json and features.json, analysis.zoo.split_records) the bytes to write."""
    from analysis.zoo import PER_MODEL, read_records, split_records

    out: dict[str, Path | bytes] = {lay.file(mf.model, kind): path for kind, path in mf.files.items()}
    if lay.name == PER_MODEL and any(k in mf.files for k in ("behavior", "maths")):
        behavior = read_records(mf.files["behavior"]) if "behavior" in mf.files else []
        maths = read_records(mf.files["maths"]) if "maths" in mf.files else []
        for kind, records in zip(("behavior", "maths"), split_records(behavior, maths), strict=True):
            if kind in mf.files:
                out[lay.file(mf.model, kind)] = json.dumps(records).encode()
    return out


def expected_files(src: str | Path, layout: str = "flat", model: str | None = None) -> dict[str, str]:
    """{file name: sha256} of the model files `build_folder(src, ..., layout)` puts in a hub folder (the card
    and the manifest aside): what a folder built earlier must still hold to be up to date."""
    from analysis.zoo import hub_layout

    contents = _contents(source_files(src, model), hub_layout(layout))
    return {n: hashlib.sha256(c).hexdigest() if isinstance(c, bytes) else sha256_file(c) for n, c in contents.items()}


def folder_matches(src: str | Path, folder: str | Path, layout: str = "flat", model: str | None = None) -> bool:
    """Whether `folder` is `src`'s hub folder in `layout`, up to date: its manifest checks out, it holds exactly
    the model files `expected_files` names with those contents, plus the manifest and (when there is one) the
    card. For `varith regenerate`'s check that a hub stage is done, in either layout."""
    folder = Path(folder)
    if not folder.is_dir() or manifest_problem(folder) is not None:
        return False
    try:
        want = expected_files(src, layout, model)
    except InputError:
        return False
    present = {p.name for p in folder.iterdir() if p.is_file()} - {MANIFEST, CARD}
    return present == set(want) and all(sha256_file(folder / n) == sha for n, sha in want.items())


def layouts(spec: str) -> tuple[str, ...]:
    """The layouts a `--layout` value means: "flat", "per-model", or "both" (flat first); one InputError line
    for anything else."""
    from analysis.zoo import LAYOUTS

    if spec == "both":
        return LAYOUTS
    if spec not in LAYOUTS:
        raise InputError(f"--layout {spec}: expected flat, per-model or both")
    return (spec,)


def build_folders(src: str | Path, hub_dir: str | Path, layout: str = "flat", **kwargs) -> list[Path]:
    """`build_folder` into `hub_dir/<folder_name>` for `layout` "flat", "per-model" or "both" (flat first):
    `hub_dir/<name>/` and `hub_dir/QuantaMaths_<name>/`. Returns the folders."""
    mf = source_files(src, kwargs.get("model"))
    out = []
    for lay in layouts(layout):
        out.append(build_folder(src, Path(hub_dir) / folder_name(mf.model, lay), lay, **kwargs))
    return out


# ------------------------------------------------------------------------------------------------ round trip


@dataclass(frozen=True)
class RoundTrip:
    """Whether every file of a folder survives save -> reload with identical bytes; the problems when not."""

    files: tuple[str, ...]
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def _json_writer(indent: int | None):
    return lambda obj: (json.dumps(obj, indent=indent) + ("\n" if indent else "")).encode()


def _codec(kind: str | None, file: str):
    """(reader of a path, writer to bytes) of one kind of file, as the pipeline writes it: the train json,
    behaviour and maths files compact JSON, the accuracy file and the manifest JSON indented by 1 plus a
    newline; any other file its bytes."""
    from analysis.accuracy import read_reports
    from analysis.zoo import read_records
    from arith.weights import read_train_json

    if file == MANIFEST:
        return (lambda p: json.loads(Path(p).read_text())), _json_writer(1)
    if kind == "train":
        return read_train_json, _json_writer(None)
    if kind in ("behavior", "maths"):
        return read_records, _json_writer(None)
    if kind == "accuracy":
        return read_reports, _json_writer(1)
    return (lambda p: Path(p).read_bytes()), (lambda b: b)


def _tensor_bytes(t) -> bytes:
    import torch

    flat = t.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def _weights_problem(path: Path, scratch: Path) -> str | None:
    """The state dict saved (torch.save) and reloaded gives the same keys and, per tensor, dtype, shape and
    bytes, and saving that again gives the same file bytes. (A torch file records the name of the archive it
    was saved under, so its own bytes depend on who saved it: the tensors' bytes are what must not change.)"""
    import torch

    from arith.weights import read_state_dict

    sd = read_state_dict(path)
    buf = io.BytesIO()
    torch.save(sd, buf)
    (scratch / path.name).write_bytes(buf.getvalue())
    again = read_state_dict(scratch / path.name)
    if list(again) != list(sd):
        return f"{path.name}: the reloaded state dict has other keys"
    for key, t in sd.items():
        u = again[key]
        if u.dtype != t.dtype or u.shape != t.shape or _tensor_bytes(u) != _tensor_bytes(t):
            return f"{path.name}: {key} changed in a save -> reload round trip"
    buf2 = io.BytesIO()
    torch.save(again, buf2)
    return None if buf2.getvalue() == buf.getvalue() else f"{path.name}: saving it again gives other bytes"


def round_trip(folder: str | Path) -> RoundTrip:
    """Save -> reload of every file of a hub folder (either layout): each file is read back with its checked
    reader (the weights with arith.weights.read_state_dict, the train json with read_train_json, the accuracy
    file with analysis.accuracy.read_reports, ...), saved again with the pipeline's writer of that kind into a
    scratch folder, and reloaded and saved once more: both saves must give the file's own bytes (the weights:
    the same tensors' bytes, `_weights_problem`). A file a reader refuses is a problem too."""
    import tempfile

    from analysis.zoo import HubLayout, layout_of, models_in

    folder = Path(folder)
    lay = HubLayout(layout_of(folder))
    models = [m.model for m in models_in(folder)]
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    problems = []
    with tempfile.TemporaryDirectory(prefix="varith-roundtrip-") as scratch:
        scratch = Path(scratch)
        for p in files:
            kind = next((k for m in models if (k := lay.kind_of(m, p.name)) is not None), None)
            try:
                if kind == "weights":
                    problem = _weights_problem(p, scratch)
                    if problem:
                        problems.append(problem)
                    continue
                read, write = _codec(kind, p.name)
                saved = write(read(p))
                (scratch / p.name).write_bytes(saved)
                if saved != p.read_bytes() or write(read(scratch / p.name)) != saved:
                    problems.append(f"{p.name}: a save -> reload round trip gives other bytes")
            except InputError as exc:
                problems.append(f"{p.name}: {str(exc).splitlines()[0]}")
    return RoundTrip(tuple(p.name for p in files), tuple(problems))


# ------------------------------------------------------------------------------------------------ publish


@dataclass(frozen=True)
class PublishPlan:
    upload: tuple[str, ...]  # new or changed
    unchanged: tuple[str, ...]
    not_compared: str | None = None  # why the Hub's files could not be compared (then every file is in upload)
    model: str = ""
    layout: str = ""


def folder_model(folder: str | Path) -> tuple[str, str]:
    """(model, layout) of a hub folder of either layout; one InputError line unless it holds exactly one model."""
    from analysis.zoo import layout_of, models_in

    folder = Path(folder)
    layout = layout_of(folder)
    models = models_in(folder)
    if len(models) != 1:
        raise InputError(f"{folder}: holds {len(models)} models' files; a hub folder holds one")
    return models[0].model, layout


def _check_folder(folder: Path) -> tuple[str, str]:
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    problem = manifest_problem(folder)
    if problem:
        raise InputError(f"not publishing: {problem}")
    return folder_model(folder)


def _compare(hub: Hub, repo: str, folder: Path, dry_run: bool, model: str, layout: str) -> PublishPlan:
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    try:
        remote = hub.files(repo)
    except HubUnreachable as exc:
        if not dry_run:
            raise
        return PublishPlan(tuple(names), (), f"no network: {exc}", model, layout)
    unchanged = tuple(n for n in names if n in remote and remote[n].same_as(folder / n))
    return PublishPlan(tuple(n for n in names if n not in unchanged), unchanged, None, model, layout)


def publish_plan(hub: Hub, repo: str, folder: str | Path, dry_run: bool = False) -> PublishPlan:
    """What publishing a hub folder (either layout) would upload; refused (InputError) unless its manifest
    checks out and every file survives the save -> reload round trip. A dry run that cannot reach the Hub
    lists every file of the manifest, not compared (`not_compared` says why); a real one raises HubUnreachable."""
    folder = Path(folder)
    model, layout = _check_folder(folder)
    trip = round_trip(folder)
    if not trip.ok:
        raise InputError(f"not publishing {folder}: {trip.problems[0]}")
    return _compare(hub, repo, folder, dry_run, model, layout)


def publish(hub: Hub, repo: str, folder: str | Path, plan: PublishPlan) -> None:
    if plan.upload:
        hub.upload(repo, Path(folder), plan.upload, f"varith publish {Path(folder).name}")


@dataclass(frozen=True)
class PublishRecord:
    """What publishing one hub folder did, as the publish manifest keeps it: the files new or changed on the
    Hub (`changed`; every file when they could not be compared), those unchanged, whether the round trip held
    (None: not reached), what was uploaded (nothing on a dry run or an error) and the error, one line."""

    folder: str
    repo: str
    dry_run: bool
    model: str = ""
    layout: str = ""
    changed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    round_trip: bool | None = None
    round_trip_problems: tuple[str, ...] = ()
    uploaded: tuple[str, ...] = ()
    not_compared: str | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


UNREACHABLE_HINT = "nothing uploaded (--dry-run lists the files without a network)"


def publish_folder(hub: Hub, repo: str, folder: str | Path, dry_run: bool = False) -> PublishRecord:
    """Publish one hub folder of either layout (`publish_plan`, then `publish` unless `dry_run`); every outcome,
    an error included, comes back as its PublishRecord (never raised)."""
    folder = Path(folder)
    record = PublishRecord(str(folder), repo, dry_run)
    try:
        model, layout = _check_folder(folder)
        record = replace(record, model=model, layout=layout)
        trip = round_trip(folder)
        record = replace(record, round_trip=trip.ok, round_trip_problems=trip.problems)
        if not trip.ok:
            raise InputError(f"not publishing {folder}: {trip.problems[0]}")
        plan = _compare(hub, repo, folder, dry_run, model, layout)
        record = replace(record, changed=plan.upload, unchanged=plan.unchanged, not_compared=plan.not_compared)
        if not dry_run:
            publish(hub, repo, folder, plan)
            record = replace(record, uploaded=plan.upload)
    except HubUnreachable as exc:
        return replace(record, error=f"{exc}; {UNREACHABLE_HINT}")
    except InputError as exc:
        return replace(record, error=str(exc).splitlines()[0])
    return record


PUBLISH_MANIFEST = "publish_manifest.json"


def write_publish_manifest(path: str | Path, records: Sequence[PublishRecord]) -> Path:
    """The publish manifest at `path`: per model (folder and repository) what changed, whether the round trip
    held, what was uploaded and any error, plus when and the command line. Entries of folders not published
    this time are kept from the file's last version."""
    path = Path(path)
    kept = []
    try:
        old = json.loads(path.read_text()).get("models", [])
        done = {(r.folder, r.repo) for r in records}
        kept = [e for e in old if isinstance(e, dict) and (e.get("folder"), e.get("repo")) not in done]
    except (OSError, ValueError, AttributeError):
        pass
    data = {
        "created_at": time.time(),
        "command": list(sys.argv),
        "models": kept + [r.to_dict() for r in records],
    }
    atomic_write_json(path, data, indent=1)
    return path


# ------------------------------------------------------------------------------------------------ fetch


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


DEFAULT_OWNER = DEFAULT_REPO.split("/")[0]


def per_model_repo(name: str, owner: str = DEFAULT_OWNER) -> str:
    """The per-model repository of a model: OWNER/QuantaMaths_<name>."""
    return check_repo(f"{owner}/{folder_name(name, 'per-model')}")


class NotInRepo(InputError):
    """The repository holds no files of the model, in either layout."""


def remote_layout(remote: Mapping[str, RemoteFile], repo: str, name: str) -> str:
    """The layout a repository holds `name` in: per model (`model.pth`), else flat (`<name>.pth`)."""
    from analysis.zoo import FLAT, PER_MODEL, HubLayout

    for layout in (PER_MODEL, FLAT):
        if HubLayout(layout).file(name, "weights") in remote:
            return layout
    raise NotInRepo(f"{repo}: no {name}.pth (flat) nor model.pth (per model)")


def _manifest_sha256(hub: Hub, repo: str, name: str, remote: Mapping[str, RemoteFile], staging: Path, layout: str):
    """{file: sha256} of the repository's manifest.json when it is this model's; None when the repository has
    no manifest (a repository of several models, as published before manifests). A per-model repository whose
    manifest names another model is refused."""
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
    if shas is None and layout == "per-model":
        raise InputError(f"{repo}: its {MANIFEST} is of {model}, not {name}; nothing fetched")
    return shas


def fetch(hub: Hub, repo: str, name: str, dest: Path, note=None) -> list[Path]:
    """Download a model's weights and its JSON files that the repository holds, in either layout (flat
    `<name>.pth`, `<name>_train.json`, ...; per model `model.pth`, `training_loss.json`, `behaviors.json`,
    `features.json`, `accuracy.json`), into `dest/<name>/` under the flat names every command loads by
    (`<name>.pth`, `<name>_train.json`, `<name>_behavior.json`, `<name>_maths.json`, `<name>_accuracy.json`),
    skipping those already there with the same content; the weights and train json must exist, and the train
    json must read (arith.weights.read_train_json: any era). NotInRepo when the repository has neither layout's
    weights of `name`.

    Every file is checked before any enters the cache: against what the Hub lists for it (size, sha256 or git
    id), and against the sha256 the repository's `manifest.json` gives it when the manifest is this model's (a
    file the manifest lacks is refused too). Downloads land in a hidden staging folder beside the cache folder
    and are moved in only when all check out; on a mismatch: one InputError line, and the staging folder (with
    the bad file) is removed, the cache left as it was. `note(text)` hears of a repository without this model's
    manifest."""
    from analysis.zoo import HubLayout
    from arith.names import artifact_path, parse_name
    from arith.weights import read_train_json

    parse_name(name)
    remote = hub.files(repo)
    layout = HubLayout(remote_layout(remote, repo, name))
    folder = Path(dest) / name
    staging = Path(dest) / f".{name}.fetching"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        expected = _manifest_sha256(hub, repo, name, remote, staging, layout.name)
        if expected is None and note is not None:
            note(f"{repo} has no {MANIFEST} of {name}: its files are checked against the Hub's own checksums only")
        out, ready = [], []
        for kind in FETCHED:
            file = artifact_path(folder, name, kind)
            there = layout.file(name, kind)
            info = remote.get(there)
            if info is None:
                if kind in ("weights", "train"):
                    raise InputError(f"{repo}: no {there}")
                continue
            want = None
            if expected is not None:
                want = expected.get(there)
                if want is None:
                    raise InputError(f"{repo}: {there} is not in its {MANIFEST}; nothing fetched")
            out.append(file)
            if file.is_file() and info.same_as(file) and (want is None or sha256_file(file) == want):
                continue
            got = hub.download(repo, there, staging)
            if not info.same_as(got):
                raise InputError(
                    f"{repo}: {there} is not what the Hub lists for it (size or checksum); nothing fetched"
                )
            if want is not None and sha256_file(got) != want:
                if file.is_file() and sha256_file(file) != want:  # an older bad copy does not stay cached either
                    file.unlink()
                raise InputError(f"{repo}: {there} does not match its sha256 in {MANIFEST}; nothing fetched")
            if kind == "train":
                try:
                    config = read_train_json(got, name=name)["Config"]
                except InputError as exc:
                    why = str(exc).splitlines()[0].removeprefix(f"train json {got}: ")
                    raise InputError(f"{repo}: {there}: {why}; nothing fetched") from None
                if layout.name == "per-model" and config.get("model_name", name) != name:
                    raise InputError(f"{repo}: {there} is of {config['model_name']}, not {name}; nothing fetched")
            ready.append((got, file))
        if ready:
            folder.mkdir(parents=True, exist_ok=True)
        for got, file in ready:
            os.replace(got, file)
        return out
    finally:
        shutil.rmtree(staging, ignore_errors=True)
