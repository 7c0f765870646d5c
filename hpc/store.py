"""Zarr stores of block results: one owner for layout rules, done flags, fingerprints and validation.

A stage (verification, ablation, ...) keeps its results in groups of `runs/<name>/<name>.zarr/`, e.g.
`verify/<suite>/` or `ablate/nodes/`. A `BlockGroup` is one such group whose arrays all have one row per block
and one chunk per row (unsharded), so the task that computes block k owns whole chunks and no two writers ever
touch the same object (hpc_stack.md 3.4). The layout of each stage (its arrays, the checks of a block's rows,
the reduction) lives in a subclass beside its stage (jobs/stages/*_store.py).

Rules this module keeps:
- The driver creates the group, every array and the attributes before any task runs (`prepare_group`); the
  group's `fingerprint` attribute is written last, so a group without it was never handed to a task and is
  simply rebuilt.
- Tasks only write their own rows (`BlockGroup.write_rows`), data first and the done flag last. The data arrays
  are written with `write_empty_chunks=True`, so every row a task wrote has a chunk file of every data array,
  zeros included: a missing data chunk of a done block is damage, never "all zero". `done` keeps zarr's default
  (a cleared flag deletes its chunk); a missing `done` chunk means "not done".
- Every chunk is zstd-compressed with its checksum on, so a truncated or garbled chunk fails to decode instead
  of reading back as other numbers.
- Everything a task writes is a deterministic function of its inputs and block index, so a re-executed task
  rewrites identical bytes and a restarted driver skips blocks whose done flag is set.
- The fingerprint (what the numbers depend on: weights sha256, settings, layout version) is compared on every
  open: a group made by other weights or settings is refused with one line, unless the caller asks for a fresh
  start.
- Metadata is consolidated once, by the driver, at the end (`consolidate`); the driver drops the consolidated
  copy when it opens the store (a cache that would go stale mid-run; nothing here reads it).
- A group whose blocks keep their rows whatever a run's size (`GROWS`, e.g. random questions addressed by
  (seed, j)) leaves the run's size out of its fingerprint: its arrays grow to the largest run's rows, and each
  run uses its first `n_blocks` rows. A done row made for another size (`outdated`) is redone quietly.
- Each group built gets a random `generation` attribute; the handle `prepare_group` returns carries it, and a
  task checks it before it writes, so a task of a run whose group was since cleared (`--fresh` by a later
  run, e.g. while a SLURM worker of a killed driver still ran) writes nothing into the new group.

One writer per group: a driver holds `group_lock(root, path)` (an OS lock, fcntl.flock, on the file
`<store>/<path>.lock` beside the group's folder, so clearing the group keeps it) from before it opens the group
until its reduction is done. A second driver on the same group waits for it, saying so in one line on stderr
(or with `wait=False` refuses with one InputError line); then it opens the group as the first one left it
(same settings: its finished blocks are reused). The kernel drops the lock with its process: a killed driver
never leaves a store locked. Dask workers write chunks on behalf of the driver that holds the lock.

A damaged store never yields a result. Per done block, before it counts (`BlockGroup.scan`): every data chunk
exists on disk and decodes, and the stage's own checks of the block's rows hold (`check_rows`). A block that
fails is not done: the driver clears its done flag, says so in one line on stderr ("store ...: blocks 3, 7
failed their checks (...); redoing them"; "block 3 failed its checks (...); redoing it") and runs it again.
This happens when the driver opens an existing group (`prepare_group`) and again in the reduction (`scan`
problems raise `StoreDamage`). A corrupt `done` chunk (unreadable, or a value other than 0/1) counts as
"not done": the block is redone.

Damaged metadata (a `zarr.json` that is not JSON, not a zarr v3 node of the expected kind, or an array whose
shape, type, chunks or codecs differ from the layout) is one InputError line naming the file and asking for
`--fresh`. With `fresh=True` the driver repairs it: it rewrites a damaged root or stage group metadata file
(the root only when the store folder holds nothing but what a varith store holds) and removes the group's
folder and builds it again. A group whose own `zarr.json` is missing lost its fingerprint and is rebuilt.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import shutil
import socket
import sys
import threading
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, TextIO

import numpy as np

from arith.errors import InputError

_META_KEYS = ("shape", "data_type", "chunk_grid", "chunk_key_encoding", "fill_value", "codecs")
ArraySpecs = dict[str, tuple[tuple[int, ...], str]]  # name -> (shape, dtype); the first axis is the block


class StoreDamage(InputError):
    """Done blocks of a store failed their checks; `problems` maps block -> the first failed check."""

    def __init__(self, location: str, problems: dict[int, str]):
        self.location = location
        self.problems = dict(problems)
        them = "it" if len(self.problems) == 1 else "them"
        super().__init__(f"store {location}: {describe_problems(problems)}; run again to redo {them}")


def describe_problems(problems: dict[int, str], limit: int = 10) -> str:
    """One line: 'blocks 3, 7 failed their checks (3: failed chunk missing; 7: ...)', 'block 3 failed its
    checks (...)'."""
    blocks = sorted(problems)
    more = f" and {len(blocks) - limit} more" if len(blocks) > limit else ""
    shown = ", ".join(str(k) for k in blocks[:limit]) + more
    reasons: dict[str, list[int]] = {}
    for k in blocks:
        reasons.setdefault(problems[k], []).append(k)
    if len(reasons) == 1:
        why = next(iter(reasons))
    else:
        parts = [f"{ks[0]}{'...' if len(ks) > 1 else ''}: {r}" for r, ks in list(reasons.items())[:3]]
        why = "; ".join(parts) + ("; ..." if len(reasons) > 3 else "")
    if len(blocks) == 1:
        return f"block {shown} failed its checks ({why})"
    return f"blocks {shown} failed their checks ({why})"


