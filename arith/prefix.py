"""Answer logits of many questions that share token prefixes, each shared prefix computed once.

In an exhaustive enumeration (x major, y minor) the questions of a block share `x` and the operation, then the
leading digits of `y`. Attention is causal, so the keys and values of a prefix's positions are the same for
every question that starts with it. The sequence is cut into segments (`prefix_splits`): x and the operator,
then one digit of y at a time, then the rest (the last digit of y, "=" and the answer tokens, different for
each question). Segment j is computed once per distinct token prefix ending with it, reading the keys and
values of the earlier positions from its parent prefix (one gather per layer); the last layer computes only the
answer-predicting positions, and the last token (which predicts nothing) is never computed.

Grouping is by distinct prefix (np.unique), so any order of questions works; exhaustive order shares the most.
The layers are computed with analysis.ablate's helpers (`_qkv`, `_out`, `_mlp_post`, `_mlp_out`), which match
arith.model; the results equal the plain forward up to float rounding (tests/test_precision.py), and callers
that need exact verdicts re-score borderline questions with the plain forward (arith.scoring).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from analysis.ablate import _mlp_out, _mlp_post, _out, _qkv, _unembed
from arith.model import Transformer
from arith.vocab import Layout


def prefix_splits(layout: Layout) -> tuple[int, ...]:
    """Segment boundaries: [0, n+1) x and the operator, then each digit of y but the last, then the rest up to
    (not including) the last token."""
    n = layout.n_digits
    return (0, *range(n + 1, 2 * n + 1), layout.n_ctx - 1)


def _layers(model: Transformer, x: torch.Tensor, start: int, past: list | None, lo: int | None):
    """Run every layer over new positions `start..start+S-1` (x [U, S, d]) given the parents' keys and values
    `past` (per layer (k, v) [U, H, start, dh], None when start == 0). Returns (x after the last layer,
    [(k, v) of positions 0..start+S-1 per layer]). With `lo`, the last layer computes positions >= lo only."""
    S = x.shape[1]
    qpos = torch.arange(start, start + S, device=x.device)[:, None]
    allowed = torch.arange(start + S, device=x.device)[None, :] <= qpos  # [S, start+S]
    kv = []
    last = len(model.blocks) - 1
    for layer, block in enumerate(model.blocks):
        q, k, v = _qkv(block, block.ln1(x))  # [U, H, S, dh]
        if past is not None:
            pk, pv = past[layer]
            k, v = torch.cat([pk.to(k.dtype), k], dim=2), torch.cat([pv.to(v.dtype), v], dim=2)
        kv.append((k, v))
        mask = allowed
        if layer == last and lo is not None and lo > start:
            cut = lo - start
            x, q, mask = x[:, cut:], q[:, :, cut:], allowed[cut:]
        z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
        x = x + _out(block, z.contiguous())
        x = x + _mlp_out(block, _mlp_post(block, block.ln2(x)))
    return x, kv


def _embed(model: Transformer, tokens: torch.Tensor, start: int) -> torch.Tensor:
    return F.embedding(tokens, model.embed.W_E) + model.pos_embed.W_pos[start : start + tokens.shape[1]]


@torch.inference_mode()
def prefix_answer_logits(
    model: Transformer, tokens: torch.Tensor, layout: Layout, batch_size: int = 1024, splits: tuple | None = None
) -> torch.Tensor:
    """Logits at the n+2 answer-predicting positions [N, n+2, d_vocab] (float32) of full sequences
    `tokens` [N, n_ctx] (on the model's device), each distinct prefix computed once. Runs in the caller's
    autocast context (bf16 or fp32)."""
    splits = prefix_splits(layout) if splits is None else splits
    N = tokens.shape[0]
    host = tokens.cpu().numpy()
    past: list | None = None
    parent_of_row: np.ndarray | None = None  # [N]: each question's distinct prefix at the previous level
    for j in range(len(splits) - 2):  # shared levels
        lo, hi = splits[j], splits[j + 1]
        _uniq, first, inverse = np.unique(host[:, :hi], axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        rows = torch.as_tensor(first, device=tokens.device)
        new = _embed(model, tokens[rows, lo:hi], lo)
        parents = None
        if past is not None:
            p = torch.as_tensor(parent_of_row[first], device=tokens.device)
            parents = [(k[p], v[p]) for k, v in past]
        _x, past = _layers(model, new, lo, parents, None)
        parent_of_row = inverse
    lo = splits[-2]
    first_pred = layout.predict_slice.start
    if not lo <= first_pred or splits[-1] != layout.predict_slice.stop:
        raise ValueError("the last segment must hold every answer-predicting position")
    out = torch.empty((N, layout.n_answer, model.shape.d_vocab), dtype=torch.float32, device=tokens.device)
    parent_dev = None if parent_of_row is None else torch.as_tensor(parent_of_row, device=tokens.device)
    for start in range(0, N, batch_size):  # the last level: one row per question
        sl = slice(start, start + batch_size)
        new = _embed(model, tokens[sl, lo : splits[-1]], lo)
        parents = None
        if past is not None:
            p = parent_dev[sl]
            parents = [(k[p], v[p]) for k, v in past]
        x, _kv = _layers(model, new, lo, parents, first_pred)  # x: the answer-predicting positions
        out[sl] = _unembed(model, x).float()
    return out
