"""Zarr layout of verification results: `runs/<name>/<name>.zarr/verify/<suite>/`.

One row per block in every array, and one chunk per row (unsharded), so the task that scores block k owns
whole chunks and no two writers ever touch the same object (hpc_stack.md 3.4):

    tested      int64 [n_blocks, 4, 16]   questions per (ADD, SUB, NEG, MUL) x complexity class (+ UNKNOWN)
    failed      int64 [n_blocks, 4, 16]
    wrong_pos   int64 [n_blocks, n+2]     failed questions with a wrong token at each answer position
    fail_x      uint8 [n_blocks, cap, n]  the first `cap` failing questions of the block (zero padded)
    fail_y      uint8 [n_blocks, cap, n]
    fail_op     uint8 [n_blocks, cap]
    fail_pred   uint8 [n_blocks, cap, n+2] the model's answer tokens for them
    n_fail_kept int64 [n_blocks]          how many of the `cap` rows are real
    done        uint8 [n_blocks]          1 once the row above is complete: written AFTER the data

Rules this module keeps:
- The driver creates the groups, every array and the attributes before any task runs (`prepare_suite`); the
  suite group's `fingerprint` attribute is written last, so a group without it was never handed to a task and
  is simply rebuilt.
- Tasks only write their own rows (`SuiteStore.write_block`), data first and the done flag last. The data
  arrays are written with `write_empty_chunks=True` (layout 2), so every row a task wrote has a chunk file of
  every data array, zeros included: a missing data chunk of a done block is damage, never "all zero". `done`
  keeps zarr's default (a cleared flag deletes its chunk); a missing `done` chunk means "not done".
- Every chunk is zstd-compressed with its checksum on, so a truncated or garbled chunk fails to decode
  instead of reading back as other numbers.
- Everything a task writes is a deterministic function of (weights, suite, block index), so a re-executed task
  rewrites identical bytes and a restarted driver skips blocks whose done flag is set.
- The fingerprint (weights sha256, suite settings incl. seed and block size, failure mode, precision, cap,
  layout version) is compared on every open: a store made by other weights or settings is refused with one
  line, unless the caller asks for a fresh start.
- Metadata is consolidated once, by the driver, at the end (`consolidate`); the driver drops the consolidated
  copy when it opens the store (it is a cache that would go stale mid-run, and nothing here reads it), and
  readers mid-run and workers open without consolidated metadata.

A damaged store never yields a verdict. Per done block, before it counts (`SuiteStore.scan`):
- every data chunk exists on disk and decodes;
- `tested` holds exactly the block's questions, per operation (`expected_sizes`: the suite's block sizes,
  the last block of an operation may be shorter), and nothing of the operations the block does not test;
- 0 <= failed <= tested (elementwise), 0 <= wrong_pos <= the block's failed total,
  n_fail_kept <= min(failed, cap) (and >= 1 when there are failures and cap > 0), the kept examples are
  digits of the suite's operations and the padding rows are zero.
A block that fails a check is not done: the driver clears its done flag, says so in one line on stderr
("store ...: blocks 3, 7 failed their checks (...); redoing them") and runs it again. This happens when the
driver opens an existing store (`prepare_suite`: damaged blocks go into `pending()`) and again in the
reduction (`read_counts` raises `StoreDamage`, the driver redoes those blocks and reduces again).

A corrupt `done` chunk (unreadable, or a value other than 0/1) is treated as "not done": the block is redone,
which gives the true result; the user sees the one stderr line, not an error.

Damaged metadata (a `zarr.json` that is not JSON, not a zarr v3 node of the expected kind, or an array whose
shape, type, chunks or codecs differ from this layout's) is one InputError line naming the file and asking
for `--fresh`. With `fresh=True` (`--fresh`) the driver repairs it: it rewrites a damaged root or `verify`
group metadata file (only when the store folder holds nothing but `zarr.json` and `verify/`, i.e. it is a
store we made), and removes this suite's group folder `verify/<suite>/` and builds it again. A suite group
whose own `zarr.json` is missing lost its fingerprint and is rebuilt, like one never handed to a task.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from arith.errors import InputError
from arith.verify import N_CCOLS, N_QCLASSES, BlockCounts

LAYOUT_VERSION = 2  # 2: data arrays written with write_empty_chunks=True, zstd with checksums
VERIFY_GROUP = "verify"
DATA_ARRAYS = ("tested", "failed", "wrong_pos", "fail_x", "fail_y", "fail_op", "fail_pred", "n_fail_kept")
ALL_ARRAYS = (*DATA_ARRAYS, "done")
# question-class rows of `tested`/`failed` per operation: ADD -> ADD; SUB -> SUB and NEG; MUL -> MUL
OP_ROWS = ((0,), (1, 2), (3,))
OP_WORDS = ("ADD", "SUB", "MUL")
_META_KEYS = ("shape", "data_type", "chunk_grid", "chunk_key_encoding", "fill_value", "codecs")


class StoreDamage(InputError):
    """Done blocks of a store failed their checks; `problems` maps block -> the first failed check."""

    def __init__(self, location: str, problems: dict[int, str]):
        self.location = location
        self.problems = dict(problems)
        super().__init__(f"store {location}: {describe_problems(problems)}; run again to redo them")


def describe_problems(problems: dict[int, str], limit: int = 10) -> str:
    """One line: 'blocks 3, 7 failed their checks (3: failed chunk missing; 7: ...)'."""
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
    word = "block" if len(blocks) == 1 else "blocks"
    return f"{word} {shown} failed their checks ({why})"


@functools.lru_cache(maxsize=8)
def expected_sizes(suite) -> np.ndarray:
    """int64 [n_blocks, 3]: the questions block k of `suite` holds per operation (ADD, SUB, MUL).

    Exhaustive and random suites cut each operation's questions into blocks of `block_size` (the last one of
    an operation may be shorter, arith.verify); curated suites are generated (they are small).
    """
    from arith.questions import exhaustive_count
    from arith.verify import ExhaustiveSuite, RandomSuite

    sizes = np.zeros((suite.n_blocks, 3), dtype=np.int64)
    if isinstance(suite, ExhaustiveSuite | RandomSuite):
        per_op = exhaustive_count(suite.n_digits) if isinstance(suite, ExhaustiveSuite) else suite.n_questions
        bpo = suite.blocks_per_op
        for k in range(suite.n_blocks):
            op, j = suite.ops[k // bpo], k % bpo
            sizes[k, op] = min(suite.block_size, per_op - j * suite.block_size)
        return sizes
    for k in range(suite.n_blocks):
        _x, _y, op = suite.block(k)
        sizes[k] = np.bincount(np.asarray(op, dtype=np.int64), minlength=3)[:3]
    return sizes


def default_store_path(weights: str | Path, name: str) -> Path:
    """`<name>.zarr` beside the weights: runs/<name>/<name>.pth -> runs/<name>/<name>.zarr."""
    return Path(weights).resolve().parent / f"{name}.zarr"


def make_fingerprint(weights_sha256: str, suite_fingerprint: dict, mode: str, precision: str, cap: int) -> dict:
    """What the stored numbers depend on, as JSON data (tuples become lists, so it survives a round trip)."""
    fp = {
        "layout": LAYOUT_VERSION,
        "weights_sha256": weights_sha256,
        "suite": suite_fingerprint,
        "seed": suite_fingerprint.get("seed"),
        "block_size": suite_fingerprint.get("block_size"),
        "mode": mode,
        "precision": precision,
        "cap": cap,
    }
    return json.loads(json.dumps(fp))


def _array_specs(n_blocks: int, n_digits: int, cap: int) -> dict[str, tuple[tuple[int, ...], str]]:
    a = n_digits + 2
    return {
        "tested": ((n_blocks, N_QCLASSES, N_CCOLS), "int64"),
        "failed": ((n_blocks, N_QCLASSES, N_CCOLS), "int64"),
        "wrong_pos": ((n_blocks, a), "int64"),
        "fail_x": ((n_blocks, cap, n_digits), "uint8"),
        "fail_y": ((n_blocks, cap, n_digits), "uint8"),
        "fail_op": ((n_blocks, cap), "uint8"),
        "fail_pred": ((n_blocks, cap, a), "uint8"),
        "n_fail_kept": ((n_blocks,), "int64"),
        "done": ((n_blocks,), "uint8"),
    }


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
class SuiteStore:
    """Handle on `verify/<suite>` of one store: small and picklable, so it travels inside every task."""

    root: str  # absolute path of <name>.zarr
    suite: str
    n_blocks: int
    n_digits: int
    cap: int
    suite_spec: object = None  # the arith.verify suite: its block sizes are checked (None: sizes unchecked)

    @property
    def path(self) -> str:
        return f"{VERIFY_GROUP}/{self.suite}"

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
                "pass --fresh to start this suite again"
            ) from None
        if name in DATA_ARRAYS:
            # every row a task writes has a chunk of every data array, zeros included: absence means damage
            arr = arr.with_config({"write_empty_chunks": True})
        return arr

    def chunk_path(self, name: str, k: int, ndim: int) -> Path:
        """The file of block k's chunk of array `name` (zarr v3 default key encoding: c/k/0/...)."""
        return Path(self.location, name, "c", str(k), *(["0"] * (ndim - 1)))

    def write_block(self, k: int, counts: BlockCounts) -> None:
        """Write block k's row of every array, then its done flag. Called by the task that owns block k."""
        if not 0 <= k < self.n_blocks:
            raise IndexError(f"block {k} outside 0..{self.n_blocks - 1}")
        n, cap = self.n_digits, self.cap
        kept = min(len(counts.fail_op), cap)
        fx = np.zeros((cap, n), np.uint8)
        fy = np.zeros((cap, n), np.uint8)
        fo = np.zeros(cap, np.uint8)
        fp = np.zeros((cap, n + 2), np.uint8)
        fx[:kept], fy[:kept] = counts.fail_x[:kept], counts.fail_y[:kept]
        fo[:kept], fp[:kept] = counts.fail_op[:kept], counts.fail_pred[:kept]
        rows = {
            "tested": counts.tested.astype(np.int64),
            "failed": counts.failed.astype(np.int64),
            "wrong_pos": counts.wrong_pos.astype(np.int64),
            "fail_x": fx,
            "fail_y": fy,
            "fail_op": fo,
            "fail_pred": fp,
            "n_fail_kept": np.int64(kept),
        }
        for name in DATA_ARRAYS:
            self._array(name)[k] = rows[name]
        self._array("done")[k] = 1  # last: the row is complete

    def _read(self, name: str) -> tuple[np.ndarray, dict[int, str]]:
        """The whole array, and the blocks whose chunk would not decode (read as zeros here)."""
        arr = self._array(name, "r")
        try:
            return np.asarray(arr[:]), {}
        except Exception:  # one or more damaged chunks: find them
            out = np.zeros(arr.shape, dtype=arr.dtype)
            bad: dict[int, str] = {}
            for k in range(arr.shape[0]):
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
        for name in DATA_ARRAYS:
            data[name], bad = self._read(name)
            for k, why in bad.items():
                unreadable.setdefault(k, why)
        for k, why in self._check_rows(np.flatnonzero(done), data, unreadable).items():
            problems.setdefault(k, why)
        done[list(problems)] = False
        return done, problems, data

    def _check_rows(self, blocks: np.ndarray, data: dict, unreadable: dict[int, str]) -> dict[int, str]:
        """block -> the first failed check, for the given (done) blocks."""
        problems: dict[int, str] = {}
        if len(blocks) == 0:
            return problems
        ndims = {name: data[name].ndim for name in DATA_ARRAYS}
        for k in blocks.tolist():
            if k in unreadable:
                problems[k] = unreadable[k]
                continue
            for name in DATA_ARRAYS:
                if not self.chunk_path(name, k, ndims[name]).is_file():
                    problems[k] = f"{name} chunk missing"
                    break
        b = blocks
        tested, failed = data["tested"][b], data["failed"][b]
        wrong_pos, kept = data["wrong_pos"][b], data["n_fail_kept"][b]
        fx, fy, fo, fp = (data[n][b] for n in ("fail_x", "fail_y", "fail_op", "fail_pred"))
        ftot = failed.sum(axis=(1, 2))
        per_op = np.stack([tested[:, list(rows)].sum(axis=(1, 2)) for rows in OP_ROWS], axis=1)  # [B, 3]
        expected = None
        if self.suite_spec is not None:
            expected = expected_sizes(self.suite_spec)[b]
        ops = set(getattr(self.suite_spec, "ops", (0, 1, 2)))
        real = np.arange(self.cap)[None, :] < kept[:, None]  # [B, cap]
        for i, k in enumerate(b.tolist()):
            if k in problems:
                continue
            why = None
            if (tested[i] < 0).any() or (failed[i] < 0).any() or (wrong_pos[i] < 0).any() or kept[i] < 0:
                why = "negative counts"
            elif expected is not None and (per_op[i] != expected[i]).any():
                j = int(np.flatnonzero(per_op[i] != expected[i])[0])
                why = f"tested {int(per_op[i, j]):,} {OP_WORDS[j]} questions, the block has {int(expected[i, j]):,}"
            elif (failed[i] > tested[i]).any():
                why = "failed > tested"
            elif (wrong_pos[i] > ftot[i]).any():
                why = "wrong answer positions > failed"
            elif kept[i] > min(int(ftot[i]), self.cap) or (kept[i] == 0 and ftot[i] > 0 and self.cap > 0):
                why = f"n_fail_kept {int(kept[i])} with {int(ftot[i]):,} failed and cap {self.cap}"
            else:
                r = real[i]
                if (fx[i][r] > 9).any() or (fy[i][r] > 9).any() or not set(fo[i][r].tolist()) <= ops:
                    why = "failing examples out of range"
                elif fx[i][~r].any() or fy[i][~r].any() or fo[i][~r].any() or fp[i][~r].any():
                    why = "failing examples padding not zero"
            if why:
                problems[k] = why
        return problems

    def done_mask(self) -> np.ndarray:
        """Blocks whose done flag is 1 (a damaged flag counts as not done)."""
        done, _bad = self._read("done")
        return done == 1

    def pending(self) -> list[int]:
        return np.flatnonzero(~self.done_mask()).tolist()

    def repair(self, problems: dict[int, str], stream: TextIO | None = None, action: str = "redoing them") -> None:
        """Clear the done flags of `problems`' blocks (so they are pending) and say so in one line on stderr."""
        if not problems:
            return
        done = self._array("done")
        for k in sorted(problems):
            done[k] = 0  # a whole-chunk write: a garbage chunk is replaced (here: deleted), never read
        print(f"store {self.location}: {describe_problems(problems)}; {action}", file=stream or sys.stderr, flush=True)

    def validate(self, stream: TextIO | None = None) -> dict[int, str]:
        """Check every done block; clear the flags of those that fail (they become pending). Returns them."""
        _done, problems, _data = self.scan()
        self.repair(problems, stream)
        return problems

    def read_counts(self) -> BlockCounts:
        """The sum over all blocks, failing examples in block order (what summing block by block gives).

        Every block is checked first: a damaged one raises `StoreDamage` (never a count from a hole), blocks
        not done yet an InputError.
        """
        done, problems, data = self.scan()
        if problems:
            raise StoreDamage(self.location, problems)
        if not done.all():
            raise InputError(f"store {self.location}: {int((~done).sum())} of {self.n_blocks} blocks are not done yet")
        kept = data["n_fail_kept"].astype(np.int64)
        mask = np.arange(self.cap)[None, :] < kept[:, None]  # [n_blocks, cap], row-major = block order
        return BlockCounts(
            tested=data["tested"].sum(axis=0, dtype=np.int64),
            failed=data["failed"].sum(axis=0, dtype=np.int64),
            wrong_pos=data["wrong_pos"].sum(axis=0, dtype=np.int64),
            fail_x=data["fail_x"][mask].astype(np.uint8),
            fail_y=data["fail_y"][mask].astype(np.uint8),
            fail_op=data["fail_op"][mask].astype(np.uint8),
            fail_pred=data["fail_pred"][mask].astype(np.uint8),
        )


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


