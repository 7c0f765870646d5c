"""Fixed question suites: hand-picked complexity examples and tricase questions
(docs/reference_facts.md F6.3, F6.4).

The reference keeps hand-typed lists of questions per complexity class. Here each class's examples are
built by rule from digit-column patterns that realise the class (a carry followed by a run of sum-9
columns, a borrow followed by a run of zero-difference columns, ...), drawn from a generator seeded by
(seed, "handpicked", class index), and every question is checked with `classify`, so a returned label
is always what `classify` says. The literal examples quoted in F6.3 come first wherever they fit.

Column patterns are written units first (index k = 0 is the units column); digit grids are most
significant first.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import numpy as np

from arith.complexity import CLASS_INDEX, CLASSES, N_CLASSES, classify
from arith.errors import InputError
from arith.vocab import ADD, MAX_DIGITS, SUB

# The examples quoted in F6.3, with the class the reference's lists give them.
LITERAL_EXAMPLES = (
    ("S0", 12345, ADD, 33333),
    ("S3", 555, ADD, 445),
    ("S5", 54545, ADD, 45455),
    ("M0", 99111, SUB, 99111),
    ("M1", 22222, SUB, 11113),
    ("M3", 99004, SUB, 8),
    ("N1", 100, SUB, 200),
    ("N4+", 3111, SUB, 3117),
)

# fewest digits a question of each class needs (a carry/borrow run needs its columns; a borrow in a
# non-negative difference also needs a larger column above it)
# difference also needs a larger column above it)
MIN_DIGITS = {
    "S0": 1, "S1": 1, "S2": 2, "S3": 3, "S4": 4, "S5": 5,
    "M0": 1, "M1": 2, "M2": 3, "M3": 4, "M4+": 5,
    "N1": 1, "N2": 2, "N3": 3, "N4+": 4,
}  # fmt: skip

DEFAULT_PER_CLASS = 20

# column kinds: addition (digit sum below 9, exactly 9, above 9) and subtraction (a > b, a == b, a < b)
_LOW, _NINE, _CARRY = 0, 1, 2
_GT, _EQ, _LT = 0, 1, 2


def achievable(n_digits: int) -> tuple[str, ...]:
    """The classes that n-digit questions can have."""
    return tuple(c for c in CLASSES if MIN_DIGITS[c] <= n_digits)


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(np.random.SeedSequence(list(key))))


def _to_digits(value: int, n: int) -> np.ndarray:
    return np.array([int(c) for c in str(value).rjust(n, "0")], dtype=np.uint8)


def _chain_breaks(kinds: np.ndarray, start: int, link: int, stop: int, limit: int, skip: int) -> None:
    """Cut each run of `link` columns directly above a `start` column (except column `skip`) at `limit`."""
    w = len(kinds)
    for j in range(w):
        if j == skip or kinds[j] != start:
            continue
        run = 0
        while j + 1 + run < w and kinds[j + 1 + run] == link:
            run += 1
        if run > limit:
            kinds[j + 1 + limit] = stop


def _add_pattern(rng: np.random.Generator, level: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns (units first) of a w-digit addition of class S<level>."""
    if level == 0:
        kinds = rng.choice([_LOW, _NINE], size=w, p=[0.6, 0.4])
    else:
        chain = level - 1  # sum-9 columns directly above the carry
        kinds = rng.choice([_LOW, _NINE, _CARRY], size=w, p=[0.35, 0.35, 0.30])
        k = int(rng.integers(0, w - chain))
        kinds[k] = _CARRY
        kinds[k + 1 : k + 1 + chain] = _NINE
        if level < 5:
            if k + chain + 1 < w:
                kinds[k + chain + 1] = rng.choice([_LOW, _CARRY])
            _chain_breaks(kinds, _CARRY, _NINE, _LOW, chain, skip=k)
    a = np.empty(w, np.uint8)
    b = np.empty(w, np.uint8)
    for col, kind in enumerate(kinds):
        if kind == _LOW:
            a[col] = rng.integers(0, 9)
            b[col] = rng.integers(0, 9 - a[col])
        elif kind == _NINE:
            a[col] = rng.integers(0, 10)
            b[col] = 9 - a[col]
        else:
            a[col] = rng.integers(1, 10)
            b[col] = rng.integers(10 - a[col], 10)
    return a, b