def _first_difference(stored: dict, wanted: dict, prefix: str = "") -> str:
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key), wanted.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            return _first_difference(a, b, f"{prefix}{key}.")
        return f"{prefix}{key} {json.dumps(a)} here, {json.dumps(b)} asked"
    return "none"


def _chunk_codecs():
    from zarr.codecs import ZstdCodec

    return ZstdCodec(level=0, checksum=True)


@dataclass(frozen=True)
class BlockGroup:
    """Handle on one group of block arrays: small and picklable, so it travels inside every task.

    Subclasses name their data arrays (`DATA_ARRAYS`) and check a block's rows (`check_rows`)."""

    root: str  # absolute path of <name>.zarr
    path: str  # the group inside the store, e.g. "verify/exhaustive"
    n_blocks: int
    # the group's `generation` attribute when the driver prepared it ("": unchecked): a task writes only into
    # the group it was handed, never into one cleared and built again since (--fresh by a later run)
    generation: str = field(default="", kw_only=True)

    DATA_ARRAYS: ClassVar[tuple[str, ...]] = ()
    # True: the group's blocks are addressed so that a run with more (or fewer) blocks and the same fingerprint
    # shares them: its arrays grow to the largest run's row count, and a run uses its first `n_blocks` rows
    GROWS: ClassVar[bool] = False

    @property
    def location(self) -> str:
        return f"{self.root}/{self.path}"

    def _array(self, name: str, mode: str = "r+"):
        import zarr

        try:
            arr = zarr.open_array(store=self.root, path=f"{self.path}/{name}", mode=mode, zarr_format=3)
        except FileNotFoundError:  # zarr's ArrayNotFoundError included: the caller says where
            raise
        except Exception as exc:  # unparsable or invalid metadata
            raise InputError(
                f"store {self.location}: metadata of array {name} is damaged ({_reason(exc)}); "
                "pass --fresh to start again"
            ) from None
        if name in self.DATA_ARRAYS:
            # every row a task writes has a chunk of every data array, zeros included: absence means damage
            arr = arr.with_config({"write_empty_chunks": True})
        return arr

    def chunk_path(self, name: str, k: int, ndim: int) -> Path:
        """The file of block k's chunk of array `name` (zarr v3 default key encoding: c/k/0/...)."""
        return Path(self.location, name, "c", str(k), *(["0"] * (ndim - 1)))

    def write_rows(self, k: int, rows: dict[str, np.ndarray]) -> None:
        """Write block k's row of every data array, then its done flag. Called by the task that owns block k."""
        if not 0 <= k < self.n_blocks:
            raise IndexError(f"block {k} outside 0..{self.n_blocks - 1}")
        self._same_generation(k)
        for name in self.DATA_ARRAYS:
            self._array(name)[k] = rows[name]
        self._same_generation(k)
        self._array("done")[k] = 1  # last: the row is complete

    def attributes(self) -> dict:
        """The group's attributes as stored ({} when its metadata cannot be read)."""
        try:
            return json.loads(Path(self.location, "zarr.json").read_bytes()).get("attributes") or {}
        except (OSError, ValueError, AttributeError):
            return {}

    def set_attribute(self, key: str, value) -> None:
        """Record a JSON value among the group's attributes (driver only, while it holds the group's lock)."""
        import zarr

        zarr.open_group(store=self.root, path=self.path, mode="r+", zarr_format=3).attrs[key] = value

    def _same_generation(self, k: int) -> None:
        if not self.generation:
            return
        if self.attributes().get("generation") != self.generation:
            raise InputError(
                f"store {self.location}: cleared or rebuilt by another run since block {k} was handed out; "
                "block not written"
            )

    def _read(self, name: str) -> tuple[np.ndarray, dict[int, str]]:
        """This run's rows of the array (the first `n_blocks`), and the blocks whose chunk would not decode
        (read as zeros here)."""
        arr = self._array(name, "r")
        n = self.n_blocks
        if arr.shape[0] < n:
            raise InputError(f"store {self.location}: array {name} has {arr.shape[0]} rows, {n} expected")
        try:
            return np.asarray(arr[:n]), {}
        except Exception:  # one or more damaged chunks: find them
            out = np.zeros((n, *arr.shape[1:]), dtype=arr.dtype)
            bad: dict[int, str] = {}
            for k in range(n):
                try:
                    out[k] = arr[k]
                except Exception:
                    bad[k] = f"{name} chunk unreadable"
            return out, bad

    def scan(self) -> tuple[np.ndarray, dict[int, str], dict[str, np.ndarray]]:
        """(done mask, problems, data): blocks counted as done, block -> why it may not count, every array.

        A block with a damaged done flag, or whose done flag is set but whose rows fail a check (module
        docstring), is in `problems` and not in the done mask.
        """
        done_raw, problems = self._read("done")
        problems = {k: "done flag unreadable" for k in problems}
        weird = np.flatnonzero((done_raw != 0) & (done_raw != 1))
        problems.update({int(k): f"done flag {int(done_raw[k])}" for k in weird if int(k) not in problems})
        done = done_raw == 1
        data: dict[str, np.ndarray] = {}
        unreadable: dict[int, str] = {}
        for name in self.DATA_ARRAYS:
            data[name], bad = self._read(name)
            for k, why in bad.items():
                unreadable.setdefault(k, why)
        blocks = np.flatnonzero(done)
        for k in blocks.tolist():
            if k in unreadable:
                problems.setdefault(k, unreadable[k])
                continue
            for name in self.DATA_ARRAYS:
                if not self.chunk_path(name, k, data[name].ndim).is_file():
                    problems.setdefault(k, f"{name} chunk missing")
                    break
        intact = np.array([k for k in blocks.tolist() if k not in problems], dtype=np.int64)
        if len(intact):
            for k, why in self.check_rows(intact, data).items():
                problems.setdefault(k, why)
        done[list(problems)] = False
        return done, problems, data

    def check_rows(self, blocks: np.ndarray, data: dict[str, np.ndarray]) -> dict[int, str]:
        """block -> the first failed check of the stage's own rules, for done blocks whose chunks are intact."""
        return {}

    def outdated(self, problems: dict[int, str], data: dict[str, np.ndarray]) -> set[int]:
        """Of the blocks that failed their checks, those that hold a whole block of another run of this group
        (a growing group's last block, made for another size): redone without a damage line."""
        return set()

    def done_mask(self) -> np.ndarray:
        """Blocks whose done flag is 1 (a damaged flag counts as not done)."""
        done, _bad = self._read("done")
        return done == 1

    def pending(self) -> list[int]:
        return np.flatnonzero(~self.done_mask()).tolist()

    def repair(self, problems: dict[int, str], stream: TextIO | None = None, action: str | None = None) -> None:
        """Clear the done flags of `problems`' blocks (so they are pending) and say so in one line on stderr."""
        if not problems:
            return
        done = self._array("done")
        for k in sorted(problems):
            done[k] = 0  # a whole-chunk write: a garbage chunk is replaced (here: deleted), never read
        action = action or ("redoing it" if len(problems) == 1 else "redoing them")
        print(f"store {self.location}: {describe_problems(problems)}; {action}", file=stream or sys.stderr, flush=True)

    def validate(self, stream: TextIO | None = None) -> dict[int, str]:
        """Check every done block; clear the flags of those that fail (they become pending). Returns them."""
        _done, problems, data = self.scan()
        old = self.outdated(problems, data) & set(problems)
        if old:
            done = self._array("done")
            for k in sorted(old):
                done[k] = 0  # another run's version of this block: this run computes its own
        self.repair({k: why for k, why in problems.items() if k not in old}, stream)
        return problems

    def read_checked(self) -> dict[str, np.ndarray]:
        """Every data array, after every block passed its checks (StoreDamage otherwise; InputError when
        blocks are not done yet): what a reduction may use."""
        done, problems, data = self.scan()
        if problems:
            raise StoreDamage(self.location, problems)
        if not done.all():
            raise InputError(f"store {self.location}: {int((~done).sum())} of {self.n_blocks} blocks are not done yet")
        return data


