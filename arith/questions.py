"""Question generators: training batches, enriched random blocks, exhaustive blocks.

Every random stream is derived from (seed, purpose, index) with numpy's SeedSequence + Philox, so block k of a run
(or training step k) is the same whichever process draws it, in whatever order, however often.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from arith.errors import InputError
from arith.vocab import ADD, MUL, SUB

ENRICH_CURRENT = "current"  # 40% of batches (the library since 2024-03/04; the code comment says 60%)
ENRICH_HISTORIC = "historic"  # 60% of batches, with the Jan-2024 subtraction rule
ENRICH_NONE = "none"
ENRICH_RULES = (ENRICH_CURRENT, ENRICH_HISTORIC, ENRICH_NONE)


def rng_for(seed: int, purpose: str, index: int = 0) -> np.random.Generator:
    """The random stream for (seed, purpose, index): independent of every other triple."""
    ss = np.random.SeedSequence([int(seed), zlib.crc32(purpose.encode()), int(index)])
    return np.random.Generator(np.random.Philox(ss))


@dataclass(frozen=True)
class OpMix:
    """Percentages of batches per operation (reference: one operation per batch)."""

    add: int = 100
    sub: int = 0
    mul: int = 0

    def __post_init__(self):
        if min(self.add, self.sub, self.mul) < 0 or self.add + self.sub + self.mul != 100:
            raise InputError(f"operation mix must be non-negative and sum to 100, got {self}")

    def draw(self, rng: np.random.Generator) -> int:
        """The reference's per-batch choice: r in 1..100; r <= mul -> MUL; r <= mul+sub -> SUB; else ADD."""
        r = int(rng.integers(1, 101))
        if r <= self.mul:
            return MUL
        if r <= self.mul + self.sub:
            return SUB
        return ADD

    @property
    def ops(self) -> tuple[int, ...]:
        return tuple(op for op, p in ((ADD, self.add), (SUB, self.sub), (MUL, self.mul)) if p > 0)


def _uniform_digits(rng: np.random.Generator, size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    d = rng.integers(0, 10, size=(2, size, n), dtype=np.uint8)
    return d[0], d[1]


def _enrich_add(rng, x, y):
    """Exactly int(0.4*B*n) random cells become "sum to 9" (x = 9-y, or y = 9-x, one coin for the batch)."""
    cells = rng.permutation(x.size)[: int(0.40 * x.size)]
    if rng.integers(0, 2) == 0:
        x.ravel()[cells] = 9 - y.ravel()[cells]
    else:
        y.ravel()[cells] = 9 - x.ravel()[cells]


def _enrich_sub_current(rng, x, y):
    if rng.integers(1, 101) == 1:
        y[...] = x  # a - a = +000..0 (the sign of zero is hard)
    else:
        y[y < 9] += 1  # bias towards negative answers


def _enrich_sub_historic(rng, x, y, draw: int):
    if draw == 1:
        y[y < 9] += 1
    cells = rng.permutation(x.size)[: int(0.40 * x.size)]
    if rng.integers(0, 2) == 0:
        x.ravel()[cells] = y.ravel()[cells]
    else:
        y.ravel()[cells] = x.ravel()[cells]


def make_batch(rng: np.random.Generator, n: int, op: int, size: int, enrich: str = ENRICH_CURRENT):
    """One batch of a single operation, with the reference's enrichment rules. Returns (x, y, op)."""
    if enrich not in ENRICH_RULES:
        raise InputError(f"unknown enrichment rule {enrich!r} (expected one of {', '.join(ENRICH_RULES)})")
    x, y = _uniform_digits(rng, size, n)
    if op == MUL:
        x[:, : n // 2] = 0
        y[:, : n // 2] = 0
    elif enrich != ENRICH_NONE:
        draw = int(rng.integers(1, 6))
        enriched = draw < 3 if enrich == ENRICH_CURRENT else draw <= 3
        if enriched and op == ADD:
            _enrich_add(rng, x, y)
        elif enriched and op == SUB:
            if enrich == ENRICH_CURRENT:
                _enrich_sub_current(rng, x, y)
            else:
                _enrich_sub_historic(rng, x, y, draw)
    return x, y, np.full(size, op, dtype=np.uint8)


def training_batch(
    seed: int,
    step: int,
    n: int,
    mix: OpMix,
    size: int = 64,
    enrich: str = ENRICH_CURRENT,
    within_batch: bool = False,
):
    """The whole global batch of one training step, drawn from (seed, "train", step) alone.

    Every DDP rank draws the same global batch and takes its own slice, so the data is independent of the
    world size and a resumed run sees exactly the batches an uninterrupted one would.
    `within_batch` mixes operations inside the batch (the reference's GrokFast generator, docs/reference_facts.md F3.3).
    """
    rng = rng_for(seed, "train", step)
    if within_batch:
        return mixed_batch(rng, n, mix, size, enrich)
    return make_batch(rng, n, mix.draw(rng), size, enrich)


def mixed_batch(rng: np.random.Generator, n: int, mix: OpMix, size: int, enrich: str = ENRICH_CURRENT):
    """One batch holding every operation: `size*sub//100` subtraction rows, `size*mul//100` multiplication
    rows and the rest addition, each part drawn (and enriched) as a batch of its own, in that order."""
    n_sub = size * mix.sub // 100
    n_mul = size * mix.mul // 100
    parts = [make_batch(rng, n, ADD, size, enrich)]
    parts[0] = tuple(a[: size - n_sub - n_mul] for a in parts[0])
    if n_sub:
        parts.append(tuple(a[:n_sub] for a in make_batch(rng, n, SUB, size, enrich)))
    if n_mul:
        parts.append(tuple(a[:n_mul] for a in make_batch(rng, n, MUL, size, enrich)))
    return tuple(np.concatenate(p) for p in zip(*parts, strict=True))


def random_block(
    seed: int,
    block: int,
    n: int,
    op: int,
    size: int,
    enrich: str = ENRICH_CURRENT,
    sub_batch: int = 512,
    purpose: str = "verify",
):
    """Block `block` of a random test: `size` questions of one operation, drawn from (seed, purpose/op, block).

    Enrichment is decided per sub-batch of `sub_batch` questions (the reference's analysis batch), so a block
    of 20,000 questions has the same mix of enriched and plain batches as the reference's 1M test.
    """
    rng = rng_for(seed, f"{purpose}/op{op}", block)
    parts = [make_batch(rng, n, op, min(sub_batch, size - start), enrich) for start in range(0, size, sub_batch)]
    return tuple(np.concatenate(p) for p in zip(*parts, strict=True))


def exhaustive_count(n: int) -> int:
    return 10 ** (2 * n)


def exhaustive_block(n: int, op: int, start: int, stop: int):
    """Questions start..stop-1 of the exhaustive enumeration (x major, y minor) for one operation."""
    if n > 9:
        raise InputError("exhaustive enumeration is limited to 9 digits (10^18 questions)")
    stop = min(stop, exhaustive_count(n))
    idx = np.arange(start, stop, dtype=np.int64)
    base = 10**n
    pows = 10 ** np.arange(n - 1, -1, -1, dtype=np.int64)
    x = ((idx // base)[:, None] // pows % 10).astype(np.uint8)
    y = ((idx % base)[:, None] // pows % 10).astype(np.uint8)
    return x, y, np.full(len(idx), op, dtype=np.uint8)
