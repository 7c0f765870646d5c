"""The fast scoring forward: answer logits computed only where they are needed, shared prefixes computed once.

Three savings over the plain forward (arith.model), each exact up to float rounding:
- layer 0's queries, keys and values depend only on (position, token) (its input is the token plus the
  position embedding), so they are looked up in a table of every (position, token) pair, computed once per call;
- the last layer computes keys and values at every position but queries, attention output and MLP only at the
  answer-predicting positions; the last token, which predicts nothing, is never computed;
- with `share=True`, questions that share token prefixes compute them once. In an exhaustive enumeration (x major,
  y minor) the questions of a block share `x` and the operation, then the leading digits of `y`. Attention is
  causal, so the keys and values of a prefix's positions are the same for every question that starts with it. The
  sequence is cut into segments (`prefix_splits`): x and the operator, then one digit of y at a time, then the rest
  (the last digit of y, "=" and the answer tokens, different for each question). Segment j is computed once per
  distinct token prefix ending with it, reading the keys and values of the earlier positions from its parent prefix
  (one gather per layer). Grouping is by distinct prefix (np.unique), so any order of questions works; exhaustive
  order shares the most. Random questions share little: they run as one segment (`share=False`).

The results equal the plain forward up to float rounding (tests/test_precision.py); callers that need exact verdicts
re-score borderline questions with the plain forward (arith.scoring).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from arith.model import Transformer, attn_out, fused_qkv, mlp_out, mlp_post, unembed
from arith.vocab import Layout


def prefix_splits(layout: Layout) -> tuple[int, ...]:
    """Segment boundaries: [0, n+1) x and the operator, then each digit of y but the last, then the rest up to
    (not including) the last token."""
    n = layout.n_digits
    return (0, *range(n + 1, 2 * n + 1), layout.n_ctx - 1)


@dataclass(frozen=True)
class _Prepared:
    """What one call computes once: per layer the fused [d, 3*H*dh] query/key/value projection (and its bias), in
    the dtype the matmuls run in; and layer 0's q, k, v for every (position, token) [n_ctx, V, 3, H, dh]."""

    w_qkv: tuple[torch.Tensor, ...]
    b_qkv: tuple[torch.Tensor, ...]
    table: torch.Tensor
    heads: int
    d_head: int


def _prepare(model: Transformer) -> _Prepared:
    device = model.embed.W_E.device
    dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else torch.float32
    ws, bs = [], []
    for block in model.blocks:
        w, b = fused_qkv(block.attn)
        ws.append(w.to(dtype))
        bs.append(b.to(dtype))
    h, _, dh = model.blocks[0].attn.W_Q.shape
    P, V = model.shape.n_ctx, model.shape.d_vocab
    x0 = model.embed.W_E[None, :, :] + model.pos_embed.W_pos[:, None, :]  # [P, V, d]
    table = torch.addmm(bs[0], model.blocks[0].ln1(x0).reshape(P * V, -1).to(dtype), ws[0])
    return _Prepared(tuple(ws), tuple(bs), table.view(P, V, 3, h, dh), h, dh)


def _qkv(prep: _Prepared, layer: int, block, x: torch.Tensor, tokens: torch.Tensor, start: int):
    """q, k, v [U, H, S, dh] at positions start..start+S-1 (layer 0 from the table, others by the matmul)."""
    U, S, d = x.shape
    if layer == 0:
        pos = torch.arange(start, start + S, device=x.device)
        qkv = prep.table[pos[None, :], tokens]  # [U, S, 3, H, dh]
    else:
        w, b = prep.w_qkv[layer], prep.b_qkv[layer]
        qkv = torch.addmm(b, block.ln1(x).reshape(U * S, d).to(w.dtype), w).view(U, S, 3, prep.heads, prep.d_head)
    qkv = qkv.permute(2, 0, 3, 1, 4)
    return qkv[0], qkv[1], qkv[2]


def _last_qkv(prep: _Prepared, layer: int, block, x: torch.Tensor, tokens: torch.Tensor, start: int, cut: int):
    """The last layer's q at positions start+cut.. only, k and v at every position (layer > 0 saves the query
    projection of the first `cut` positions)."""
    if layer == 0:
        q, k, v = _qkv(prep, 0, block, x, tokens, start)
        return q[:, :, cut:], k, v
    U, S, d = x.shape
    H, dh = prep.heads, prep.d_head
    w, b = prep.w_qkv[layer], prep.b_qkv[layer]
    normed = block.ln1(x).to(w.dtype)
    kv = torch.addmm(b[H * dh :], normed.reshape(U * S, d), w[:, H * dh :]).view(U, S, 2, H, dh).permute(2, 0, 3, 1, 4)
    q = torch.addmm(b[: H * dh], normed[:, cut:].reshape(U * (S - cut), d), w[:, : H * dh])
    return q.view(U, S - cut, H, dh).transpose(1, 2), kv[0], kv[1]


