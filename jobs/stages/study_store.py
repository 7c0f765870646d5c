"""The intervention studies' layout of the store: `<name>.zarr/study/<kind>/...` (issue 22), one BlockGroup per
study. A sufficiency or patch block k is (seed index s, question chunk c), k = s * n_chunks + c; axis `model` is 0
for the trained model and 1 for its untrained twin (same shape, weights drawn from the seed), so the control runs
in the same blocks.

    study/sufficiency/<replace>/<nodes>   (<nodes>: 12 hex digits of the node set's sha256)
                                  tested int64 [b, C]; failed int64 [b, 2, G, C]; wrong int64 [b, 2, G, C, n+2]
                                  (G keep-sets: baseline, circuit, complement, empty, random sets, restoration
                                  groups; C question classes; n+2 answer tokens): `analysis.interventions.Counts`
    study/patch/<nodes|path>/<A<k>|all>
                                  tested, changed int64 [b, 2, K, 2]; flips int64 [b, 2, K, 2, U] (K answer digits,
                                  test then null pairs, U nodes of the universe): `analysis.interventions.Flips`;
                                  with --path also path_flips int64 [b, 2, K, 2, N] (N head -> MLP paths)
    study/probe/acts              n_rows int64 [b]; acts float32 [b, 2, chunk, S, d_model] (the residual stream
                                  before and after every layer at every position; one block per question chunk)

The fingerprint (what the numbers depend on) holds the weights' sha256, the questions' sha256, the node set, the
study's settings and LAYOUT_VERSION, so a store made another way is refused (or redone with --fresh). Besides the
generic checks, a block's counts must be non-negative and at most the questions it tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from hpc.store import BlockGroup

LAYOUT_VERSION = 1
GROUP = "study"
MODELS = 2  # the trained model, its untrained twin


@dataclass(frozen=True)
class SufficiencyGroup(BlockGroup):
    n_rows: int = 1  # keep-sets G
    n_classes: int = 1
    n_answer: int = 1  # n + 2

    DATA_ARRAYS: ClassVar[tuple[str, ...]] = ("tested", "failed", "wrong")

    def specs(self) -> dict:
        b, g, c, a = self.n_blocks, self.n_rows, self.n_classes, self.n_answer
        return {
            "tested": ((b, c), "int64"),
            "failed": ((b, MODELS, g, c), "int64"),
            "wrong": ((b, MODELS, g, c, a), "int64"),
        }

    def check_rows(self, blocks, data) -> dict[int, str]:
        problems: dict[int, str] = {}
        for k in blocks.tolist():
            t = data["tested"][k]
            if (t < 0).any() or (data["failed"][k] < 0).any() or (data["wrong"][k] < 0).any():
                problems[k] = "negative counts"
            elif (data["failed"][k] > t).any() or (data["wrong"][k] > t[:, None]).any():
                problems[k] = "more failures than questions"
        return problems


@dataclass(frozen=True)
class PatchGroup(BlockGroup):
    n_digits_k: int = 1  # answer digits K
    n_nodes: int = 1
    n_paths: int = 0  # 0: no path patching

    DATA_ARRAYS: ClassVar[tuple[str, ...]] = ("tested", "changed", "flips", "path_flips")

    def specs(self) -> dict:
        b, k = self.n_blocks, self.n_digits_k
        return {
            "tested": ((b, MODELS, k, 2), "int64"),
            "changed": ((b, MODELS, k, 2), "int64"),
            "flips": ((b, MODELS, k, 2, self.n_nodes), "int64"),
            "path_flips": ((b, MODELS, k, 2, max(self.n_paths, 1)), "int64"),
        }

    def check_rows(self, blocks, data) -> dict[int, str]:
        problems: dict[int, str] = {}
        for k in blocks.tolist():
            t = data["tested"][k]
            arrays = (t, data["changed"][k], data["flips"][k], data["path_flips"][k])
            if any((a < 0).any() for a in arrays):
                problems[k] = "negative counts"
            elif (data["changed"][k] > t).any() or (data["flips"][k] > t[..., None]).any():
                problems[k] = "more flips than pairs"
            elif (data["path_flips"][k] > t[..., None]).any():
                problems[k] = "more flips than pairs"
        return problems


@dataclass(frozen=True)
class ActsGroup(BlockGroup):
    chunk: int = 1
    n_sites: int = 1
    width: int = 1
    rows: tuple[int, ...] = ()  # questions per block

    DATA_ARRAYS: ClassVar[tuple[str, ...]] = ("n_rows", "acts")

    def specs(self) -> dict:
        b = self.n_blocks
        return {"n_rows": ((b,), "int64"), "acts": ((b, MODELS, self.chunk, self.n_sites, self.width), "float32")}

    def check_rows(self, blocks, data) -> dict[int, str]:
        problems: dict[int, str] = {}
        for k in blocks.tolist():
            rows = self.rows[k]
            a = data["acts"][k]
            if int(data["n_rows"][k]) != rows:
                problems[k] = f"{int(data['n_rows'][k])} questions, the block has {rows}"
            elif not np.isfinite(a).all() or a[:, rows:].any():
                problems[k] = "activations not finite or padding not zero"
        return problems
