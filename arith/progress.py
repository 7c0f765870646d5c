"""Progress reporting: a tqdm bar on a terminal, plain lines in a log.

On a terminal (the stream, stderr by default, is a tty) `progress()` is a tqdm bar. Anywhere else (a SLURM log,
a pipe, CI) it prints one plain line roughly every 5% of the total, and at the end: the count, the postfix
fields (a training run's loss), the rate and, while unfinished, the time left (`ETA`), with integer counts and
no carriage-return frames, so logs stay readable and small. Both accept the same calls: `update(n)`,
`set_postfix(**fields)`, `close()`, the attribute `n`, and use as a context manager.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def duration(seconds: float) -> str:
    """A plain duration for a log line: `42 s`, `12 min`, `3.4 h`."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def eta(done: int, total: int, rate: float) -> str | None:
    """The time left at `rate` per second (None: unknown or finished)."""
    if rate <= 0 or done >= total:
        return None
    return duration((total - done) / rate)


def _fmt(value) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return str(value)


class LogProgress:
    """tqdm's small interface, printing a plain line each time another ~5% (`every`) of `total` is done."""

    def __init__(
        self,
        total: int | None,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
        stream: TextIO | None = None,
        every: float = 0.05,
    ):
        self.total = int(total) if total is not None else None
        self.desc = desc
        self.unit = unit
        self.n = int(initial)
        self.stream = stream if stream is not None else sys.stderr
        self._step = max(1, int(round((self.total or 0) * every))) if self.total else None
        self._next = self._following(self.n)
        self._postfix: dict = {}
        self._t0 = time.monotonic()
        self._n0 = self.n
        self._closed = False
        self._last_printed = None

    def _following(self, n: int) -> int | None:
        if self._step is None:
            return None
        return (n // self._step + 1) * self._step

    def _line(self) -> str:
        done = f"{self.n:,}" + (f"/{self.total:,}" if self.total else "")
        pct = f" ({100 * self.n // self.total}%)" if self.total else ""
        elapsed = time.monotonic() - self._t0
        rate = (self.n - self._n0) / elapsed if elapsed > 0 else 0.0
        extra = "".join(f", {k} {_fmt(v)}" for k, v in self._postfix.items())
        speed = f"{rate:,.0f}" if rate >= 100 else f"{rate:.2f}"
        left = eta(self.n, self.total, rate) if self.total else None
        timing = duration(elapsed) + (f", ETA {left}" if left else "")
        return f"{self.desc}: {done} {self.unit}{pct}{extra}, {speed} {self.unit}/s, {timing}"

    def _emit(self) -> None:
        if self._last_printed == self.n:
            return
        self._last_printed = self.n
        print(self._line(), file=self.stream, flush=True)

    def update(self, k: int = 1) -> None:
        self.n += int(k)
        if self._next is not None and self.n >= self._next and (self.total is None or self.n < self.total):
            self._emit()
            self._next = self._following(self.n)
        elif self.total is not None and self.n >= self.total:
            self._emit()

    def set_postfix(self, refresh: bool = True, **fields) -> None:
        self._postfix = dict(fields)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.n != self._n0 and (self.total is None or self.n < self.total):
                self._emit()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Silent:
    """The same interface, printing nothing (progress switched off)."""

    def __init__(self, initial: int = 0):
        self.n = int(initial)

    def update(self, k: int = 1) -> None:
        self.n += int(k)

    def set_postfix(self, refresh: bool = True, **fields) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc) -> None:
        pass


def progress(
    total: int | None,
    desc: str = "",
    unit: str = "it",
    initial: int = 0,
    enabled: bool = True,
    stream: TextIO | None = None,
):
    """A progress reporter: tqdm on a terminal, `LogProgress` lines elsewhere, nothing when not `enabled`."""
    if not enabled:
        return _Silent(initial)
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=stream, dynamic_ncols=True)
    return LogProgress(total, desc=desc, unit=unit, initial=initial, stream=stream)
