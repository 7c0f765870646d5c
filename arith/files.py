"""Atomic file writes: write a temporary file beside the target, fsync, rename. Readers never see half a file."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from arith.errors import InputError


def current_umask() -> int:
    """The process's umask, read without changing it (Linux: /proc/self/status; elsewhere set-and-restore)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; an artifact gets the mode a plain open() would give (group-readable under a
        # 0022 or 0002 umask), so collaborators on a shared cluster can read it
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj, indent: int | None = None) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=indent) + ("\n" if indent else "")).encode())


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def require_writable_dir(path: str | Path, what: str) -> Path:
    """Check, before any work starts, that files can be written in `path` (a folder, existing or to be made):
    it or its nearest existing parent must be a writable folder. Nothing is created. Returns the absolute path;
    an InputError naming `what` (e.g. "--out") otherwise."""
    path = Path(path).absolute()
    probe_dir = path
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        where = path if probe_dir == path else f"{path} ({probe_dir} is not a folder)"
        raise InputError(f"{what} {where}: not writable (Not a directory)")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=probe_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"{what} {path}: not writable ({exc.strerror or type(exc).__name__})") from None
    return path