def _reason(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0][:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ------------------------------------------------------------------------------------------------ metadata


class _Damaged(Exception):
    pass


def _read_node_meta(path: Path, node_type: str) -> dict | None:
    """The parsed `zarr.json` at `path` (None if absent); _Damaged if it is no zarr v3 node of that type."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise _Damaged("a folder, not a file") from None
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Damaged(f"not JSON: {exc}" if raw.strip() else "empty") from None
    if not isinstance(meta, dict) or meta.get("zarr_format") != 3 or meta.get("node_type") != node_type:
        raise _Damaged(f"not a zarr v3 {node_type}")
    return meta


def _expected_array_meta(shape: tuple[int, ...], dtype: str) -> dict:
    """The metadata keys `_META_KEYS` an array of this layout has (made in memory, compared as JSON)."""
    return _expected_array_meta_cached(tuple(shape), dtype)


@functools.lru_cache(maxsize=64)
def _expected_array_meta_cached(shape: tuple[int, ...], dtype: str) -> dict:
    import tempfile

    import zarr

    with tempfile.TemporaryDirectory(prefix="varith-meta-") as tmp:
        _create_array(zarr.open_group(store=tmp, mode="w", zarr_format=3), "a", shape, dtype)
        full = json.loads(Path(tmp, "a", "zarr.json").read_bytes())
    return {key: full.get(key) for key in _META_KEYS}


def _create_array(group, name: str, shape: tuple[int, ...], dtype: str):
    return group.create_array(
        name,
        shape=shape,
        chunks=(1, *shape[1:]),  # one block row per chunk, unsharded: each task owns whole chunks
        dtype=dtype,
        fill_value=0,
        compressors=_chunk_codecs(),  # checksummed: a garbled chunk fails to decode
        dimension_names=("block", *[f"d{i}" for i in range(1, len(shape))]),
    )


# ------------------------------------------------------------------------------------------------ one writer

_HELD: dict[str, list[int]] = {}  # lock file -> [fd, depth]: the group locks this process holds
_HELD_GUARD = threading.Lock()


def lock_file(root: str | Path, path: str) -> Path:
    """`<store>/<path>.lock`: beside the group's folder (clearing the group keeps it), inside its stage folder
    (so the store's root holds nothing new)."""
    return Path(root) / f"{path}.lock"


def _holder(fd: int) -> str:
    """' (pid 1234 on host)' as the holder wrote it into the lock file, or '' when it has not (yet)."""
    try:
        words = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
    except OSError:
        return ""
    return f" (pid {words[0]} on {words[1]})" if len(words) >= 2 and words[0].isdigit() else ""


@contextlib.contextmanager
def group_lock(root: str | Path, path: str, wait: bool = True, log: TextIO | None = None) -> Iterator[None]:
    """Hold the store group `path` of `root` (and everything under it) for this process: one writer per group.

    Another process holding it: say so in one line on `log` (stderr) and wait for it, or with `wait=False`
    refuse (InputError). An OS lock (fcntl.flock) on `lock_file(root, path)`: released when this block ends or
    the process dies, however (SIGKILL included); not inherited by spawned worker processes. Re-entrant within
    one process (a stage that runs another's code under the same group)."""
    root = Path(root)
    location = f"{root}/{path}"
    file = lock_file(root, path)
    key = str(file.absolute())
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is not None:
            held[1] += 1
    if held is not None:
        try:
            yield
        finally:
            with _HELD_GUARD:
                held[1] -= 1
        return
    if root.exists() and not root.is_dir():
        raise InputError(f"store {root}: exists and is not a directory")
    fd = _open_lock(file, location)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _holder(fd)
            if not wait:
                raise InputError(
                    f"store {location}: another run{who} is writing it; run again when it has finished "
                    "(or leave out --no-wait to wait for it)"
                ) from None
            print(
                f"store {location}: another run{who} is writing it; waiting (--no-wait to refuse)",
                file=log or sys.stderr,
                flush=True,
            )
            fcntl.flock(fd, fcntl.LOCK_EX)  # Ctrl-C / SIGTERM interrupt the wait (KeyboardInterrupt)
        with contextlib.suppress(OSError):  # (a lock file we may only read: no name in it, the lock holds)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        with _HELD_GUARD:
            _HELD[key] = [fd, 1]
        try:
            yield
        finally:
            with _HELD_GUARD:
                _HELD.pop(key, None)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # before the unlock: a waiter never reads a finished run's name
    finally:
        os.close(fd)  # releases the lock


def _open_lock(file: Path, location: str) -> int:
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"store {location}: a file stands where its folder {file.parent} should be") from None
    except OSError as exc:
        raise InputError(f"store {location}: cannot create {file.parent} ({exc.strerror})") from None
    try:
        return os.open(file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)  # shared stores: the umask decides
    except PermissionError:
        try:
            return os.open(file, os.O_RDONLY | os.O_CLOEXEC)  # another user's lock file: flock works read-only
        except OSError as exc:
            raise InputError(f"store {location}: cannot open its lock file {file} ({exc.strerror})") from None
    except OSError as exc:
        raise InputError(f"store {location}: cannot create its lock file {file} ({exc.strerror})") from None


def _owned(root: Path) -> bool:
    """Whether the folder holds nothing but what a store of ours has: its `zarr.json` and stage groups (folders,
    not links, with Zarr metadata in them), so --fresh may rewrite its root."""
    try:
        names = os.listdir(root)
    except OSError:
        return False

    def group_folder(path: Path) -> bool:
        return path.is_dir() and not path.is_symlink() and next(path.rglob("zarr.json"), None) is not None

    return all(n == "zarr.json" or group_folder(root / n) for n in names)


def _remove_tree(path: Path, root: Path) -> None:
    """Remove a group folder of our store (never a link, never outside the store)."""
    path = Path(path)
    if path.is_symlink() or not path.resolve().is_relative_to(root) or path.resolve() == root:
        raise InputError(f"store {root}: refusing to remove {path}")
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _check_metadata(
    root: Path,
    group_path: str,
    specs: dict,
    fresh: bool,
    log: TextIO,
    fingerprint: dict | None = None,
    grows: bool = False,
) -> None:
    """Raw checks of every metadata file the group `group_path` depends on, before zarr parses any of them.

    Damaged root or intermediate group metadata: InputError, or with `fresh` rewritten (root: only for a store
    folder we own). The group and its arrays: InputError, or with `fresh` the group folder is removed. The
    consolidated copy in the root metadata is dropped (a cache; rewritten at the end by `consolidate`).
    """

    def refuse(what: Path, why: str):
        raise InputError(f"store {root}: {what} is damaged ({why}); pass --fresh to start again")

    meta_root = root / "zarr.json"
    try:
        meta = _read_node_meta(meta_root, "group")
    except _Damaged as exc:
        if not fresh:
            refuse(meta_root, str(exc))
        if not _owned(root):
            raise InputError(
                f"store {root}: {meta_root} is damaged ({exc}) and the folder holds more than a varith store; "
                "repair or remove it yourself, or pass --store to use another"
            ) from None
        print(f"store {root}: {meta_root} is damaged ({exc}); writing it again (--fresh)", file=log, flush=True)
        _remove_tree(meta_root, root)
        meta = None
    if meta is not None and "consolidated_metadata" in meta:
        meta.pop("consolidated_metadata")
        from arith.files import atomic_write_json

        atomic_write_json(meta_root, meta, indent=2)

    *parents, _leaf = group_path.split("/")
    folder = root
    for part in parents:
        folder = folder / part
        if folder.exists() and not folder.is_dir():
            if not fresh:
                refuse(folder, "a file, not a folder")
            _remove_tree(folder, root)
        try:
            _read_node_meta(folder / "zarr.json", "group")
        except _Damaged as exc:
            if not fresh:
                refuse(folder / "zarr.json", str(exc))
            print(f"store {root}: {folder / 'zarr.json'} is damaged ({exc}); writing it again (--fresh)", file=log)
            _remove_tree(folder / "zarr.json", root)

    group = root / group_path
    if not group.exists():
        return
    if fresh:
        _remove_tree(group, root)
        return
    if not group.is_dir():
        refuse(group, "a file, not a folder")
    try:
        meta = _read_node_meta(group / "zarr.json", "group")
    except _Damaged as exc:
        refuse(group / "zarr.json", str(exc))
    if meta is None or "fingerprint" not in (meta.get("attributes") or {}):
        # never completed by a driver (no fingerprint yet): nothing in it can be trusted, rebuild it
        _remove_tree(group, root)
        return
    if fingerprint is not None and meta["attributes"]["fingerprint"] != fingerprint:
        raise _other_settings(f"{root}/{group_path}", meta["attributes"]["fingerprint"], fingerprint)
    for name, (shape, dtype) in specs.items():
        path = group / name / "zarr.json"
        try:
            ameta = _read_node_meta(path, "array")
        except _Damaged as exc:
            refuse(path, str(exc))
        if ameta is None:
            refuse(path, "missing")
        wanted = _expected_array_meta(shape, dtype)
        if grows and _grown_shape(ameta.get("shape"), shape):
            wanted = wanted | {"shape": ameta["shape"]}  # more or fewer rows: another run's size (see GROWS)
        for key in _META_KEYS:
            if ameta.get(key) != wanted[key]:
                refuse(path, f"{key} {json.dumps(ameta.get(key))[:80]} here, {json.dumps(wanted[key])[:80]} expected")


def _grown_shape(stored, shape: tuple[int, ...]) -> bool:
    """Whether `stored` (a shape from metadata) differs from `shape` in its row count only."""
    return (
        isinstance(stored, list)
        and len(stored) == len(shape)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in stored)
        and stored[0] >= 1
        and list(stored[1:]) == list(shape[1:])
    )


