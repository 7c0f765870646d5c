"""The "varied questions" the analysis runs on (docs/reference_facts.md F6.3 and F11).

One random batch from the mixed-in-batch generator (enriched), then the reference's hand-picked pairs
(`arith/data/handpicked_pairs.json`, its literal lists): the addition lists S0..S5 when the model was trained on
addition, the subtraction lists M0..M3 and N1..N4 when it was trained on subtraction. A pair is kept when both
operands are below 10^n and its computed class equals the list's class; kept pairs are appended class by class
in that order. A question file (`a+b` / `a-b`, one per line) replaces the whole set.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from arith import complexity
from arith.errors import InputError, clip
from arith.questions import ENRICH_CURRENT, OpMix, mixed_batch, rng_for
from arith.vocab import ADD, SUB, int_to_digits, parse_questions

ANALYSIS_SEED = 673023
ADD_LISTS = ("S0", "S1", "S2", "S3", "S4", "S5")
SUB_LISTS = ("M0", "M1", "M2", "M3", "N1", "N2", "N3", "N4")


@cache
def _lists() -> dict:
    text = resources.files("arith").joinpath("data/handpicked_pairs.json").read_text()
    return json.loads(text)


def analysis_batch_size(n_layers: int, n_heads: int) -> int:
    """The reference's analysis batch: 512, or 256 for models with >= 3 layers and >= 4 heads."""
    return 256 if n_layers >= 3 and n_heads >= 4 else 512


def handpicked_pairs(n_digits: int, ops: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(x, y, op, list label) of the kept hand-picked pairs, in the reference's order."""
    lists = _lists()
    names = (ADD_LISTS if ADD in ops else ()) + (SUB_LISTS if SUB in ops else ())
    xs, ys, opl, labels = [], [], [], []
    limit = 10**n_digits
    for name in names:
        entry = lists[name]
        pairs = np.array([p for p in entry["pairs"] if p[0] < limit and p[1] < limit], dtype=np.int64).reshape(-1, 2)
        if not len(pairs):
            continue
        op = ADD if entry["operator"] == "+" else SUB
        x, y = int_to_digits(pairs[:, 0], n_digits), int_to_digits(pairs[:, 1], n_digits)
        ops_arr = np.full(len(pairs), op, dtype=np.uint8)
        names_got = complexity.class_names(complexity.classify(x, y, ops_arr))
        # the lists say N4 and M4 where the classes are called N4+ and M4+
        keep = np.array([got.rstrip("+") == name for got in names_got], dtype=bool)
        xs.append(x[keep])
        ys.append(y[keep])
        opl.append(ops_arr[keep])
        labels += [name] * int(keep.sum())
    if not xs:
        empty = np.zeros((0, n_digits), np.uint8)
        return empty, empty.copy(), np.zeros(0, np.uint8), []
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(opl), labels


def varied_questions(
    n_digits: int, mix: OpMix, random_rows: int, seed: int = ANALYSIS_SEED, enrich: str = ENRICH_CURRENT
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`random_rows` enriched questions mixed in one batch, then the kept hand-picked pairs."""
    parts = []
    if random_rows > 0:
        parts.append(mixed_batch(rng_for(seed, "varied", 0), n_digits, mix, random_rows, enrich))
    hx, hy, hop, _ = handpicked_pairs(n_digits, mix.ops)
    parts.append((hx, hy, hop))
    return tuple(np.concatenate(p) for p in zip(*parts, strict=True))


def question_file(path: str | Path, n_digits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Questions `a+b` / `a-b`, one per line (blank lines and `#` comments skipped), in file order. Other
    operations (`a*b`) are refused naming their line: the varied questions and their tags know only these two."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"question file {clip(path)}: unreadable ({type(exc).__name__})") from None
    numbered = [(i + 1, line.strip()) for i, line in enumerate(text.splitlines())]
    numbered = [(i, line) for i, line in numbered if line and not line.startswith("#")]
    if not numbered:
        raise InputError(f"question file {clip(path)}: no questions")
    try:
        x, y, op = parse_questions([line for _, line in numbered], n_digits)
    except InputError as exc:
        raise InputError(f"question file {clip(path)}: {exc}") from None
    other = np.flatnonzero(~np.isin(op, (ADD, SUB)))
    if len(other):
        i, line = numbered[int(other[0])]
        raise InputError(
            f"question file {clip(path)}: line {i} {clip(line)!r} is not a+b or a-b (the ablation takes only those)"
        )
    return x, y, op
