"""The ablation stage of docs/reference_facts.md F7, as computations over question chunks (no I/O, no Dask).

1. `survey`: one clean pass over all varied questions: which the model answers (exact match of every answer
   token, F6.3), the mean activations (see `MeanRule`) and the attention patterns averaged over the answered
   questions.
2. `position_failures`: per position, the failures (F6.2 rule) when the residual stream there is overwritten
   by its mean after every layer; a position with failures is useful.
3. `node_failures`: per node at the useful positions (every head and the MLP of every layer), the failed flags
   and predicted answers of the answered questions under mean ablation, many nodes per forward
   (`analysis.ablate.ablated_logits`).

`MeanRule.COMPAT` reproduces the published analyses (F11): means over all varied questions before the failed
ones are removed, layer 0's reused for every layer. `MeanRule.CORRECTED` (the default) takes each layer's own
means over the questions the model answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch

from analysis.ablate import CleanRun, Means, Node, ablated_logits, clean_run, position_patches
from arith.model import Transformer
from arith.scoring import answer_nll, failure_mask
from arith.vocab import Layout

CHUNK = 512  # questions per clean pass (bounds the memory of the kept activations)


class MeanRule(Enum):
    CORRECTED = "corrected"
    COMPAT = "compat"


@dataclass
class Survey:
    """What one clean pass over the question set gives."""

    correct: np.ndarray  # bool [Q]
    pred: np.ndarray  # uint8 [Q, n+2]
    means: Means
    attention: np.ndarray  # float32 [layers, heads, P, P], mean over the answered questions

    @property
    def kept(self) -> np.ndarray:
        return np.flatnonzero(self.correct)


def _answers(tokens: torch.Tensor, layout: Layout) -> torch.Tensor:
    return tokens[:, layout.answer_start :]


class _MeanSums:
    """Running float64 sums of per-layer activations over chosen rows."""

    def __init__(self):
        self.n = 0
        self.z: list[torch.Tensor] | None = None
        self.mlp: list[torch.Tensor] | None = None
        self.resid: list[torch.Tensor] | None = None

    def add(self, clean: CleanRun, rows: torch.Tensor) -> None:
        if len(rows) == 0:
            return
        parts = [[t[rows].double().sum(0) for t in ts] for ts in (clean.z, clean.mlp_post, clean.resid_post)]
        if self.z is None:
            self.z, self.mlp, self.resid = parts
        else:
            for acc, new in zip((self.z, self.mlp, self.resid), parts, strict=True):
                for i, t in enumerate(new):
                    acc[i] += t
        self.n += len(rows)

    def means(self) -> Means:
        if self.n == 0 or self.z is None:
            raise ValueError("no questions to take means over")
        return Means(*([(t / self.n).float() for t in ts] for ts in (self.z, self.mlp, self.resid)))


@torch.inference_mode()
def survey(
    model: Transformer, tokens: torch.Tensor, layout: Layout, rule: MeanRule, chunk: int = CHUNK, on_chunk=None
) -> Survey:
    """Step 1 over `tokens` [Q, n_ctx]. `on_chunk(start, clean, correct_rows)` sees every chunk's clean run
    (the caller stores activations from it)."""
    all_sums, kept_sums = _MeanSums(), _MeanSums()
    correct = np.zeros(len(tokens), dtype=bool)
    pred = np.zeros((len(tokens), layout.n_answer), dtype=np.uint8)
    attn_sum = None
    n_kept = 0
    for start in range(0, len(tokens), chunk):
        tok = tokens[start : start + chunk]
        clean = clean_run(model, tok, layout, with_pattern=True)
        p = clean.logits.argmax(dim=-1)
        ok = (p == _answers(tok, layout)).all(dim=1)
        correct[start : start + len(tok)] = ok.cpu().numpy()
        pred[start : start + len(tok)] = p.to(torch.uint8).cpu().numpy()
        rows = torch.nonzero(ok).squeeze(1)
        all_sums.add(clean, torch.arange(len(tok), device=tok.device))
        kept_sums.add(clean, rows)
        pat = torch.stack([pt[rows].double().sum(0) for pt in clean.pattern])  # [layers, H, P, P]
        attn_sum = pat if attn_sum is None else attn_sum + pat
        n_kept += len(rows)
        if on_chunk is not None:
            on_chunk(start, clean, ok)
    if rule is MeanRule.COMPAT:
        means = all_sums.means().layer0_everywhere()
    else:
        means = kept_sums.means() if n_kept else all_sums.means()
    attention = (attn_sum / max(n_kept, 1)).float().cpu().numpy() if attn_sum is not None else np.zeros(0)
    return Survey(correct, pred, means, attention)


def _failed(logits: torch.Tensor, answers: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(failed by the F6.2 rule, predicted tokens) for logits [..., n+2, V] and answers [..., n+2]."""
    lead = logits.shape[:-2]
    nll = answer_nll(logits, answers.expand(logits.shape[:-1])).mean(dim=-1).cpu().numpy().reshape(-1)
    pred = logits.argmax(dim=-1)
    wrong = (pred != answers).cpu().numpy()
    failed = failure_mask(nll, wrong.reshape(len(nll), -1), "reference").reshape(lead)
    return failed, pred.to(torch.uint8).cpu().numpy()


