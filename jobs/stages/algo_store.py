"""The algorithm-search layout of the store: `runs/<name>/<name>.zarr/algo/<mode>/trials` (one BlockGroup).

    algo/<mode>/trials  one block per intervening task (SS, SC, SA, ST, then MD, MB, MT, ND, NB, GT for a
                        subtraction model), in notebook order:
        n_trials int64 [b]; pred uint8 [b, T, n+2] (the intervened answer of every trial row, T = the largest
        task's trial count); passed uint8 [b, T] (the row's test rule held)

`<mode>` is `compat` (the reference's filters) or `corrected` (the intended ones). The fingerprint holds the
weights' and behaviour records' sha256, the mode, the operations and the layout version, so the trial table
(a pure function of those, `analysis.algo.plan`) is the same for every task and every reduction. Besides the
generic checks, each block's rows are checked before they count: its trial count, tokens in the vocabulary,
0/1 flags, zero padding; the reduction also recomputes the flags from the answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from arith.vocab import D_VOCAB
from hpc.store import BlockGroup

LAYOUT_VERSION = 1
GROUP = "algo"


@dataclass(frozen=True)
class TrialsGroup(BlockGroup):
    n_digits: int = 0
    max_trials: int = 1
    n_trials: tuple[int, ...] = ()  # per block (task)

    DATA_ARRAYS: ClassVar[tuple[str, ...]] = ("n_trials", "pred", "passed")

    def specs(self) -> dict:
        b, t, a = self.n_blocks, self.max_trials, self.n_digits + 2
        return {"n_trials": ((b,), "int64"), "pred": ((b, t, a), "uint8"), "passed": ((b, t), "uint8")}

    def check_rows(self, blocks, data) -> dict[int, str]:
        problems: dict[int, str] = {}
        for k in blocks.tolist():
            rows = self.n_trials[k]
            pred, passed = data["pred"][k], data["passed"][k]
            if int(data["n_trials"][k]) != rows:
                problems[k] = f"{int(data['n_trials'][k])} trials, the task has {rows}"
            elif (pred >= D_VOCAB).any() or pred[rows:].any():
                problems[k] = "answers out of range"
            elif (passed > 1).any() or passed[rows:].any():
                problems[k] = "pass flags out of range"
        return problems
