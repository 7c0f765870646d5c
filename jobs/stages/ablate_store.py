"""The ablation layout of the store: `runs/<name>/<name>.zarr/ablate/` (four `hpc.store.BlockGroup`s).

    ablate/questions  one block, written by the driver: the question set
        x, y uint8 [1, Q, n], op uint8 [1, Q]
    ablate/survey     one block per chunk of CHUNK questions (analysis.ablation.survey on the chunk)
        n_rows int64 [c]; correct uint8 [c, CHUNK]; pred uint8 [c, CHUNK, n+2]
        sum_{z,mlp,resid}_{all,kept} float64 [c, layers, P, ...]; n_kept int64 [c]
        attn_sum float64 [c, layers, heads, P, P]  (over the answered questions)
        resid float32 [c, CHUNK, layers, P, d_model]; head_z float32 [c, CHUNK, layers, P, heads, d_head]
        (mlp float32 [c, CHUNK, layers, P, d_mlp] with save_mlp): the activations, chunked by question
    ablate/means      one block, written by the driver from the survey sums (the rule of the mode)
        z [1, layers, P, heads, d_head], mlp [1, layers, P, d_mlp], resid [1, layers, P, d_model],
        attention [1, layers, heads, P, P] float32; n_kept int64 [1]
    ablate/positions  one block per question chunk: failures int64 [c, P] under the residual overwrite
    ablate/nodes      one block per (question chunk, node block): failed uint8 [b, NODES, CHUNK] and the
                      predicted answers pred uint8 [b, NODES, CHUNK, n+2]; the node table (position, layer,
                      is_head, num) in the group's attributes

Every group's fingerprint holds the weights' and questions' sha256, the mode, the chunk size and the layout
version (and the node table for `nodes`), so a store made by other weights or settings is refused. Besides
the generic checks (chunks exist and decode), each block's rows are checked before they count: row counts,
0/1 flags, padding rows zero, tokens in the vocabulary, failures within the answered questions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from analysis.ablation import CHUNK  # questions per survey / position / node block (one definition)
from arith.model import ModelShape
from arith.vocab import D_VOCAB
from hpc.store import BlockGroup

LAYOUT_VERSION = 1
NODE_GROUPS_PER_BLOCK = 4  # (position, layer) groups of heads + MLP per node block
GROUP = "ablate"


def n_chunks(n_questions: int) -> int:
    return max(1, -(-n_questions // CHUNK))


def chunk_rows(n_questions: int, c: int) -> int:
    return max(0, min(CHUNK, n_questions - c * CHUNK))


@dataclass(frozen=True)
class QuestionsGroup(BlockGroup):
    n_questions: int = 0
    n_digits: int = 0

    DATA_ARRAYS: ClassVar[tuple[str, ...]] = ("x", "y", "op")

    def specs(self) -> dict:
        q, n = self.n_questions, self.n_digits
        return {"x": ((1, q, n), "uint8"), "y": ((1, q, n), "uint8"), "op": ((1, q), "uint8")}

    def check_rows(self, blocks, data) -> dict[int, str]:
        if (data["x"] > 9).any() or (data["y"] > 9).any() or (data["op"] > 2).any():
            return {0: "questions out of range"}
        return {}

    def read(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        data = self.read_checked()
        return data["x"][0], data["y"][0], data["op"][0]


@dataclass(frozen=True)
class SurveyGroup(BlockGroup):
    n_questions: int = 0
    n_digits: int = 0
    shape: ModelShape | None = None
    save_mlp: bool = False

    SUMS: ClassVar[tuple[str, ...]] = tuple(f"sum_{a}_{b}" for a in ("z", "mlp", "resid") for b in ("all", "kept"))

    @property
    def DATA_ARRAYS(self) -> tuple[str, ...]:  # noqa: N802 - the BlockGroup attribute
        base = ("n_rows", "correct", "pred", "n_kept", "attn_sum", *self.SUMS, "resid", "head_z")
        return (*base, "mlp") if self.save_mlp else base

    def specs(self) -> dict:
        s, c, P, a = self.shape, self.n_blocks, 3 * self.n_digits + 4, self.n_digits + 2
        L, H, dh, d, m = s.n_layers, s.n_heads, s.d_head, s.d_model, s.d_mlp
        out = {
            "n_rows": ((c,), "int64"),
            "correct": ((c, CHUNK), "uint8"),
            "pred": ((c, CHUNK, a), "uint8"),
            "n_kept": ((c,), "int64"),
            "attn_sum": ((c, L, H, P, P), "float64"),
            "resid": ((c, CHUNK, L, P, d), "float32"),
            "head_z": ((c, CHUNK, L, P, H, dh), "float32"),
        }
        for which in ("all", "kept"):
            out[f"sum_z_{which}"] = ((c, L, P, H, dh), "float64")
            out[f"sum_mlp_{which}"] = ((c, L, P, m), "float64")
            out[f"sum_resid_{which}"] = ((c, L, P, d), "float64")
        if self.save_mlp:
            out["mlp"] = ((c, CHUNK, L, P, m), "float32")
        return out

    def answered(self, c: int) -> np.ndarray:
        """bool [rows of chunk c]: which of the chunk's questions the model answers (read by the later stages,
        after the driver checked the survey)."""
        return np.asarray(self._array("correct", "r")[c])[: chunk_rows(self.n_questions, c)].astype(bool)

    def check_rows(self, blocks, data) -> dict[int, str]:
        problems: dict[int, str] = {}
        for k in blocks.tolist():
            rows = chunk_rows(self.n_questions, k)
            correct, pred = data["correct"][k], data["pred"][k]
            if int(data["n_rows"][k]) != rows:
                problems[k] = f"{int(data['n_rows'][k])} rows, the chunk has {rows}"
            elif (correct > 1).any() or correct[rows:].any() or pred[rows:].any() or (pred >= D_VOCAB).any():
                problems[k] = "answers out of range"
            elif int(data["n_kept"][k]) != int(correct.sum()):
                problems[k] = "n_kept differs from the answered questions"
            elif not all(np.isfinite(data[s][k]).all() for s in self.SUMS) or (data["attn_sum"][k] < 0).any():
                problems[k] = "sums not finite"
        return problems


@dataclass(frozen=True)
class MeansGroup(BlockGroup):
    n_digits: int = 0
    shape: ModelShape | None = None

    DATA_ARRAYS: ClassVar[tuple[str, ...]] = ("z", "mlp", "resid", "attention", "n_kept")

    def specs(self) -> dict:
        s, P = self.shape, 3 * self.n_digits + 4
        L, H = s.n_layers, s.n_heads
        return {
            "z": ((1, L, P, H, s.d_head), "float32"),
            "mlp": ((1, L, P, s.d_mlp), "float32"),
            "resid": ((1, L, P, s.d_model), "float32"),
            "attention": ((1, L, H, P, P), "float32"),
            "n_kept": ((1,), "int64"),
        }

    def check_rows(self, blocks, data) -> dict[int, str]:
        if not all(np.isfinite(data[n]).all() for n in ("z", "mlp", "resid", "attention")):
            return {0: "means not finite"}
        return {}


@dataclass(frozen=True)
class PositionsGroup(BlockGroup):
    n_ctx: int = 0
    n_kept: tuple[int, ...] = ()  # answered questions per chunk

    DATA_ARRAYS: ClassVar[tuple[str, ...]] = ("failures",)

    def specs(self) -> dict:
        return {"failures": ((self.n_blocks, self.n_ctx), "int64")}

    def check_rows(self, blocks, data) -> dict[int, str]:
        f = data["failures"]
        return {
            k: "failures out of range" for k in blocks.tolist() if (f[k] < 0).any() or (f[k] > self.n_kept[k]).any()
        }


@dataclass(frozen=True)
class NodesGroup(BlockGroup):
    n_digits: int = 0
    n_node_blocks: int = 0
    nodes_per_block: int = 0
    n_kept: tuple[int, ...] = ()  # answered questions per question chunk

    DATA_ARRAYS: ClassVar[tuple[str, ...]] = ("failed", "pred")

    def specs(self) -> dict:
        b, npb, a = self.n_blocks, self.nodes_per_block, self.n_digits + 2
        return {"failed": ((b, npb, CHUNK), "uint8"), "pred": ((b, npb, CHUNK, a), "uint8")}

    def block(self, k: int) -> tuple[int, int]:
        """(question chunk, node block) of block k."""
        return divmod(k, self.n_node_blocks)

    def check_rows(self, blocks, data) -> dict[int, str]:
        problems: dict[int, str] = {}
        for k in blocks.tolist():
            rows = self.n_kept[self.block(k)[0]]
            failed, pred = data["failed"][k], data["pred"][k]
            if (failed > 1).any() or failed[:, rows:].any() or pred[:, rows:].any() or (pred >= D_VOCAB).any():
                problems[k] = "node results out of range"
        return problems


@dataclass(frozen=True)
class PcaGroup(BlockGroup):
    """One block, written by the driver: PCA metrics (analysis.pca.METRICS) per (useful head, digit, op)."""

    n_heads_useful: int = 0
    n_digits: int = 0

    DATA_ARRAYS: ClassVar[tuple[str, ...]] = ("metrics",)

    def specs(self) -> dict:
        return {"metrics": ((1, max(1, self.n_heads_useful), self.n_digits, 2, 4), "float64")}

    def check_rows(self, blocks, data) -> dict[int, str]:
        return {} if np.isfinite(data["metrics"]).all() else {0: "metrics not finite"}
