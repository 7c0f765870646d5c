"""Vocabulary and sequence layout (15 tokens; `D..D OP D'..D' = SIGN A..A`, n_ctx = 3n+4).

Questions are held as digit grids, most significant digit first (the token order), so every n from 1 to 20
works without integer overflow: `x` and `y` are uint8 arrays [N, n], `op` is uint8 [N] (ADD, SUB or MUL).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from arith.errors import InputError

CHARS = "0123456789+-=*\\"
PLUS, MINUS, EQUALS, MULT, DIV = 10, 11, 12, 13, 14
D_VOCAB = len(CHARS)

# operation codes (what a question asks), and the token that spells each
ADD, SUB, MUL = 0, 1, 2
OP_TOKEN = np.array([PLUS, MINUS, MULT], dtype=np.int64)
OP_CHAR = {ADD: "+", SUB: "-", MUL: "*"}

# question classes used for counting: addition, subtraction with a >= 0 answer, with a < 0 answer, multiplication
Q_ADD, Q_SUB, Q_NEG, Q_MUL = 0, 1, 2, 3
QCLASS_NAMES = ("ADD", "SUB", "NEG", "MUL")

MAX_DIGITS = 20
_LUT = np.frombuffer(CHARS.encode(), dtype=np.uint8)
_REVERSE = np.zeros(256, dtype=np.int64)
_REVERSE[_LUT] = np.arange(D_VOCAB)


@dataclass(frozen=True)
class Layout:
    """Token positions for n-digit questions."""

    n_digits: int

    def __post_init__(self):
        if not 1 <= self.n_digits <= MAX_DIGITS:
            raise InputError(f"n_digits must be between 1 and {MAX_DIGITS}, got {self.n_digits}")

    @property
    def n_question(self) -> int:
        return 2 * self.n_digits + 2

    @property
    def n_answer(self) -> int:
        return self.n_digits + 2

    @property
    def n_ctx(self) -> int:
        return 3 * self.n_digits + 4

    @property
    def op_pos(self) -> int:
        return self.n_digits

    @property
    def eq_pos(self) -> int:
        return 2 * self.n_digits + 1

    @property
    def answer_start(self) -> int:
        """Position of the answer's sign token."""
        return 2 * self.n_digits + 2

    @property
    def predict_slice(self) -> slice:
        """Positions whose logits predict the n+2 answer tokens (from "=" up to the one before the last)."""
        return slice(self.answer_start - 1, self.n_ctx - 1)

    def position_meanings(self, pure_add: bool = False) -> list[str]:
        n = self.n_digits
        names = [f"D{k}" for k in range(n - 1, -1, -1)] + ["OPR"]
        names += [f"D'{k}" for k in range(n - 1, -1, -1)] + ["="]
        names += ["+" if pure_add else f"A{n + 1}"] + [f"A{k}" for k in range(n, -1, -1)]
        return names

    def answer_names(self) -> list[str]:
        """Names of the answer tokens in sequence order: A{n+1} (the sign), A{n}, ..., A0."""
        return [f"A{k}" for k in range(self.n_digits + 1, -1, -1)]