def _other_settings(location: str, stored: dict, wanted: dict) -> InputError:
    """One line: the group was made by other weights or settings, and what differs."""
    if not isinstance(stored, dict):
        stored = {}
    if stored.get("weights_sha256") != wanted.get("weights_sha256"):
        what = "other weights"
        here, asked = str(stored.get("weights_sha256"))[:12], str(wanted.get("weights_sha256"))[:12]
        detail = f"sha256 {here}... here, {asked}... asked"
    else:
        what, detail = "other settings", _first_difference(stored, wanted)
    return InputError(
        f"store {location} was made by {what} ({detail}); pass --fresh to discard it or --store to use another"
    )


def stored_attributes(handle: BlockGroup) -> dict:
    """The attributes of `handle`'s group as stored ({} when there is no such store or group)."""
    import zarr

    try:
        return dict(zarr.open_group(store=handle.root, path=handle.path, mode="r").attrs)
    except (FileNotFoundError, OSError, ValueError):  # no store, no group (zarr's GroupNotFoundError), not zarr
        return {}


def open_checked(handle: BlockGroup, fingerprint: dict, missing: str, again: str) -> dict:
    """The checked reader beside `prepare_group`, the writer: `handle`'s group exists, was completed by a driver
    and holds `fingerprint`; returns its attributes. Else one InputError line naming the store: `missing` says
    what is not there, `again` what to run (e.g. "run varith ablate without --reduce-only")."""
    attributes = stored_attributes(handle)
    stored = attributes.get("fingerprint")
    if not isinstance(stored, dict):
        raise InputError(f"store {handle.location}: {missing}; {again}")
    wanted = json.loads(json.dumps(fingerprint))
    if stored != wanted:
        what = "other weights" if stored.get("weights_sha256") != wanted.get("weights_sha256") else "other settings"
        raise InputError(f"store {handle.location} was made by {what} ({_first_difference(stored, wanted)}); {again}")
    return attributes