@torch.inference_mode()
def position_failures(
    model: Transformer, tokens: torch.Tensor, layout: Layout, means: Means, chunk: int = CHUNK
) -> np.ndarray:
    """Step 2: failures per position [P] over `tokens` (the answered questions)."""
    P = layout.n_ctx
    out = np.zeros(P, dtype=np.int64)
    for start in range(0, len(tokens), chunk):
        tok = tokens[start : start + chunk]
        answers = _answers(tok, layout)
        for p in range(P):
            logits = model(tok, hooks=position_patches(p, means), logit_positions=layout.predict_slice)
            failed, _ = _failed(logits, answers)
            out[p] += int(failed.sum())
    return out


def candidate_nodes(useful_positions: list[int], n_layers: int, n_heads: int) -> list[Node]:
    """Every head and the MLP of every layer at each useful position, grouped by (position, layer) in node
    order: each group of n_heads + 1 nodes shares one ablated forward."""
    nodes = []
    for p in sorted(useful_positions):
        for layer in range(n_layers):
            nodes += [Node.head(p, layer, h) for h in range(n_heads)] + [Node.mlp(p, layer)]
    return nodes


def groups(nodes: list[Node]) -> list[tuple[int, int, list[int]]]:
    """(layer, position, indices into nodes) of each run of nodes sharing a layer and position."""
    out: list[tuple[int, int, list[int]]] = []
    for i, n in enumerate(nodes):
        if out and out[-1][0] == n.layer and out[-1][1] == n.position:
            out[-1][2].append(i)
        else:
            out.append((n.layer, n.position, [i]))
    return out


@torch.inference_mode()
def node_failures(
    model: Transformer, tokens: torch.Tensor, layout: Layout, means: Means, nodes: list[Node]
) -> tuple[np.ndarray, np.ndarray]:
    """Step 3 for `nodes` over `tokens` (answered questions, one chunk): failed [N, Q] bool, pred [N, Q, n+2]."""
    clean = clean_run(model, tokens, layout)
    answers = _answers(tokens, layout)
    failed = np.zeros((len(nodes), len(tokens)), dtype=bool)
    pred = np.zeros((len(nodes), len(tokens), layout.n_answer), dtype=np.uint8)
    for layer, position, idx in groups(nodes):
        logits = ablated_logits(model, clean, means, layer, position, [nodes[i] for i in idx], layout)
        f, pr = _failed(logits, answers)
        failed[idx], pred[idx] = f, pr
    return failed, pred