def x_less_than_y(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per row of two digit grids (most significant first): is x < y? At the first differing column, x is smaller."""
    diff = np.asarray(x, dtype=np.int16) - np.asarray(y, dtype=np.int16)
    nz = diff != 0
    first = np.where(nz.any(axis=1), nz.argmax(axis=1), 0)
    return diff[np.arange(len(diff)), first] < 0


def answer_digits(x: np.ndarray, y: np.ndarray, op: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact answers, column by column: (negative bool [N], magnitude digits uint8 [N, n+1], MSB first)."""
    x = np.asarray(x, dtype=np.int16)
    y = np.asarray(y, dtype=np.int16)
    op = np.asarray(op)
    N, n = x.shape
    neg = np.zeros(N, dtype=bool)
    out = np.zeros((N, n + 1), dtype=np.uint8)

    is_sub = op == SUB
    if is_sub.any():
        neg = is_sub & x_less_than_y(x, y)
    big = np.where(neg[:, None], y, x)
    small = np.where(neg[:, None], x, y)
    carry = np.zeros(N, dtype=np.int16)
    for col in range(n - 1, -1, -1):  # loop over digit columns, never over questions
        s = np.where(is_sub, big[:, col] - small[:, col] - carry, big[:, col] + small[:, col] + carry)
        carry = np.where(is_sub, (s < 0).astype(np.int16), s // 10)
        out[:, col + 1] = s % 10
    out[:, 0] = np.where(is_sub, 0, carry)

    is_mul = op == MUL
    if is_mul.any():
        if n > 9:
            raise InputError("multiplication is supported up to 9 digits")
        w = 10 ** np.arange(n - 1, -1, -1, dtype=np.int64)
        prod = (x[is_mul].astype(np.int64) @ w) * (y[is_mul].astype(np.int64) @ w)
        out[is_mul] = int_to_digits(prod, n + 1)
    return neg, out


def int_to_digits(values: np.ndarray, width: int) -> np.ndarray:
    """Non-negative int64 values -> digit grid [N, width], most significant first."""
    values = np.asarray(values, dtype=np.int64)
    if width > 18:
        raise InputError("integer conversion supports at most 18 digits; use digit grids")
    pows = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((values[:, None] // pows) % 10).astype(np.uint8)


def digits_to_int(digits: np.ndarray) -> np.ndarray:
    digits = np.asarray(digits, dtype=np.int64)
    if digits.shape[-1] > 18:
        raise InputError("integer conversion supports at most 18 digits; use digit grids")
    pows = 10 ** np.arange(digits.shape[-1] - 1, -1, -1, dtype=np.int64)
    return digits @ pows


def encode(x: np.ndarray, y: np.ndarray, op: np.ndarray) -> np.ndarray:
    """Full teacher-forced token sequences (question + correct answer), int64 [N, 3n+4]."""
    x = np.asarray(x, dtype=np.uint8)
    y = np.asarray(y, dtype=np.uint8)
    op = np.asarray(op, dtype=np.uint8)
    N, n = x.shape
    neg, mag = answer_digits(x, y, op)
    tokens = np.empty((N, 3 * n + 4), dtype=np.int64)
    tokens[:, :n] = x
    tokens[:, n] = OP_TOKEN[op]
    tokens[:, n + 1 : 2 * n + 1] = y
    tokens[:, 2 * n + 1] = EQUALS
    tokens[:, 2 * n + 2] = np.where(neg, MINUS, PLUS)
    tokens[:, 2 * n + 3 :] = mag
    return tokens


def question_class(x: np.ndarray, y: np.ndarray, op: np.ndarray) -> np.ndarray:
    """ADD / SUB (answer >= 0) / NEG (answer < 0) / MUL per question, uint8 [N]."""
    op = np.asarray(op)
    x_less = x_less_than_y(x, y)
    out = np.full(len(op), Q_ADD, dtype=np.uint8)
    out[op == SUB] = np.where(x_less[op == SUB], Q_NEG, Q_SUB)
    out[op == MUL] = Q_MUL
    return out


def tokens_to_strings(tokens: np.ndarray) -> list[str]:
    """Token rows -> strings, e.g. `133357+182243=+0315600` (vectorised byte lookup)."""
    tokens = np.asarray(tokens)
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.size and (tokens.min() < 0 or tokens.max() >= D_VOCAB):
        raise InputError(f"token ids must lie in 0..{D_VOCAB - 1}")
    width = tokens.shape[1]
    raw = np.ascontiguousarray(_LUT[tokens]).view(f"S{width}").ravel()
    return [s.decode() for s in raw]


def string_to_tokens(text: str) -> np.ndarray:
    """A string of vocabulary characters -> token ids."""
    bad = [c for c in text if c not in CHARS]
    if bad:
        raise InputError(f"{text!r}: character {bad[0]!r} is not in the vocabulary {CHARS!r}")
    return _REVERSE[np.frombuffer(text.encode(), dtype=np.uint8)]


_QUESTION = re.compile(r"^\s*(\d+)\s*([+\-*])\s*(\d+)\s*(=.*)?$")


def parse_questions(lines: list[str], n_digits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Questions like `012345+678901` or `12-345` (an `=...` tail is ignored) -> (x, y, op) digit grids."""
    Layout(n_digits)
    xs, ys, ops = [], [], []
    for line in lines:
        m = _QUESTION.match(line)
        if not m:
            raise InputError(f"question {line.strip()!r}: expected <digits><+|-|*><digits>, e.g. 012345+678901")
        a, sym, b = m.group(1), m.group(2), m.group(3)
        for operand in (a, b):
            if len(operand.lstrip("0")) > n_digits:
                raise InputError(f"question {line.strip()!r}: operand {operand} has more than {n_digits} digits")
        xs.append(a.lstrip("0").rjust(n_digits, "0")[-n_digits:])
        ys.append(b.lstrip("0").rjust(n_digits, "0")[-n_digits:])
        ops.append({"+": ADD, "-": SUB, "*": MUL}[sym])
    if not xs:
        return (np.zeros((0, n_digits), np.uint8),) * 2 + (np.zeros(0, np.uint8),)
    x = (np.frombuffer("".join(xs).encode(), dtype=np.uint8) - ord("0")).reshape(-1, n_digits)
    y = (np.frombuffer("".join(ys).encode(), dtype=np.uint8) - ord("0")).reshape(-1, n_digits)
    return x, y, np.array(ops, dtype=np.uint8)


def question_strings(x: np.ndarray, y: np.ndarray, op: np.ndarray) -> list[str]:
    """`012345+678901` style strings (no answer)."""
    n = x.shape[1]
    return [s[: 2 * n + 1] for s in tokens_to_strings(encode(x, y, op))]
