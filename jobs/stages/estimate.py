"""What a regeneration will cost, for `varith regenerate --dry-run`: training steps and verification questions
per model, and, given measured rates, device-hours per stage and in total.

Rates come from `--rates FILE`, the JSON lines `make bench` prints (and keeps in `bench/out/bench.jsonl`):
`training_steps_d<N>` (steps/s) and `verify_throughput_d<N>` (questions/s) of the add_dN_l2_h3 shapes at the
published widths (bench/bench_shapes.py; bench_core's d6 figures count too). A model of another shape gets the
rate of the measured digit count nearest to its own, scaled by the ratio of forward FLOPs (arith.model
ModelShape.forward_flops), since both stages are dominated by the forward (and backward) passes. Measured on the
cluster's GPU, the figures are GPU-hours; measured here, they are this machine's hours. The ablation and
algorithm search are not estimated (their cost depends on how many nodes a model turns out to use).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from arith.errors import InputError
from arith.model import ModelShape
from arith.names import parse_name
from arith.vocab import Layout

_FIGURE = re.compile(r"^(training_steps|verify_throughput)_d(\d+)$")


@dataclass(frozen=True)
class Rates:
    """Measured rates of the add_dN_l2_h3 shapes (published widths): steps/s and questions/s by digit count."""

    train: dict[int, float]
    verify: dict[int, float]
    source: str

    @staticmethod
    def read(path: str | Path) -> Rates:
        """The rates in a `make bench` output (one JSON object per line; other lines are skipped)."""
        train: dict[int, float] = {}
        verify: dict[int, float] = {}
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            raise InputError(f"--rates {path}: unreadable ({exc.strerror})") from None
        for line in lines:
            try:
                row = json.loads(line)
                m = _FIGURE.match(row.get("figure", ""))
                value = float(row["value"])
            except (ValueError, TypeError, KeyError, AttributeError):
                continue
            if m and value > 0:
                (train if m.group(1) == "training_steps" else verify)[int(m.group(2))] = value
        if not train and not verify:
            raise InputError(
                f"--rates {path}: no training_steps_d<N> or verify_throughput_d<N> figure (the output of make bench)"
            )
        return Rates(train, verify, str(path))

    @staticmethod
    def _at(table: dict[int, float], shape: ModelShape, n_digits: int) -> float | None:
        if not table:
            return None
        nearest = min(table, key=lambda n: (abs(n - n_digits), n))
        measured = ModelShape(n_layers=2, n_heads=3, n_ctx=Layout(nearest).n_ctx)
        return table[nearest] * measured.forward_flops() / shape.forward_flops()

    def train_at(self, shape: ModelShape, n_digits: int) -> float | None:
        return self._at(self.train, shape, n_digits)

    def verify_at(self, shape: ModelShape, n_digits: int) -> float | None:
        return self._at(self.verify, shape, n_digits)


@dataclass(frozen=True)
class Cost:
    """One model's work: training steps, verification questions, and hours at the rates (None: no rate)."""

    steps: int
    questions: int
    train_h: float | None
    verify_h: float | None


def model_cost(run_name: str, questions_per_op: int, ops: int, rates: Rates | None, train: bool = True) -> Cost:
    """The cost of one model of the plan (`run_name` carries its step count; `train` False: already trained)."""
    name = parse_name(run_name)
    shape = ModelShape.for_name(name)
    steps = name.steps if train else 0
    questions = questions_per_op * ops
    if rates is None:
        return Cost(steps, questions, None, None)
    step_rate, question_rate = rates.train_at(shape, name.n_digits), rates.verify_at(shape, name.n_digits)
    train_h = steps / step_rate / 3600 if step_rate else None
    verify_h = questions / question_rate / 3600 if question_rate else None
    return Cost(steps, questions, train_h, verify_h)


def _hours(values: Sequence[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "unknown"
    total = f"{sum(known):,.2f} h"
    return total if len(known) == len(values) else f"{total} (+ {len(values) - len(known)} without a rate)"


def total_lines(costs: Sequence[Cost], rates: Rates | None) -> list[str]:
    """The plan's totals, as dry-run comment lines."""
    lines = [
        f"# compute: {sum(c.steps for c in costs):,} training steps, "
        f"{sum(c.questions for c in costs):,} verification questions"
    ]
    if rates is None:
        lines.append("# hours: pass --rates FILE (the JSON lines of `make bench`, on the cluster's GPU) to estimate")
    else:
        train, verify = _hours([c.train_h for c in costs]), _hours([c.verify_h for c in costs])
        known = [h for c in costs for h in (c.train_h, c.verify_h) if h is not None]
        lines.append(
            f"# hours at the rates of {rates.source}: train {train}, verify {verify}, total {sum(known):,.2f} h "
            "(ablate and algo not estimated)"
        )
    return lines