def _owned(root: Path) -> bool:
    """Whether the folder holds nothing but what a varith store has (so --fresh may rewrite its root)."""
    try:
        return set(os.listdir(root)) <= {"zarr.json", VERIFY_GROUP}
    except OSError:
        return False


def _remove_tree(path: Path, root: Path) -> None:
    """Remove a group folder of our store (never a link, never outside the store)."""
    path = Path(path)
    if path.is_symlink() or not path.resolve().is_relative_to(root) or path.resolve() == root:
        raise InputError(f"store {root}: refusing to remove {path}")
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _check_metadata(root: Path, suite_name: str, specs: dict, fresh: bool, log: TextIO) -> None:
    """Raw checks of every metadata file this suite depends on, before zarr parses any of them.

    Damaged root/verify group metadata: InputError, or with `fresh` rewritten (root: only for a store folder
    we own). This suite's group and arrays: InputError, or with `fresh` the suite folder is removed. The
    consolidated copy in the root metadata is dropped (a cache; rewritten at the end by `consolidate`).
    """

    def refuse(what: Path, why: str):
        raise InputError(f"store {root}: {what} is damaged ({why}); pass --fresh to start this suite again")

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

    verify = root / VERIFY_GROUP
    if verify.exists() and not verify.is_dir():
        if not fresh:
            refuse(verify, "a file, not a folder")
        _remove_tree(verify, root)
    try:
        _read_node_meta(verify / "zarr.json", "group")
    except _Damaged as exc:
        if not fresh:
            refuse(verify / "zarr.json", str(exc))
        print(f"store {root}: {verify / 'zarr.json'} is damaged ({exc}); writing it again (--fresh)", file=log)
        _remove_tree(verify / "zarr.json", root)

    group = verify / suite_name
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
    for name, (shape, dtype) in specs.items():
        path = group / name / "zarr.json"
        try:
            ameta = _read_node_meta(path, "array")
        except _Damaged as exc:
            refuse(path, str(exc))
        if ameta is None:
            refuse(path, "missing")
        wanted = _expected_array_meta(shape, dtype)
        for key in _META_KEYS:
            if ameta.get(key) != wanted[key]:
                refuse(path, f"{key} {json.dumps(ameta.get(key))[:80]} here, {json.dumps(wanted[key])[:80]} expected")