def _layers(model, prep, tokens: torch.Tensor, start: int, past: list | None, lo: int | None):
    """Run every layer over new positions `start..start+S-1` (tokens [U, S]) given the parents' keys and values
    `past` (per layer (k, v) [U, H, start, dh], None when start == 0). Returns (x after the last layer, [(k, v) of
    positions 0..start+S-1 per layer]). With `lo`, the last layer computes positions >= lo only."""
    S = tokens.shape[1]
    x = F.embedding(tokens, model.embed.W_E) + model.pos_embed.W_pos[start : start + S]
    qpos = torch.arange(start, start + S, device=x.device)[:, None]
    allowed = torch.arange(start + S, device=x.device)[None, :] <= qpos  # [S, start+S]
    kv = []
    last = len(model.blocks) - 1
    for layer, block in enumerate(model.blocks):
        cut = lo - start if layer == last and lo is not None and lo > start else 0
        if cut:
            q, k, v = _last_qkv(prep, layer, block, x, tokens, start, cut)
        else:
            q, k, v = _qkv(prep, layer, block, x, tokens, start)
        if past is not None:
            pk, pv = past[layer]
            k, v = torch.cat([pk.to(k.dtype), k], dim=2), torch.cat([pv.to(v.dtype), v], dim=2)
        kv.append((k, v))
        x, mask = x[:, cut:], allowed[cut:]
        z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
        x = x + attn_out(block.attn, z.contiguous())
        x = x + mlp_out(block.mlp, mlp_post(block.mlp, block.ln2(x)))
    return x, kv


@torch.inference_mode()
def prefix_answer_logits(
    model: Transformer,
    tokens: torch.Tensor,
    layout: Layout,
    batch_size: int = 1024,
    share: bool = True,
    splits: tuple | None = None,
) -> torch.Tensor:
    """Logits at the n+2 answer-predicting positions [N, n+2, d_vocab] (float32) of full sequences `tokens`
    [N, n_ctx] (on the model's device): with `share`, each distinct prefix computed once (`splits`, by default
    `prefix_splits`); without, every question as one segment. Runs in the caller's autocast context (bf16 or
    fp32)."""
    if splits is None:
        splits = prefix_splits(layout) if share else (0, layout.n_ctx - 1)
    prep = _prepare(model)
    N = tokens.shape[0]
    host = tokens.cpu().numpy() if len(splits) > 2 else None  # prefixes are grouped on the host
    past: list | None = None
    parent_of_row: np.ndarray | None = None  # [N]: each question's distinct prefix at the previous level
    for j in range(len(splits) - 2):  # shared levels
        lo, hi = splits[j], splits[j + 1]
        _uniq, first, inverse = np.unique(host[:, :hi], axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        rows = torch.as_tensor(first, device=tokens.device)
        parents = None
        if past is not None:
            p = torch.as_tensor(parent_of_row[first], device=tokens.device)
            parents = [(k[p], v[p]) for k, v in past]
        _x, past = _layers(model, prep, tokens[rows, lo:hi], lo, parents, None)
        parent_of_row = inverse
    lo = splits[-2]
    first_pred = layout.predict_slice.start
    if not lo <= first_pred or splits[-1] != layout.predict_slice.stop:
        raise ValueError("the last segment must hold every answer-predicting position")
    out = torch.empty((N, layout.n_answer, model.shape.d_vocab), dtype=torch.float32, device=tokens.device)
    parent_dev = None if parent_of_row is None else torch.as_tensor(parent_of_row, device=tokens.device)
    for start in range(0, N, batch_size):  # the last level: one row per question
        sl = slice(start, start + batch_size)
        parents = None
        if past is not None:
            p = parent_dev[sl]
            parents = [(k[p], v[p]) for k, v in past]
        x, _kv = _layers(model, prep, tokens[sl, lo : splits[-1]], lo, parents, first_pred)
        out[sl] = unembed(model, x).float()
    return out
