"""Mean ablation of nodes, many per forward, recomputing only what an ablation can change (docs/reference_facts.md F7).

A node is one attention head at one position of one layer (its `hook_z` slice) or the MLP layer at one position
(its `mlp.hook_post` slice). Mean ablation replaces that slice by its mean over a question set.

Attention is causal, so ablating a node at layer L and position p cannot change anything at layers below L, nor
at positions before p; at layer L itself only position p changes. `clean_run` keeps, per layer, what the
unablated model computed (residuals, keys and values, head outputs); `ablated_logits` then starts each ablated
row at (L, p) and computes positions p..end of layers L+1.. only, reading the keys and values of positions
before p from the clean run. The nodes at one (L, p) share that shape, so they go through one forward as
groups of rows (one group per node, each group holding every question).

Everything here is plain torch on whole batches; the results equal a plain forward with a `Patch` hook on the
node (tests/test_ablate.py), up to float rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from arith.model import Patch, Transformer, attn_out, mlp_out, mlp_post, qkv, unembed
from arith.vocab import Layout


@dataclass(frozen=True, order=True)
class Node:
    """A head (`is_head`, `num` = head index) or an MLP layer (`num` = 0) at a position and layer. Ordered as
    the reference sorts its 2-digit names: position, layer, heads before the MLP, head index."""

    position: int
    layer: int
    is_mlp: bool
    num: int

    @property
    def is_head(self) -> bool:
        return not self.is_mlp

    @classmethod
    def head(cls, position: int, layer: int, head: int) -> Node:
        return cls(position, layer, False, head)

    @classmethod
    def mlp(cls, position: int, layer: int) -> Node:
        return cls(position, layer, True, 0)

    def name(self, width: int = 2) -> str:
        """`P09L0H1` / `P14L1MLP` (width 2, the form the reference sorts by), `P9L0H1` with width 1."""
        tail = "MLP" if self.is_mlp else f"H{self.num}"
        return f"P{self.position:0{width}d}L{self.layer}{tail}"

    def record(self, tags: list[str]) -> dict:
        """The behaviour/maths JSON record of this node (docs/reference_facts.md F7.1)."""
        return {"position": self.position, "layer": self.layer, "is_head": self.is_head, "num": self.num, "tags": tags}


@dataclass
class CleanRun:
    """Per layer l: `resid_pre[l]` [B, P, d], `k[l]`/`v[l]` [B, H, P, dh], `z[l]` [B, P, H, dh] (head outputs
    before W_O), `attn_out[l]` [B, P, d] (with b_O), `mlp_post[l]` [B, P, d_mlp], `resid_post[l]` [B, P, d];
    `pattern[l]` [B, H, P, P] when asked for; `logits` at the answer-predicting positions [B, n+2, vocab]."""

    resid_pre: list[torch.Tensor]
    k: list[torch.Tensor]
    v: list[torch.Tensor]
    z: list[torch.Tensor]
    attn_out: list[torch.Tensor]
    mlp_post: list[torch.Tensor]
    resid_post: list[torch.Tensor]
    pattern: list[torch.Tensor] | None
    logits: torch.Tensor

    @property
    def n_rows(self) -> int:
        return self.resid_pre[0].shape[0]


@dataclass
class Means:
    """Mean activations per layer over a question set: `z[l]` [P, H, dh], `mlp_post[l]` [P, d_mlp],
    `resid_post[l]` [P, d]."""

    z: list[torch.Tensor]
    mlp_post: list[torch.Tensor]
    resid_post: list[torch.Tensor]

    def layer0_everywhere(self) -> Means:
        """The reference's means (docs/reference_facts.md F10 item 3): layer 0's, reused for every layer."""
        n = len(self.z)
        return Means([self.z[0]] * n, [self.mlp_post[0]] * n, [self.resid_post[0]] * n)


@torch.inference_mode()
def clean_run(model: Transformer, tokens: torch.Tensor, layout: Layout, with_pattern: bool = False) -> CleanRun:
    """The unablated forward over `tokens` [B, n_ctx], keeping what the ablations reuse."""
    P = tokens.shape[1]
    x = F.embedding(tokens, model.embed.W_E) + model.pos_embed.W_pos[:P]
    mask = torch.tril(torch.ones(P, P, dtype=torch.bool, device=x.device))
    keep: dict[str, list] = {k: [] for k in ("resid_pre", "k", "v", "z", "attn_out", "mlp_post", "resid_post", "pat")}
    for block in model.blocks:
        keep["resid_pre"].append(x)
        q, k, v = qkv(block.attn, block.ln1(x))
        dh = q.shape[-1]
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(dh)
        pattern = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        z = (pattern @ v).transpose(1, 2).contiguous()  # [B, P, H, dh]
        a_out = attn_out(block.attn, z)
        mid = x + a_out
        post = mlp_post(block.mlp, block.ln2(mid))
        x = mid + mlp_out(block.mlp, post)
        for key, val in (("k", k), ("v", v), ("z", z), ("attn_out", a_out), ("mlp_post", post), ("resid_post", x)):
            keep[key].append(val)
        if with_pattern:
            keep["pat"].append(pattern)
    logits = unembed(model, x[:, layout.predict_slice])
    return CleanRun(
        keep["resid_pre"],
        keep["k"],
        keep["v"],
        keep["z"],
        keep["attn_out"],
        keep["mlp_post"],
        keep["resid_post"],
        keep["pat"] if with_pattern else None,
        logits,
    )


def means_of(clean: CleanRun, rows: torch.Tensor | None = None) -> Means:
    """Per-layer means over the questions `rows` (all when None)."""
    sel = slice(None) if rows is None else rows

    def mean(ts: list[torch.Tensor]) -> list[torch.Tensor]:
        return [t[sel].double().mean(dim=0).float() for t in ts]

    return Means(mean(clean.z), mean(clean.mlp_post), mean(clean.resid_post))


@torch.inference_mode()
def ablated_logits(
    model: Transformer,
    clean: CleanRun,
    means: Means,
    layer: int,
    position: int,
    nodes: list[Node],
    layout: Layout,
) -> torch.Tensor:
    """Logits at the answer-predicting positions [len(nodes), B, n+2, vocab] with each node mean-ablated in
    turn (all nodes at `layer`, `position`), computing positions >= `position` of the layers above only."""
    L, p = layer, position
    if any(n.layer != L or n.position != p for n in nodes):
        raise ValueError("ablated_logits takes nodes of one layer and position")
    G, B = len(nodes), clean.n_rows
    block = model.blocks[L]
    # layer L at position p, one row group per node
    pre = clean.resid_pre[L][:, p]  # [B, d]
    a_out = clean.attn_out[L][:, p].unsqueeze(0).repeat(G, 1, 1)  # [G, B, d]
    W_O = block.attn.W_O  # [H, dh, d]
    mlp_nodes = torch.tensor([n.is_mlp for n in nodes], device=pre.device)
    for g, node in enumerate(nodes):
        if node.is_head:
            h = node.num
            delta = means.z[L][p, h].unsqueeze(0) - clean.z[L][:, p, h]  # [B, dh]
            a_out[g] += delta @ W_O[h]
    mid = pre.unsqueeze(0) + a_out  # [G, B, d]
    post = mlp_post(block.mlp, block.ln2(mid)).clone()  # [G, B, d_mlp]
    if mlp_nodes.any():
        post[mlp_nodes] = means.mlp_post[L][p].to(post.dtype)
    x_p = mid + mlp_out(block.mlp, post)  # [G, B, d]
    # positions p.. of layer L's output: p from above, the rest as in the clean run
    x = clean.resid_post[L][:, p:].unsqueeze(0).repeat(G, 1, 1, 1)  # [G, B, S, d]
    x[:, :, 0] = x_p
    S = x.shape[2]
    P = clean.resid_pre[0].shape[1]
    x = x.reshape(G * B, S, -1)
    # causal mask of queries p.. over keys 0..P-1
    qpos = torch.arange(p, P, device=x.device)[:, None]
    allowed = torch.arange(P, device=x.device)[None, :] <= qpos  # [S, P]
    first = layout.predict_slice.start
    lo = max(first, p)  # the answer-predicting positions the ablation can change
    last = len(model.blocks) - 1
    for lyr in range(L + 1, last + 1):
        blk = model.blocks[lyr]
        q, k_new, v_new = qkv(blk.attn, blk.ln1(x))  # [GB, H, S, dh]
        if p:
            k_old = clean.k[lyr][:, :, :p].repeat(G, 1, 1, 1)
            v_old = clean.v[lyr][:, :, :p].repeat(G, 1, 1, 1)
            k_all, v_all = torch.cat([k_old, k_new], dim=2), torch.cat([v_old, v_new], dim=2)
        else:
            k_all, v_all = k_new, v_new
        if lyr == last:  # nothing reads the last layer's other positions: queries from `lo` only
            x, q, allowed = x[:, lo - p :], q[:, :, lo - p :], allowed[lo - p :]
            p = lo
        z = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=allowed).transpose(1, 2)
        x = x + attn_out(blk.attn, z.contiguous())
        x = x + mlp_out(blk.mlp, mlp_post(blk.mlp, blk.ln2(x)))
    # logits: answer-predicting positions at or after `lo` from the ablated rows, earlier ones are clean
    out = clean.logits.unsqueeze(0).repeat(G, 1, 1, 1)  # [G, B, n+2, V]
    if lo < P - 1:
        new = unembed(model, x[:, lo - p : P - 1 - p]).view(G, B, -1, out.shape[-1])
        out[:, :, lo - first :] = new
    return out


def patch_for(node: Node, means: Means) -> tuple[str, Patch]:
    """The plain-forward hook that ablates `node` (hook point name, Patch): the slow path the batched one is
    checked against."""
    if node.is_mlp:
        return f"blocks.{node.layer}.mlp.hook_post", Patch(
            pos=node.position, value=means.mlp_post[node.layer][node.position], kind="pos"
        )
    return f"blocks.{node.layer}.attn.hook_z", Patch(
        pos=node.position, head=node.num, value=means.z[node.layer][node.position, node.num], kind="z"
    )


def position_patches(position: int, means: Means) -> dict:
    """Hooks that overwrite the residual stream at `position` after every layer with its mean (the useful
    position test, F7 step 5)."""
    return {
        f"blocks.{layer}.hook_resid_post": Patch(pos=position, value=means.resid_post[layer][position], kind="pos")
        for layer in range(len(means.resid_post))
    }
