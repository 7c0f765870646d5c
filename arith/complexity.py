"""Question complexity classes (docs/reference_facts.md F9), computed for whole digit grids at once.

Columns are numbered k = 0 for the units. For column k let a, b be the k-th digits of the two operands.

Addition: MC[k] = a+b > 9 (makes a carry), MS[k] = a+b == 9 (sum 9, passes a carry on).
    S0 when no column carries; otherwise S(1+c), where c is the longest run of sum-9 columns
    k+1, k+2, ... directly above some carrying column k, capped at 4 (S1 = carries, but no carry
    runs into a sum-9 column; S5 = a carry runs up through 4 or more sum-9 columns).
    Sum-9 columns below a carry never count.
Subtraction with x - y >= 0 (Math.Sub): BO[k] = a < b (borrow), MZ[k] = a == b (zero difference,
    leading 0-0 columns included). M0 when no column borrows; otherwise M(1+c), with c the longest
    run of MZ columns directly above a borrow, capped at 3 ("M4+").
Subtraction with x - y < 0 (Math.Neg): as for Math.Sub, but MZ is cleared above the highest column
    in which either operand has a non-zero digit (max_question_digit), so a run ends at or below
    that column. N1 .. N4+ (a negative answer always has a borrow, so it is at least N1).
Multiplication has no classes: UNKNOWN (-1).

A run is only ever counted upwards from a carrying/borrowing column, so the grid is scanned once from
the most significant column down, keeping for every question the length of the MS / MZ run just above
the current column. The loop is over the n columns only; each step is a whole-array uint8 operation.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from arith.errors import InputError
from arith.vocab import ADD, MUL, SUB

CLASSES = ("S0", "S1", "S2", "S3", "S4", "S5", "M0", "M1", "M2", "M3", "M4+", "N1", "N2", "N3", "N4+")
N_CLASSES = len(CLASSES)
UNKNOWN = -1

# where each family starts in CLASSES, and its top class (the "+" classes absorb longer runs)
S_BASE, M_BASE, N_BASE = 0, 6, 11
S_TOP, M_TOP, N_TOP = 5, 10, 14
CLASS_INDEX = {name: i for i, name in enumerate(CLASSES)}

# the major tag of each family, as in `Math.Add.S3` and the behaviour-file tags `Math.Add:S1234`
MAJOR_TAGS = ("Math.Add", "Math.Sub", "Math.Neg")
UNKNOWN_NAME = "UNKNOWN"
UNKNOWN_GROUP = "Unknown"


def _as_grids(x, y, op) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(x)
    y = np.asarray(y)
    op = np.asarray(op)
    if x.ndim != 2 or x.shape != y.shape:
        raise InputError(f"operands must be digit grids of the same shape [N, n], got {x.shape} and {y.shape}")
    if op.shape != (x.shape[0],):
        raise InputError(f"op must have shape [{x.shape[0]}], got {op.shape}")
    if x.shape[1] < 1:
        raise InputError("digit grids need at least one column")
    x = _digits(x, "x")
    y = _digits(y, "y")
    if op.size:
        bad = (op != ADD) & (op != SUB) & (op != MUL)
        if bad.any():
            raise InputError(f"unknown operation code {op[bad.argmax()]} (expected ADD, SUB or MUL)")
    return x, y, op.astype(np.uint8, copy=False)


def _digits(grid: np.ndarray, name: str) -> np.ndarray:
    if grid.dtype.kind not in "iub":
        raise InputError(f"{name} must be an integer digit grid, got dtype {grid.dtype}")
    if grid.size and (grid.max() > 9 or (grid.dtype.kind == "i" and grid.min() < 0)):
        raise InputError(f"{name} holds values outside 0..9; expected one digit per cell")
    return grid.astype(np.uint8, copy=False)


def _add_level(xt: np.ndarray, yt: np.ndarray) -> np.ndarray:
    """Per question: 0 if no carry, else 1 + (longest sum-9 run directly above a carrying column). uint8."""
    n, N = xt.shape
    level = np.zeros(N, np.uint8)
    run = np.zeros(N, np.uint8)  # sum-9 run starting just above the current column
    s = np.empty(N, np.uint8)
    cand = np.empty(N, np.uint8)
    for row in range(n):  # row 0 is the most significant column, so this walks k = n-1 down to 0
        np.add(xt[row], yt[row], out=s)
        np.add(run, 1, out=cand)
        cand *= s > 9
        np.maximum(level, cand, out=level)
        run += 1
        run *= s == 9
    return level


def _sub_levels(xt: np.ndarray, yt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per question: (x < y, level for Math.Sub, level for Math.Neg).

    A level is 0 with no borrow, else 1 + (longest run of zero-difference columns directly above a borrowing
    column).
    The Neg level only counts zero-difference columns at or below the highest column holding a non-zero digit.
    """
    n, N = xt.shape
    less = np.zeros(N, bool)
    equal = np.ones(N, bool)  # all columns above the current one are equal
    seen = np.zeros(N, bool)  # some column at or above the current one holds a non-zero digit
    level_pos = np.zeros(N, np.uint8)
    level_neg = np.zeros(N, np.uint8)
    run_pos = np.zeros(N, np.uint8)
    run_neg = np.zeros(N, np.uint8)
    cand = np.empty(N, np.uint8)
    for row in range(n):
        a, b = xt[row], yt[row]
        borrow = a < b
        zero = a == b
        seen |= (a | b) != 0
        less |= equal & borrow
        equal &= zero
        np.add(run_pos, 1, out=cand)
        cand *= borrow
        np.maximum(level_pos, cand, out=level_pos)
        np.add(run_neg, 1, out=cand)
        cand *= borrow
        np.maximum(level_neg, cand, out=level_neg)
        run_pos += 1
        run_pos *= zero
        run_neg += 1
        run_neg *= zero & seen
    return less, level_pos, level_neg


