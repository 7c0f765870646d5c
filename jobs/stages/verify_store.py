"""The verification layout of the store: `runs/<name>/<name>.zarr/verify/<suite>/` (a `hpc.store.BlockGroup`).

One row per block in every array, one chunk per row:

    tested      int64 [n_blocks, 4, 16]   questions per (ADD, SUB, NEG, MUL) x complexity class (+ UNKNOWN)
    failed      int64 [n_blocks, 4, 16]
    wrong_pos   int64 [n_blocks, n+2]     failed questions with a wrong token at each answer position
    fail_x      uint8 [n_blocks, cap, n]  the first `cap` failing questions of the block (zero padded)
    fail_y      uint8 [n_blocks, cap, n]
    fail_op     uint8 [n_blocks, cap]
    fail_pred   uint8 [n_blocks, cap, n+2] the model's greedy answer tokens for them (arith.verify)
    n_fail_kept int64 [n_blocks]          how many of the `cap` rows are real
    scoring     float64 [n_blocks, 2]     (questions fast scoring re-scored in fp32, its logit error bound),
                                          arith.scoring; (0, 0) in plain fp32
    done        uint8 [n_blocks]          1 once the row above is complete: written AFTER the data

Besides the generic checks of `hpc.store` (chunks exist and decode), a done block counts only when:
- `tested` holds exactly the block's questions, per operation (`expected_sizes`: the suite's block sizes,
  the last block of an operation may be shorter), and nothing of the operations the block does not test;
- 0 <= failed <= tested (elementwise), 0 <= wrong_pos <= the block's failed total, the re-check count a whole
  number from 0 to the block's questions and the logit error bound finite and >= 0,
  n_fail_kept <= min(failed, cap) (and >= 1 when there are failures and cap > 0), the kept examples are
  digits of the suite's operations and the padding rows are zero.
The fingerprint holds the weights sha256, the suite settings (seed, block size), the failure mode, the
precision, the cap and the layout version, but not a random suite's question count: its blocks are addressed
by (seed, operation, j), row j * len(ops) + (the operation's place in ops) (`block_rows`), so a run of more or
fewer questions of the same seed and block size shares the rows of the blocks both hold. The group grows to
the largest run's rows; a run uses and reports its own first rows only (the first N questions of the seed's
stream per operation), and a last block made for another size (shorter or longer than this run's) is redone,
without a damage line (`SuiteStore.outdated`).
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TextIO

import numpy as np

from arith.verify import N_CCOLS, N_QCLASSES, OP_NAMES, BlockCounts
from hpc.store import BlockGroup, prepare_group

# 2: write_empty_chunks=True, zstd with checksums; 3: `scoring`; 4: `scoring` checked as data; 5: random suites
# keep rows by (j, operation) and no question count in the fingerprint (a larger or smaller run shares blocks);
# 6: fail_pred holds the greedy answers (what `varith predict` prints), no longer the teacher-forced argmax
LAYOUT_VERSION = 6
VERIFY_GROUP = "verify"
DATA_ARRAYS = ("tested", "failed", "wrong_pos", "fail_x", "fail_y", "fail_op", "fail_pred", "n_fail_kept", "scoring")
ALL_ARRAYS = (*DATA_ARRAYS, "done")
# question-class rows of `tested`/`failed` per operation: ADD -> ADD; SUB -> SUB and NEG; MUL -> MUL
OP_ROWS = ((0,), (1, 2), (3,))
OP_WORDS = ("ADD", "SUB", "MUL")


def group_name(suite, trained_ops: tuple[int, ...]) -> str:
    """The suite's group under `verify/`: its name when it asks the operations the model was trained on (the
    default), else the name and the operations (`random-mul`), so a run with other `--ops` keeps its own blocks
    beside the default ones instead of meeting them as "other settings"."""
    if sorted(suite.ops) == sorted(trained_ops):
        return suite.name
    words = {value: word for word, value in OP_NAMES.items()}
    return "-".join([suite.name, *(words[op] for op in suite.ops)])


def _is_random(suite) -> bool:
    from arith.verify import RandomSuite

    return isinstance(suite, RandomSuite)


@functools.lru_cache(maxsize=8)
def block_rows(suite) -> np.ndarray:
    """int64 [n_blocks]: the store row of each of the suite's blocks (row == block, but for a random suite,
    whose block k is (operation k // blocks_per_op, j = k % blocks_per_op), row j * len(ops) + that operation's
    place: the same row whatever the question count)."""
    k = np.arange(suite.n_blocks, dtype=np.int64)
    if not _is_random(suite):
        return k
    bpo = suite.blocks_per_op
    return (k % bpo) * len(suite.ops) + k // bpo


def suite_block(suite, row: int) -> int:
    """The suite's block index stored in `row` (the inverse of `block_rows`)."""
    if not _is_random(suite):
        return row
    n_ops = len(suite.ops)
    return (row % n_ops) * suite.blocks_per_op + row // n_ops


