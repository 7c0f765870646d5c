"""The one manifest format: what a folder's files were (sha256 and size) and what made them.

A run folder (`manifest.json`, jobs.runs.markers.record_artifacts) and a hub folder (`manifest.json`,
jobs.stages.hub.write_manifest) write the same format:

    {"files": {path relative to the folder: {"sha256": ..., "bytes": ...}},
     "packages": {python, torch, ...}, "code": {package, git_commit}, "command": [argv], "updated_at": seconds,
     ...what the writer adds (model, seeds, config)}

and are checked by the same reader, `files_problem`. Run manifests written before this format kept the same
entries under `artifacts`; `listed_files` reads both.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from arith.files import sha256_file

MANIFEST = "manifest.json"
PACKAGES = ("torch", "numpy", "accelerate", "submitit", "dask", "zarr", "huggingface_hub", "verified-arithmetic")


def package_versions() -> dict[str, str | None]:
    """Python's and each of PACKAGES' installed version (None: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def code_version() -> dict:
    """The package's version and, without running git, the commit the checkout's HEAD points at."""
    from importlib.metadata import PackageNotFoundError, version

    info: dict = {}
    try:
        info["package"] = version("verified-arithmetic")
    except PackageNotFoundError:
        info["package"] = None
    root = Path(__file__).resolve().parent.parent
    try:
        ref = (root / ".git" / "HEAD").read_text().strip()
        if ref.startswith("ref:"):
            ref_path = root / ".git" / ref.split(None, 1)[1]
            info["git_commit"] = ref_path.read_text().strip() if ref_path.is_file() else None
        else:
            info["git_commit"] = ref
    except OSError:
        info["git_commit"] = None
    return info


def file_entry(path: str | Path) -> dict:
    path = Path(path)
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def provenance() -> dict:
    """What made the files: package versions, the code's version, the command line, the time."""
    return {
        "packages": package_versions(),
        "code": code_version(),
        "command": list(sys.argv),
        "updated_at": time.time(),
    }


def listed_files(manifest: Mapping | None) -> dict | None:
    """The manifest's file entries (None when it lists none); `artifacts` is the older run manifests' key."""
    if not isinstance(manifest, Mapping):
        return None
    files = manifest.get("files", manifest.get("artifacts"))
    return dict(files) if isinstance(files, Mapping) else None


def files_problem(
    folder: str | Path, manifest: Mapping | None, required: Iterable[str] = (), exact: bool = False
) -> str | None:
    """None when every file the manifest lists is in `folder` with its size and sha256, the `required` names are
    listed, and (with `exact`) the folder holds no other file besides the manifest; else one line saying what
    is wrong."""
    folder = Path(folder)
    files = listed_files(manifest)
    if files is None:
        return "manifest lists no files" if manifest is not None else f"no {MANIFEST}"
    for name in required:
        if name not in files:
            return f"manifest does not list {name}"
    if exact:
        present = {p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST}
        if set(files) != present:
            extra, missing = sorted(present - set(files)), sorted(set(files) - present)
            return f"{folder}: files {extra} not in the manifest, {missing} missing"
    for rel, info in files.items():
        p = folder / rel
        if not p.is_file():
            return f"{rel} is missing"
        try:
            # (the size first: a changed size needs no hashing)
            if ("bytes" in info and int(info["bytes"]) != p.stat().st_size) or info.get("sha256") != sha256_file(p):
                return f"{rel} does not match its sha256"
        except (AttributeError, TypeError, ValueError):
            return f"manifest entry for {rel} is malformed"
    return None
