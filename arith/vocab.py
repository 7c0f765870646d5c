"""Vocabulary and sequence layout (15 tokens; `D..D OP D'..D' = SIGN A..A`, n_ctx = 3n+4).

Questions are held as digit grids, most significant digit first (the token order), so every n from 1 to 20
works without integer overflow: `x` and `y` are uint8 arrays [N, n], `op` is uint8 [N] (ADD, SUB or MUL).
"""

from __future__ import annotations

import os
import re
import select
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, TextIO

import numpy as np

from arith.errors import InputError, clip

CHARS = "0123456789+-=*\\"
PLUS, MINUS, EQUALS, MULT, DIV = 10, 11, 12, 13, 14
D_VOCAB = len(CHARS)

# operation codes (what a question asks), and the token that spells each
ADD, SUB, MUL = 0, 1, 2
OP_TOKEN = np.array([PLUS, MINUS, MULT], dtype=np.int64)
OP_CHAR = {ADD: "+", SUB: "-", MUL: "*"}
OP_WORD = {ADD: "addition", SUB: "subtraction", MUL: "multiplication"}

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
    """Non-negative int64 values -> digit grid [N, width], most significant first.

    Any width works (up to MAX_DIGITS and beyond): an int64 has at most 19 digits, so the columns above the
    19th are zeros (a d20 grid of a hand-picked pair is left-zero-padded like any other)."""
    values = np.asarray(values, dtype=np.int64)
    if values.size and values.min() < 0:
        raise InputError("integer conversion takes non-negative values only")
    used = min(width, 19)  # 10**18 <= int64 max < 10**19; uint64 holds 10**18 as the top power
    pows = 10 ** np.arange(used - 1, -1, -1, dtype=np.uint64)
    out = np.zeros((values.shape[0], width), dtype=np.uint8)
    out[:, width - used :] = ((values.astype(np.uint64)[:, None] // pows) % np.uint64(10)).astype(np.uint8)
    return out


def ints_to_digits(values, width: int) -> np.ndarray:
    """Python integers of any size (0 <= v < 10**width) -> digit grid [N, width], most significant first.

    For a few fixed questions whose operands exceed int64 (the algorithm search's repeated digits: rep(9, 20) is
    99999999999999999999); bulk questions are drawn as digit grids and never pass through integers."""
    values = [int(v) for v in values]
    if any(v < 0 or v >= 10**width for v in values):
        raise InputError(f"operands must lie in 0 .. 10^{width} - 1")
    if not values:
        return np.zeros((0, width), np.uint8)
    text = "".join(str(v).rjust(width, "0") for v in values)
    return (np.frombuffer(text.encode(), dtype=np.uint8) - ord("0")).reshape(len(values), width)


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


# ASCII digits only: `\d` would also take fullwidth or Arabic-Indic digits, which the vocabulary cannot spell
_QUESTION = re.compile(r"\s*([0-9]+)\s*([+\-*])\s*([0-9]+)\s*(?:=.*)?", re.ASCII | re.DOTALL)
_OPS = {"+": ADD, "-": SUB, "*": MUL}
_EXPECTED = "expected <digits><+|-|*><digits>, e.g. 012345+678901"
_QUESTION_CHARS = frozenset("0123456789+-* \t\r\n\f\v")


def _question_problem(line: str) -> str:
    """Why `line` is not a question (it failed the pattern): names the first character that cannot be in one."""
    if not line.strip():
        return f"empty question; {_EXPECTED}"
    for c in line.split("=", 1)[0]:
        if c not in _QUESTION_CHARS:
            what = "is not an ASCII digit 0-9" if c.isdigit() or c.isnumeric() else "cannot be in a question"
            return f"character {c!r} (U+{ord(c):04X}) {what}; {_EXPECTED}"
    return _EXPECTED


def _parse_one(line: str, n_digits: int) -> tuple[str, str, int]:
    """(x digits, y digits, op) of one question, operands left-padded to n_digits; InputError if malformed."""
    m = _QUESTION.fullmatch(line)
    if not m:
        raise InputError(f"question {clip(line.strip())!r}: {_question_problem(line)}")
    a, sym, b = m.group(1), m.group(2), m.group(3)
    for operand in (a, b):
        if len(operand.lstrip("0")) > n_digits:
            raise InputError(
                f"question {clip(line.strip())!r}: operand {clip(operand)} has more than {n_digits} digits"
            )
    return a[-n_digits:].rjust(n_digits, "0"), b[-n_digits:].rjust(n_digits, "0"), _OPS[sym]


def _grids(xs: list[str], ys: list[str], ops: list[int], n_digits: int):
    if not xs:
        return (np.zeros((0, n_digits), np.uint8),) * 2 + (np.zeros(0, np.uint8),)
    x = (np.frombuffer("".join(xs).encode(), dtype=np.uint8) - ord("0")).reshape(-1, n_digits)
    y = (np.frombuffer("".join(ys).encode(), dtype=np.uint8) - ord("0")).reshape(-1, n_digits)
    return x, y, np.array(ops, dtype=np.uint8)


def parse_questions(lines: list[str], n_digits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Questions like `012345+678901` or `12-345` (an `=...` tail is ignored) -> (x, y, op) digit grids.

    Operands are ASCII digits 0-9 only; an empty or malformed line raises InputError naming it.
    """
    Layout(n_digits)
    xs, ys, ops = [], [], []
    for line in lines:
        a, b, op = _parse_one(line, n_digits)
        xs.append(a)
        ys.append(b)
        ops.append(op)
    return _grids(xs, ys, ops, n_digits)


@dataclass
class QuestionLines:
    """A batch of input lines parsed as far as the first bad one.

    `blank[i]` says whether line i (of those before any error) was blank; (x, y, op) hold the other lines'
    questions in order. `error` is the first bad line's InputError (None when every line parsed).
    """

    x: np.ndarray
    y: np.ndarray
    op: np.ndarray
    blank: list[bool]
    error: InputError | None


def parse_question_lines(lines: list[str], n_digits: int, first_line: int | None = None) -> QuestionLines:
    """Parse a batch of lines, stopping at the first bad one (so the lines before it can still be answered).

    With `first_line` (the number of lines[0] in its input, for standard input) a blank line is kept as a
    blank and errors name the line number; without it (questions given as arguments) an empty question
    is an error naming the argument.
    """
    Layout(n_digits)
    xs, ys, ops, blank = [], [], [], []
    error = None
    for i, line in enumerate(lines):
        try:
            if not line.strip():
                if first_line is None:
                    raise InputError(f"argument {i + 1} is an empty question; {_EXPECTED}")
                blank.append(True)
                continue
            a, b, op = _parse_one(line, n_digits)
        except InputError as exc:
            error = InputError(f"line {first_line + i}: {exc}") if first_line is not None else exc
            break
        xs.append(a)
        ys.append(b)
        ops.append(op)
        blank.append(False)
    return QuestionLines(*_grids(xs, ys, ops, n_digits), blank, error)


BATCH_LINES = 4096
MAX_LINE_BYTES = 1 << 20


def line_batches(stream: BinaryIO | TextIO, max_lines: int = BATCH_LINES) -> Iterator[list[str]]:
    """The lines of a stream (without their newlines) in batches of at most `max_lines`.

    Reading a pipe or terminal, a batch is every complete line available without waiting, so a slow or
    interactive writer gets its answers as soon as its lines arrive; memory stays bounded by the batch size.
    A line over 1 MiB (no question is) raises InputError once the lines before it have been yielded.
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd is None:  # e.g. io.StringIO in tests: plain iteration, full batches
        batch = []
        for line in stream:
            batch.append(line.decode() if isinstance(line, bytes) else line)
            batch[-1] = batch[-1].rstrip("\n")
            if len(batch) == max_lines:
                yield batch
                batch = []
        if batch:
            yield batch
        return

    def ready() -> bool:
        try:
            return bool(select.select([fd], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    pending = b""
    lines: list[bytes] = []
    eof = False
    done = 0  # lines yielded so far
    while True:
        while not eof and len(lines) < max_lines and (not lines or ready()):
            if len(pending) > MAX_LINE_BYTES:
                if lines:
                    break
                raise InputError(
                    f"line {done + 1}: longer than {MAX_LINE_BYTES:,} bytes "
                    f"({clip(pending[:100].decode(errors='replace'))!r}); a question is one short line"
                )
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                eof = True
                if pending:
                    lines.append(pending)
                    pending = b""
                break
            if b"\n" in chunk:
                *complete, pending = (pending + chunk).split(b"\n")
                lines.extend(complete)
            else:
                pending += chunk
        if not lines:
            return
        batch, lines = lines[:max_lines], lines[max_lines:]
        done += len(batch)
        yield b"\n".join(batch).decode(errors="surrogateescape").split("\n")


def answer_stream(
    questions: list[str],
    n_digits: int,
    answer: Callable[[np.ndarray, np.ndarray, np.ndarray], list[str]],
    stdin: BinaryIO | TextIO | None = None,
    stdout: TextIO | None = None,
) -> None:
    """Answer questions batch by batch: one output line per input line, written and flushed per batch.

    `questions` given (arguments): an empty one is an error. None given: read standard input in batches of
    lines; a blank line gives a blank output line, so output lines align with input lines. At a bad line the
    answers before it are printed first, then its InputError (naming the line number) is raised.
    `answer(x, y, op)` returns one string per question. A closed stdout (`| head`) ends quietly.
    """
    stdout = stdout or sys.stdout
    if questions:
        batches: Iterable[list[str]] = (questions[i : i + BATCH_LINES] for i in range(0, len(questions), BATCH_LINES))
        numbered = False
    else:
        stdin = stdin if stdin is not None else sys.stdin
        batches = line_batches(getattr(stdin, "buffer", stdin))
        numbered = True
    line_no = 1
    for batch in batches:
        parsed = parse_question_lines(batch, n_digits, first_line=line_no if numbered else None)
        if parsed.error is not None and not numbered:
            raise parsed.error  # arguments are checked before anything is printed
        answers = iter(answer(parsed.x, parsed.y, parsed.op) if len(parsed.op) else [])
        text = ["" if is_blank else next(answers) for is_blank in parsed.blank]
        if text:
            try:
                stdout.write("\n".join(text) + "\n")
                stdout.flush()
            except BrokenPipeError:
                _silence_stdout()
                return
        if parsed.error is not None:
            raise parsed.error
        line_no += len(batch)


def _silence_stdout() -> None:
    """The reader went away (`varith predict ... | head -1`): stop writing, and let exit not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def question_strings(x: np.ndarray, y: np.ndarray, op: np.ndarray) -> list[str]:
    """`012345+678901` style strings (no answer)."""
    n = x.shape[1]
    return [s[: 2 * n + 1] for s in tokens_to_strings(encode(x, y, op))]


def untrained_op_warnings(
    x: np.ndarray, y: np.ndarray, op: np.ndarray, trained: tuple[int, ...], name: str
) -> list[tuple[int, str]]:
    """(op, warning) for each operation among the questions that model `name` was not trained on (`trained`,
    arith.weights.trained_ops), in op order: the one rule for "its answers to them mean nothing"."""
    knows = " and ".join(OP_WORD[o] for o in trained)
    out = []
    for o in sorted(set(np.unique(op).tolist()) - set(trained)):
        i = int(np.argmax(op == o))
        example = question_strings(x[i : i + 1], y[i : i + 1], op[i : i + 1])[0]
        out.append(
            (
                o,
                f"{OP_WORD[o]} questions (e.g. {example}) but model {name} was trained on {knows} only; "
                "its answers to them mean nothing",
            )
        )
    return out