def _open_root(root: Path):
    import zarr

    try:
        return zarr.open_group(store=str(root), mode="a", zarr_format=3, use_consolidated=False)
    except Exception as exc:  # a file where the store should be, a zarr v2 store, unreadable metadata, ...
        raise InputError(f"store {root}: cannot be opened as a Zarr v3 store ({_reason(exc)})") from None


def prepare_group(
    handle: BlockGroup, specs: ArraySpecs, fingerprint: dict, fresh: bool = False, log: TextIO | None = None
) -> BlockGroup:
    """Open or create `handle`'s group with every array of `specs` (plus `done`) and its fingerprint. Runs in
    the driver only.

    An existing group made with the same fingerprint is kept; its done blocks are checked (`scan`) and those
    that fail are made pending again, with one line on `log` (stderr). One made with another fingerprint is
    refused (InputError) unless `fresh`, which discards it. Damaged metadata: see the module docstring. A
    growing group (`GROWS`) gets at least `n_blocks` rows. The caller holds `group_lock` on the group (or one
    above it) from here until its reduction is done. Returns the handle with the group's `generation`: the
    tasks given it write nowhere else.
    """
    log = log or sys.stderr
    root = Path(handle.root)
    if root.exists() and not root.is_dir():
        raise InputError(f"store {root}: exists and is not a directory")
    fingerprint = json.loads(json.dumps(fingerprint))
    specs = dict(specs) | {"done": ((handle.n_blocks,), "uint8")}
    if root.is_dir():
        _check_metadata(root, handle.path, specs, fresh, log, fingerprint, handle.GROWS)
    g_root = _open_root(root)
    parent_path, _, leaf = handle.path.rpartition("/")
    try:
        parent = g_root.require_group(parent_path) if parent_path else g_root
        node = parent[leaf] if leaf in parent else None
    except Exception as exc:
        raise InputError(f"store {root}: metadata is damaged ({_reason(exc)}); pass --fresh to start again") from None
    if node is not None:
        stored = dict(node.attrs).get("fingerprint") if hasattr(node, "groups") else None
        if stored is None:
            _remove_tree(root / handle.path, root)
        elif stored != fingerprint:
            raise _other_settings(handle.location, stored, fingerprint)
        else:
            if handle.GROWS:
                _grow(node, specs, handle.n_blocks)
            handle = replace(handle, generation=str(dict(node.attrs).get("generation") or ""))
            handle.validate(log)
            return handle
    group = parent.create_group(leaf)
    for name, (shape, dtype) in specs.items():
        _create_array(group, name, shape, dtype)
    generation = uuid.uuid4().hex
    group.attrs.update({"fingerprint": fingerprint, "n_blocks": handle.n_blocks, "generation": generation})
    return replace(handle, generation=generation)


def _grow(group, specs: ArraySpecs, n_blocks: int) -> None:
    """Give every array of a growing group at least `n_blocks` rows (the rows written stay as they are)."""
    for name, (shape, _dtype) in specs.items():
        arr = group[name]
        if arr.shape[0] < n_blocks:
            arr.resize((n_blocks, *shape[1:]))
    if int(group.attrs.get("n_blocks", 0)) < n_blocks:
        group.attrs["n_blocks"] = n_blocks


def consolidate(root: str | Path, log: TextIO | None = None) -> bool:
    """Consolidate the store's metadata once, after every writer has finished.

    Consolidated metadata is a convenience for readers (nothing here reads it): if another group of the store
    cannot be consolidated (e.g. its metadata is damaged), say so in one line and go on. True if written.
    """
    import zarr

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "consolidated metadata is not part of the v3 spec" (known, intended)
            zarr.consolidate_metadata(str(Path(root).resolve()), zarr_format=3)
        return True
    except Exception as exc:
        print(f"store {root}: metadata not consolidated ({_reason(exc)})", file=log or sys.stderr, flush=True)
        return False