def classify(x, y, op) -> np.ndarray:
    """Complexity class of each question: an index into CLASSES (int8 [N]), UNKNOWN (-1) for multiplication.

    `x`, `y`: digit grids uint8 [N, n], most significant digit first (column n-1-k holds digit k);
    `op`: uint8 [N] with arith.vocab.ADD / SUB / MUL.
    """
    x, y, op = _as_grids(x, y, op)
    out = np.full(x.shape[0], UNKNOWN, np.int8)
    is_add = op == ADD
    is_sub = op == SUB
    has_add = bool(is_add.any())
    has_sub = bool(is_sub.any())
    if not (has_add or has_sub):
        return out
    # Column-major copies make every per-column step contiguous. With mixed operations both families are
    # computed for every row and the right one picked: cheaper than gathering rows with a boolean mask.
    xt = np.ascontiguousarray(x.T)
    yt = np.ascontiguousarray(y.T)

    if has_add:
        level = _add_level(xt, yt)
        np.minimum(level, S_TOP - S_BASE, out=level)
        level += S_BASE
        np.copyto(out, level.view(np.int8), where=is_add)

    if has_sub:
        less, level_pos, level_neg = _sub_levels(xt, yt)
        np.minimum(level_pos, M_TOP - M_BASE, out=level_pos)
        level_pos += M_BASE
        codes = level_pos.view(np.int8)
        # Neg level 1..4 -> N1..N4+; level 0 (no borrow) cannot happen for x < y and stays UNKNOWN
        np.minimum(level_neg, N_TOP - N_BASE + 1, out=level_neg)
        neg_codes = level_neg.view(np.int8) + np.int8(N_BASE - 1)
        neg_codes[level_neg == 0] = UNKNOWN
        np.copyto(codes, neg_codes, where=less)
        np.copyto(out, codes, where=is_sub)
    return out


def _check_code(code: int) -> int:
    code = int(code)
    if not UNKNOWN <= code < N_CLASSES:
        raise InputError(f"complexity code {code} is not one of -1..{N_CLASSES - 1}")
    return code


def class_name(code: int) -> str:
    """`S3`, `M4+`, `N1`, ... or `UNKNOWN`."""
    code = _check_code(code)
    return UNKNOWN_NAME if code == UNKNOWN else CLASSES[code]


def class_names(codes: Iterable[int] | np.ndarray) -> list[str]:
    """Names for many codes (see class_name)."""
    table = (*CLASSES, UNKNOWN_NAME)  # index -1 picks UNKNOWN_NAME
    codes = np.asarray(codes)
    if codes.size and (codes.min() < UNKNOWN or codes.max() >= N_CLASSES):
        bad = codes[(codes < UNKNOWN) | (codes >= N_CLASSES)][0]
        raise InputError(f"complexity code {int(bad)} is not one of -1..{N_CLASSES - 1}")
    return [table[c] for c in codes.tolist()]


def major_tag(code: int) -> str:
    """`Math.Add`, `Math.Sub` or `Math.Neg` (the question family); `Unknown` for UNKNOWN."""
    code = _check_code(code)
    if code == UNKNOWN:
        return UNKNOWN_GROUP
    return MAJOR_TAGS[0 if code < M_BASE else 1 if code < N_BASE else 2]


def group_name(code: int) -> str:
    """`Math.Add.S3`, `Math.Sub.M0`, `Math.Neg.N1`, ... (per-class accuracy groups); `Unknown` for UNKNOWN."""
    code = _check_code(code)
    if code == UNKNOWN:
        return UNKNOWN_GROUP
    return f"{major_tag(code)}.{CLASSES[code]}"


def code_of(name: str) -> int:
    """Inverse of class_name: `S3` -> 3, `UNKNOWN` -> -1. Raises InputError for anything else."""
    if name == UNKNOWN_NAME:
        return UNKNOWN
    try:
        return CLASS_INDEX[name]
    except KeyError:
        raise InputError(f"unknown complexity class {name!r} (expected one of {', '.join(CLASSES)})") from None
