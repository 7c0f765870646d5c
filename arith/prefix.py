"""The fast scoring forward: answer logits computed only where they are needed, shared prefixes computed once.

Four savings over the plain forward (arith.model), each exact up to float rounding:
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
- the last segment, where every question is its own row, runs in groups of the (up to ten) questions of one parent:
  a group attends as one sequence (the parent's positions once, then each member's own) under a mask that keeps
  members apart, so a parent's keys and values are read where they lie instead of being copied for every question
  (`_grouped_attention`). On the add_d6_l2_h3 widths a 4-digit exhaustive block ran about 4% faster so on an idle
  2-core CPU (the gather and concatenation were about a fifth of the profile's time, mostly memory traffic).

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


def _layers(model, prep, tokens: torch.Tensor, start: int, past: list | None, lo: int | None, group: int = 1):
    """Run every layer over new positions `start..start+S-1` (tokens [U, S]) given the parents' keys and values
    `past` (per layer (k, v) [U/group, H, start, dh], each shared by `group` consecutive rows; None when start == 0).
    Returns (x after the last layer, [(k, v) of positions 0..start+S-1 per layer], or None with `group` > 1, where
    parents are read in place and nothing is kept). With `lo`, the last layer computes positions >= lo only."""
    S = tokens.shape[1]
    x = F.embedding(tokens, model.embed.W_E) + model.pos_embed.W_pos[start : start + S]
    qpos = torch.arange(start, start + S, device=x.device)[:, None]
    allowed = torch.arange(start + S, device=x.device)[None, :] <= qpos  # [S, start+S]
    kv = [] if group == 1 else None
    last = len(model.blocks) - 1
    for layer, block in enumerate(model.blocks):
        cut = lo - start if layer == last and lo is not None and lo > start else 0
        if cut:
            q, k, v = _last_qkv(prep, layer, block, x, tokens, start, cut)
        else:
            q, k, v = _qkv(prep, layer, block, x, tokens, start)
        if past is not None and group > 1:
            z = _grouped_attention(q, k, v, past[layer], group, allowed[cut:, start:])
        else:
            if past is not None:
                pk, pv = past[layer]
                k, v = torch.cat([pk.to(k.dtype), k], dim=2), torch.cat([pv.to(v.dtype), v], dim=2)
            if kv is not None:
                kv.append((k, v))
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[cut:]).transpose(1, 2)
        x = x[:, cut:]
        x = x + attn_out(block.attn, z.contiguous())
        x = x + mlp_out(block.mlp, mlp_post(block.mlp, block.ln2(x)))
    return x, kv


def _grouped_attention(q, k, v, parent: tuple, group: int, own: torch.Tensor) -> torch.Tensor:
    """Attention of rows that share their parent in runs of `group` (q [U, H, Sq, dh], their own keys and values
    k, v [U, H, S, dh], the parents' (k, v) [U/group, H, P, dh]; `own` [Sq, S]: which own positions each query
    sees). Each group is one sequence: its parent's P positions once, then every member's S positions, with a
    mask that lets a member see the parent and its own positions only. So a parent's keys and values are read
    where they lie, never copied per member. Returns z [U, Sq, H, dh]."""
    pk, pv = parent
    U, H, Sq, dh = q.shape
    S, G = k.shape[2], U // group

    def members(t, n):  # [U, H, n, dh] -> [G, H, group*n, dh]
        return t.reshape(G, group, H, n, dh).transpose(1, 2).reshape(G, H, group * n, dh)

    keys = torch.cat([pk.to(k.dtype), members(k, S)], dim=2)
    values = torch.cat([pv.to(v.dtype), members(v, S)], dim=2)
    same = torch.eye(group, dtype=torch.bool, device=q.device)
    mask = (same[:, None, :, None] & own[None, :, None, :]).reshape(group * Sq, group * S)
    mask = torch.cat([mask.new_ones(group * Sq, pk.shape[2]), mask], dim=1)
    z = F.scaled_dot_product_attention(members(q, Sq), keys, values, attn_mask=mask)  # [G, H, group*Sq, dh]
    return z.view(G, H, group, Sq, dh).permute(0, 2, 3, 1, 4).reshape(U, Sq, H, dh)


def _grouping(parent: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Questions grouped by their parent prefix, so that a group's attention reads its parent's keys and values
    once: slots [G, C] (question indices; a short group padded by repeating its first question), which slots are
    real [G, C], and each group's parent [G]. Where padding would add more than half again as many rows (questions
    in an order that shares little), one question per group."""
    N = len(parent)
    order = np.argsort(parent, kind="stable")
    ps = parent[order]
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
    counts = np.diff(np.r_[starts, N])
    C = int(counts.max())
    if len(starts) * C * 2 > 3 * N:
        return np.arange(N)[:, None], np.ones((N, 1), dtype=bool), parent
    gid = np.repeat(np.arange(len(starts)), counts)
    rank = np.arange(N) - starts[gid]
    slots = np.repeat(order[starts], C).reshape(-1, C)
    slots[gid, rank] = order
    real = np.zeros(slots.shape, dtype=bool)
    real[gid, rank] = True
    return slots, real, ps[starts]


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
    if parent_of_row is None:
        slots, real, group_parent = np.arange(N)[:, None], np.ones((N, 1), dtype=bool), None
    else:
        slots, real, group_parent = _grouping(parent_of_row)
    group = slots.shape[1]
    slots_dev, real_dev = torch.as_tensor(slots, device=tokens.device), torch.as_tensor(real, device=tokens.device)
    padded = not real.all()
    per_batch = max(1, batch_size // group)
    for g0 in range(0, len(slots), per_batch):  # the last level: one row per question, in groups of a parent
        gs = slice(g0, g0 + per_batch)
        rows = slots_dev[gs].reshape(-1)
        parents = None
        if past is not None:
            p = torch.as_tensor(group_parent[gs], device=tokens.device)
            parents = [(k[p], v[p]) for k, v in past]
        x, _kv = _layers(model, prep, tokens[rows, lo : splits[-1]], lo, parents, first_pred, group)
        logits = unembed(model, x).float()
        if padded:
            keep = real_dev[gs].reshape(-1)
            rows, logits = rows[keep], logits[keep]
        out[rows] = logits
    return out