@functools.lru_cache(maxsize=8)
def expected_sizes(suite) -> np.ndarray:
    """int64 [n_blocks, 3]: the questions row k of `suite`'s store holds per operation (ADD, SUB, MUL).

    Exhaustive and random suites cut each operation's questions into blocks of `block_size` (the last one of
    an operation may be shorter, arith.verify); curated suites are generated (they are small).
    """
    from arith.questions import exhaustive_count
    from arith.verify import ExhaustiveSuite, RandomSuite

    sizes = np.zeros((suite.n_blocks, 3), dtype=np.int64)
    if isinstance(suite, ExhaustiveSuite | RandomSuite):
        per_op = exhaustive_count(suite.n_digits) if isinstance(suite, ExhaustiveSuite) else suite.n_questions
        bpo = suite.blocks_per_op
        rows = block_rows(suite)
        for k in range(suite.n_blocks):
            op, j = suite.ops[k // bpo], k % bpo
            sizes[rows[k], op] = min(suite.block_size, per_op - j * suite.block_size)
        return sizes
    for k in range(suite.n_blocks):
        _x, _y, op = suite.block(k)
        sizes[k] = np.bincount(np.asarray(op, dtype=np.int64), minlength=3)[:3]
    return sizes


def make_fingerprint(weights_sha256: str, suite_fingerprint: dict, mode: str, precision: str, cap: int) -> dict:
    """What the stored numbers depend on, as JSON data (tuples become lists, so it survives a round trip)."""
    # a random suite's blocks are addressed by (seed, operation, j): its question count is no part of it
    suite_fingerprint = {k: v for k, v in suite_fingerprint.items() if k != "n_questions"}
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
        "scoring": ((n_blocks, 2), "float64"),
    }


