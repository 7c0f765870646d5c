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
- Tasks only write their own rows (`SuiteStore.write_block`), data first and the done flag last. Zarr's
  `write_empty_chunks=False` means a missing chunk file is no completion signal; only `done` is.
- Everything a task writes is a deterministic function of (weights, suite, block index), so a re-executed task
  rewrites identical bytes and a restarted driver skips blocks whose done flag is set.
- The fingerprint (weights sha256, suite settings incl. seed and block size, failure mode, precision, cap)
  is compared on every open: a store made by other weights or settings is refused with one line, unless the
  caller asks for a fresh start.
- Metadata is consolidated once, by the driver, at the end (`consolidate`); readers mid-run and workers open
  without consolidated metadata.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arith.errors import InputError
from arith.verify import N_CCOLS, N_QCLASSES, BlockCounts

LAYOUT_VERSION = 1
VERIFY_GROUP = "verify"
DATA_ARRAYS = ("tested", "failed", "wrong_pos", "fail_x", "fail_y", "fail_op", "fail_pred", "n_fail_kept")
ALL_ARRAYS = (*DATA_ARRAYS, "done")


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


@dataclass(frozen=True)
class SuiteStore:
    """Handle on `verify/<suite>` of one store: small and picklable, so it travels inside every task."""

    root: str  # absolute path of <name>.zarr
    suite: str
    n_blocks: int
    n_digits: int
    cap: int

    @property
    def path(self) -> str:
        return f"{VERIFY_GROUP}/{self.suite}"

    @property
    def location(self) -> str:
        return f"{self.root}/{self.path}"

    def _array(self, name: str, mode: str = "r+"):
        import zarr

        return zarr.open_array(store=self.root, path=f"{self.path}/{name}", mode=mode, zarr_format=3)

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

    def done_mask(self) -> np.ndarray:
        return self._array("done", "r")[:].astype(bool)

    def pending(self) -> list[int]:
        return np.flatnonzero(~self.done_mask()).tolist()

    def read_counts(self) -> BlockCounts:
        """The sum over all blocks, failing examples in block order (what summing block by block gives)."""
        done = self.done_mask()
        if not done.all():
            raise InputError(f"store {self.location}: {int((~done).sum())} of {self.n_blocks} blocks are not done yet")
        data = {name: self._array(name, "r")[:] for name in DATA_ARRAYS}
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


def _open_root(root: Path):
    import zarr

    try:
        return zarr.open_group(store=str(root), mode="a", zarr_format=3, use_consolidated=False)
    except Exception as exc:  # a file where the store should be, a zarr v2 store, unreadable metadata, ...
        raise InputError(f"store {root}: cannot be opened as a Zarr v3 store ({type(exc).__name__}: {exc})") from None


def prepare_suite(
    root: str | Path,
    suite_name: str,
    fingerprint: dict,
    n_blocks: int,
    n_digits: int,
    cap: int,
    fresh: bool = False,
) -> SuiteStore:
    """Open or create `verify/<suite_name>` with every array and attribute. Runs in the driver only.

    An existing group made with the same fingerprint is kept (its done blocks are skipped by the caller);
    one made with another is refused (InputError) unless `fresh`, which discards it.
    """
    root = Path(root).resolve()
    if root.exists() and not root.is_dir():
        raise InputError(f"store {root}: exists and is not a directory")
    fingerprint = json.loads(json.dumps(fingerprint))
    handle = SuiteStore(str(root), suite_name, int(n_blocks), int(n_digits), int(cap))
    g_root = _open_root(root)
    g_verify = g_root.require_group(VERIFY_GROUP)
    specs = _array_specs(n_blocks, n_digits, cap)
    if suite_name in g_verify:
        node = g_verify[suite_name]
        stored = dict(node.attrs).get("fingerprint") if hasattr(node, "groups") else None
        if stored is None or fresh:
            # never completed by a driver (no fingerprint yet), or the caller wants a clean start
            del g_verify[suite_name]
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
            for name, (shape, dtype) in specs.items():
                arr = node.get(name)
                if arr is None or tuple(arr.shape) != shape or str(arr.dtype) != dtype:
                    raise InputError(f"store {handle.location}: array {name} is missing or damaged; pass --fresh")
            return handle
    group = g_verify.create_group(suite_name)
    for name, (shape, dtype) in specs.items():
        group.create_array(
            name,
            shape=shape,
            chunks=(1, *shape[1:]),  # one block row per chunk, unsharded: each task owns whole chunks
            dtype=dtype,
            fill_value=0,
            dimension_names=("block", *[f"d{i}" for i in range(1, len(shape))]),
        )
    group.attrs.update({"fingerprint": fingerprint, "n_blocks": n_blocks, "cap": cap, "n_digits": n_digits})
    return handle


def consolidate(root: str | Path) -> None:
    """Consolidate the store's metadata once, after every writer has finished."""
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "consolidated metadata is not part of the v3 spec" (known, intended)
        zarr.consolidate_metadata(str(Path(root).resolve()), zarr_format=3)