def _open_root(root: Path):
    import zarr

    try:
        return zarr.open_group(store=str(root), mode="a", zarr_format=3, use_consolidated=False)
    except Exception as exc:  # a file where the store should be, a zarr v2 store, unreadable metadata, ...
        raise InputError(f"store {root}: cannot be opened as a Zarr v3 store ({_reason(exc)})") from None


def prepare_suite(
    root: str | Path,
    suite_name: str,
    fingerprint: dict,
    n_blocks: int,
    n_digits: int,
    cap: int,
    fresh: bool = False,
    suite=None,
    log: TextIO | None = None,
) -> SuiteStore:
    """Open or create `verify/<suite_name>` with every array and attribute. Runs in the driver only.

    An existing group made with the same fingerprint is kept; its done blocks are checked (`SuiteStore.scan`)
    and those that fail are made pending again, with one line on `log` (stderr). One made with another
    fingerprint is refused (InputError) unless `fresh`, which discards it. Damaged metadata: see the module
    docstring. `suite` (the arith.verify suite) lets the checks compare each block's question count.
    """
    log = log or sys.stderr
    root = Path(root).resolve()
    if root.exists() and not root.is_dir():
        raise InputError(f"store {root}: exists and is not a directory")
    fingerprint = json.loads(json.dumps(fingerprint))
    if suite is not None and suite.n_blocks != n_blocks:
        raise ValueError(f"suite has {suite.n_blocks} blocks, {n_blocks} given")
    handle = SuiteStore(str(root), suite_name, int(n_blocks), int(n_digits), int(cap), suite)
    specs = _array_specs(n_blocks, n_digits, cap)
    if root.is_dir():
        _check_metadata(root, suite_name, specs, fresh, log)
    g_root = _open_root(root)
    try:
        g_verify = g_root.require_group(VERIFY_GROUP)
        node = g_verify[suite_name] if suite_name in g_verify else None
    except Exception as exc:
        raise InputError(
            f"store {root}: metadata is damaged ({_reason(exc)}); pass --fresh to start this suite again"
        ) from None
    if node is not None:
        stored = dict(node.attrs).get("fingerprint") if hasattr(node, "groups") else None
        if stored is None:
            _remove_tree(root / VERIFY_GROUP / suite_name, root)
        elif stored != fingerprint:
            if stored.get("weights_sha256") != fingerprint["weights_sha256"]:
                what = "other weights"
                here, asked = str(stored.get("weights_sha256"))[:12], fingerprint["weights_sha256"][:12]
                detail = f"sha256 {here}... here, {asked}... asked"
            else:
                what, detail = "other settings", _first_difference(stored, fingerprint)
            raise InputError(
                f"store {handle.location} was made by {what} ({detail}); "
                "pass --fresh to discard it or --store to use another"
            )
        else:
            handle.validate(log)
            return handle
    group = g_verify.create_group(suite_name)
    for name, (shape, dtype) in specs.items():
        _create_array(group, name, shape, dtype)
    group.attrs.update({"fingerprint": fingerprint, "n_blocks": n_blocks, "cap": cap, "n_digits": n_digits})
    return handle


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