def _sub_digits(rng: np.random.Generator, kinds: np.ndarray, zero_share: float) -> tuple[np.ndarray, np.ndarray]:
    w = len(kinds)
    a = np.empty(w, np.uint8)
    b = np.empty(w, np.uint8)
    for col, kind in enumerate(kinds):
        if kind == _EQ:
            a[col] = b[col] = 0 if rng.random() < zero_share else rng.integers(0, 10)
        elif kind == _GT:
            a[col] = rng.integers(1, 10)
            b[col] = rng.integers(0, a[col])
        else:
            a[col] = rng.integers(0, 9)
            b[col] = rng.integers(a[col] + 1, 10)
    return a, b


def _top_unequal(kinds: np.ndarray) -> int:
    idx = np.flatnonzero(kinds != _EQ)
    return int(idx[-1]) if idx.size else -1


def _sub_pattern(rng: np.random.Generator, level: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns (units first) of a w-digit subtraction x - y >= 0 of class M<level> (level 4 = M4+)."""
    if level == 0:
        if rng.random() < 0.15:
            kinds = np.full(w, _EQ)  # a zero answer
        else:
            kinds = rng.choice([_GT, _EQ], size=w, p=[0.5, 0.5])
        return _sub_digits(rng, kinds, zero_share=0.3)
    chain = level - 1  # zero-difference columns directly above the borrow
    kinds = rng.choice([_GT, _EQ, _LT], size=w, p=[0.35, 0.35, 0.30])
    k = int(rng.integers(0, w - 1 - chain))  # leaves room for a larger column above the run
    kinds[k] = _LT
    kinds[k + 1 : k + 1 + chain] = _EQ
    if level < 4:
        kinds[k + chain + 1] = rng.choice([_GT, _LT])
        _chain_breaks(kinds, _LT, _EQ, _GT, chain, skip=k)
    top = _top_unequal(kinds)
    if top == k:
        kinds[w - 1] = _GT
    elif kinds[top] == _LT:
        kinds[top] = _GT  # the highest unequal column decides the sign: make the answer positive
    return _sub_digits(rng, kinds, zero_share=0.4)


def _neg_pattern(rng: np.random.Generator, level: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns (units first) of a w-digit subtraction x - y < 0 of class N<level> (level 4 = N4+).

    The top column (w-1) is the highest one holding a non-zero digit; columns above it are 0-0 and do
    not count.
    """
    chain = level - 1
    kinds = rng.choice([_GT, _EQ, _LT], size=w, p=[0.35, 0.35, 0.30])
    k = int(rng.integers(0, w - chain))
    kinds[k] = _LT
    kinds[k + 1 : k + 1 + chain] = _EQ
    if level < 4:
        if k + chain + 1 < w:
            kinds[k + chain + 1] = rng.choice([_GT, _LT])
        _chain_breaks(kinds, _LT, _EQ, _GT, chain, skip=k)
    top = _top_unequal(kinds)
    if kinds[top] == _GT:
        kinds[top] = _LT  # make the answer negative (classify rejects the rare case where this lengthens a run)
    a, b = _sub_digits(rng, kinds, zero_share=0.4)
    if a[w - 1] == 0 and b[w - 1] == 0:
        a[w - 1] = b[w - 1] = rng.integers(1, 10)  # column w-1 is 0-0 only if it is _EQ
    return a, b


def _pattern(rng: np.random.Generator, name: str, w: int) -> tuple[np.ndarray, np.ndarray, int]:
    family, level = name[0], int(name[1])
    if family == "S":
        return (*_add_pattern(rng, level, w), ADD)
    if family == "M":
        return (*_sub_pattern(rng, level, w), SUB)
    return (*_neg_pattern(rng, level, w), SUB)


def _resolve_counts(per_class: int | Mapping[str, int]) -> dict[str, int]:
    if isinstance(per_class, Mapping):
        unknown = sorted(set(per_class) - set(CLASSES))
        if unknown:
            raise InputError(f"per_class names unknown classes {unknown} (expected some of {', '.join(CLASSES)})")
        counts = {c: int(per_class.get(c, 0)) for c in CLASSES}
    else:
        counts = dict.fromkeys(CLASSES, int(per_class))
    if any(v < 0 for v in counts.values()):
        raise InputError("per_class counts must not be negative")
    return counts


def _class_examples(name: str, n: int, want: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Up to `want` distinct n-digit questions that classify() puts in class `name`, literals first."""
    index = CLASS_INDEX[name]
    seen: set[bytes] = set()
    rows: list[tuple[np.ndarray, np.ndarray, int]] = []

    def offer(x_row: np.ndarray, y_row: np.ndarray, op_code: int) -> None:
        key = x_row.tobytes() + y_row.tobytes() + bytes([op_code])
        if key in seen:
            return
        if classify(x_row[None], y_row[None], np.array([op_code], np.uint8))[0] != index:
            return
        seen.add(key)
        rows.append((x_row, y_row, op_code))

    for label, a, op_code, b in LITERAL_EXAMPLES:
        if label == name and len(rows) < want and max(a, b) < 10**n:
            offer(_to_digits(a, n), _to_digits(b, n), op_code)
    lo = MIN_DIGITS[name]
    for _ in range(50 * want + 200):
        if len(rows) >= want:
            break
        w = n if rng.random() < 0.5 else int(rng.integers(lo, n + 1))
        a, b, op_code = _pattern(rng, name, w)
        x_row = np.zeros(n, np.uint8)
        y_row = np.zeros(n, np.uint8)
        x_row[n - w :] = a[::-1]
        y_row[n - w :] = b[::-1]
        offer(x_row, y_row, op_code)
    return rows


def handpicked(
    n_digits: int, seed: int = 0, per_class: int | Mapping[str, int] = DEFAULT_PER_CLASS
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Example questions of every class n-digit questions can have: (x, y, op, labels).

    x, y: uint8 [N, n] digit grids (most significant first); op: uint8 [N]; labels: int8 [N], indices
    into CLASSES, equal to classify(x, y, op). Rows are grouped by class in CLASSES order; within a class
    the literal examples of F6.3 (where they fit) come first. Up to `per_class` distinct questions per
    class (an int, or a mapping from class name to count); fewer only where n is so small that the class
    has fewer distinct questions. Deterministic in (n_digits, seed, per_class); a class's questions do
    not depend on which other classes are asked for.
    """
    if not 1 <= n_digits <= MAX_DIGITS:
        raise InputError(f"n_digits must be between 1 and {MAX_DIGITS}, got {n_digits}")
    counts = _resolve_counts(per_class)
    n = n_digits
    tag = zlib.crc32(b"handpicked")
    xs, ys, ops = [], [], []
    for name in achievable(n):
        if counts[name]:
            rows = _class_examples(name, n, counts[name], _rng(int(seed), tag, CLASS_INDEX[name]))
            xs.extend(r[0] for r in rows)
            ys.extend(r[1] for r in rows)
            ops.extend(r[2] for r in rows)
    if not xs:
        empty = np.zeros((0, n), np.uint8)
        return empty, empty.copy(), np.zeros(0, np.uint8), np.zeros(0, np.int8)
    x = np.stack(xs)
    y = np.stack(ys)
    op = np.array(ops, dtype=np.uint8)
    labels = classify(x, y, op)
    assert labels.min() >= 0 and labels.max() < N_CLASSES
    return x, y, op, labels


# ------------------------------------------------------------------------------------------------ tricase
TRICASES = (8, 9, 10)


def _case_digits(rng: np.random.Generator, op: int, case: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Digits of the studied column: addition sum < 9 / == 9 / > 9; subtraction x < y / x == y / x > y."""
    if op == ADD:
        if case == 8:
            a = rng.integers(0, 9, size)
            b = rng.integers(0, 9 - a)
        elif case == 9:
            a = rng.integers(0, 10, size)
            b = 9 - a
        else:
            a = rng.integers(1, 10, size)
            b = rng.integers(10 - a, 10)
    else:
        if case == 8:
            a = rng.integers(0, 9, size)
            b = rng.integers(a + 1, 10)
        elif case == 9:
            a = rng.integers(0, 10, size)
            b = a.copy()
        else:
            a = rng.integers(1, 10, size)
            b = rng.integers(0, a)
    return a.astype(np.uint8), b.astype(np.uint8)


def _uint64_digits(values: np.ndarray, width: int) -> np.ndarray:
    """Non-negative uint64 values below 10**width -> digit grid [N, width], most significant first."""
    out = np.empty((len(values), width), np.uint8)
    v = values.astype(np.uint64, copy=True)
    ten = np.uint64(10)
    for col in range(width - 1, -1, -1):
        out[:, col] = (v % ten).astype(np.uint8)
        v //= ten
    return out


def _tricase_rows(rng, n: int, d: int, op: int, case: int, size: int, pad: bool):
    a, b = _case_digits(rng, op, case, size)
    x = np.zeros((size, n), np.uint8)
    y = np.zeros((size, n), np.uint8)
    x[:, n - 1 - d] = a
    y[:, n - 1 - d] = b
    if d > 0:
        # lower digits: random "noise" that never carries into (+) or borrows from (-) digit d
        top = np.uint64(10) ** np.uint64(d)  # up to 10**19, which still fits in uint64
        xn = rng.integers(0, top, size, dtype=np.uint64)
        if op == ADD:
            yn = rng.integers(0, top - xn, dtype=np.uint64)  # xn + yn <= 10**d - 1
        else:
            yn = rng.integers(0, xn + np.uint64(1), dtype=np.uint64)  # yn <= xn
        x[:, n - d :] = _uint64_digits(xn, d)
        y[:, n - d :] = _uint64_digits(yn, d)
    if pad:
        # extra variety where the studied digit and the noise have few combinations: the same random
        # digits above digit d in both operands (the reference instead adds a multiple of 10**d to both,
        # which can change digit d itself)
        hi = rng.integers(0, 10, (size, n - 1 - d)).astype(np.uint8)
        x[:, : n - 1 - d] = hi
        y[:, : n - 1 - d] = hi
    return x, y


def _first_unique(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    _, first = np.unique(np.concatenate([x, y], axis=1), axis=0, return_index=True)
    return np.sort(first)


def tricase(n_digits: int, seed: int = 0, per_case: int = 100) -> dict[tuple[int, int], tuple[np.ndarray, ...]]:
    """Tricase questions (F6.4): for each answer digit d in 0..n-1 and op in (ADD, SUB),
    `per_case` distinct questions for each of the cases 8, 9 and 10 at digit d.

    Addition: case 8 = the digits of column d sum to 8 or less, 9 = sum to 9, 10 = sum to 10 or more.
    Subtraction: case 8 = x digit < y digit (the answer is negative), 9 = equal, 10 = x digit > y digit.
    Digits below d are random but never carry into / borrow from column d; digits above d are 0 (when
    that allows too few distinct questions, e.g. d = 0, more get the same random digits above d in both
    operands). Fewer than `per_case` only where no more exist (n = 1).
    Returns {(d, op): (x, y, op, case_labels)}, case_labels uint8 in {8, 9, 10}, rows grouped by case.
    """
    if not 1 <= n_digits <= MAX_DIGITS:
        raise InputError(f"n_digits must be between 1 and {MAX_DIGITS}, got {n_digits}")
    if per_case < 1:
        raise InputError(f"per_case must be at least 1, got {per_case}")
    n = n_digits
    tag = zlib.crc32(b"tricase")
    out: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}
    for d in range(n):
        for op in (ADD, SUB):
            rng = _rng(int(seed), tag, d, op)
            blocks_x, blocks_y, blocks_case = [], [], []
            for case in TRICASES:
                x, y = _tricase_rows(rng, n, d, op, case, 2 * per_case, pad=False)
                keep = _first_unique(x, y)
                if len(keep) < per_case and d < n - 1:
                    x2, y2 = _tricase_rows(rng, n, d, op, case, 2 * per_case, pad=True)
                    x = np.concatenate([x[keep], x2])
                    y = np.concatenate([y[keep], y2])
                    keep = _first_unique(x, y)
                keep = keep[:per_case]
                blocks_x.append(x[keep])
                blocks_y.append(y[keep])
                blocks_case.append(np.full(len(keep), case, np.uint8))
            x = np.concatenate(blocks_x)
            y = np.concatenate(blocks_y)
            out[(d, op)] = (x, y, np.full(len(x), op, np.uint8), np.concatenate(blocks_case))
    return out