@dataclass(frozen=True)
class SuiteStore(BlockGroup):
    """`verify/<suite>` of one store."""

    n_digits: int = 0
    cap: int = 0
    suite_spec: object = None  # the arith.verify suite: its block sizes are checked (None: sizes unchecked)

    DATA_ARRAYS: ClassVar[tuple[str, ...]] = DATA_ARRAYS
    GROWS: ClassVar[bool] = True  # random suites: a run of more or fewer questions shares the blocks (see above)

    @property
    def suite(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def write_block(self, k: int, counts: BlockCounts) -> None:
        """Write block k's row of every array, then its done flag. Called by the task that owns block k."""
        n, cap = self.n_digits, self.cap
        kept = min(len(counts.fail_op), cap)
        fx = np.zeros((cap, n), np.uint8)
        fy = np.zeros((cap, n), np.uint8)
        fo = np.zeros(cap, np.uint8)
        fp = np.zeros((cap, n + 2), np.uint8)
        fx[:kept], fy[:kept] = counts.fail_x[:kept], counts.fail_y[:kept]
        fo[:kept], fp[:kept] = counts.fail_op[:kept], counts.fail_pred[:kept]
        self.write_rows(
            k,
            {
                "tested": counts.tested.astype(np.int64),
                "failed": counts.failed.astype(np.int64),
                "wrong_pos": counts.wrong_pos.astype(np.int64),
                "fail_x": fx,
                "fail_y": fy,
                "fail_op": fo,
                "fail_pred": fp,
                "n_fail_kept": np.int64(kept),
                "scoring": np.array([counts.rechecked, counts.bound], dtype=np.float64),
            },
        )

    def check_rows(self, blocks: np.ndarray, data: dict[str, np.ndarray]) -> dict[int, str]:
        problems: dict[int, str] = {}
        b = blocks
        tested, failed = data["tested"][b], data["failed"][b]
        wrong_pos, kept = data["wrong_pos"][b], data["n_fail_kept"][b]
        fx, fy, fo, fp = (data[n][b] for n in ("fail_x", "fail_y", "fail_op", "fail_pred"))
        sc = data["scoring"][b]
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
            elif not (np.isfinite(sc[i]).all() and 0 <= sc[i, 0] <= tested[i].sum() and sc[i, 0] == int(sc[i, 0])):
                why = "re-check counts out of range"
            elif sc[i, 1] < 0:
                why = "negative logit error bound"
            else:
                r = real[i]
                if (fx[i][r] > 9).any() or (fy[i][r] > 9).any() or not set(fo[i][r].tolist()) <= ops:
                    why = "failing examples out of range"
                elif fx[i][~r].any() or fy[i][~r].any() or fo[i][~r].any() or fp[i][~r].any():
                    why = "failing examples padding not zero"
            if why:
                problems[k] = why
        return problems

    def outdated(self, problems: dict[int, str], data: dict[str, np.ndarray]) -> set[int]:
        """Rows of a random suite that hold a whole block of another question count: only the row's own
        operation tested, between 1 and block_size questions, other than this run's size (its last block)."""
        suite = self.suite_spec
        if not _is_random(suite) or not problems:
            return set()
        rows = np.array(sorted(problems), dtype=np.int64)
        tested = data["tested"][rows]
        per_op = np.stack([tested[:, list(r)].sum(axis=(1, 2)) for r in OP_ROWS], axis=1)  # [B, 3]
        expected = expected_sizes(suite)[rows]
        old = set()
        for i, k in enumerate(rows.tolist()):
            op = int(np.flatnonzero(expected[i])[0])
            others = np.delete(per_op[i], op)
            if not others.any() and 1 <= per_op[i, op] <= suite.block_size and per_op[i, op] != expected[i, op]:
                old.add(k)
        return old

    def read_counts(self) -> BlockCounts:
        """The sum over all blocks, failing examples in block order (what summing block by block gives).

        Every block is checked first: a damaged one raises `StoreDamage` (never a count from a hole), blocks
        not done yet an InputError.
        """
        data = self.read_checked()
        if self.suite_spec is not None:  # rows in the suite's block order (a random suite's rows interleave)
            order = block_rows(self.suite_spec)
            data = {name: value[order] for name, value in data.items()}
        scoring = data["scoring"]
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
            rechecked=int(scoring[:, 0].sum()),
            bound=float(scoring[:, 1].max()) if len(scoring) else 0.0,
        )


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
    """Open or create `verify/<suite_name>` (see `hpc.store.prepare_group`). `suite` (the arith.verify suite)
    lets the checks compare each block's question count."""
    if suite is not None and suite.n_blocks != n_blocks:
        raise ValueError(f"suite has {suite.n_blocks} blocks, {n_blocks} given")
    root = Path(root).resolve()
    handle = SuiteStore(str(root), f"{VERIFY_GROUP}/{suite_name}", int(n_blocks), int(n_digits), int(cap), suite)
    return prepare_group(handle, _array_specs(n_blocks, n_digits, cap), fingerprint, fresh, log or sys.stderr)
