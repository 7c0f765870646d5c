"""The transformer: TransformerLens `HookedTransformer`'s parameterisation and state dict, with a fast path.

Pre-LayerNorm blocks, learned absolute positions, relu MLP, causal attention scaled by sqrt(d_head);
n_heads * d_head may differ from d_model. The state dict has exactly TransformerLens's keys and shapes
(including the `mask` and `IGNORE` buffers), so published `.pth` files load with `strict=True`.

Named intervention points (TransformerLens names):
  blocks.{L}.hook_resid_pre   [batch, pos, d_model]
  blocks.{L}.attn.hook_pattern [batch, head, query, key]
  blocks.{L}.attn.hook_z      [batch, pos, head, d_head]   (head outputs before W_O)
  blocks.{L}.mlp.hook_post    [batch, pos, d_mlp]
  blocks.{L}.hook_resid_post  [batch, pos, d_model]
A hook is a function tensor -> tensor|None (None keeps the tensor); `Cache` and `Patch` build the common ones.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from arith.errors import InputError, clip
from arith.vocab import D_VOCAB

Hook = Callable[[torch.Tensor], torch.Tensor | None]
PATCH_KINDS = ("z", "pattern", "pos")
HOOK_POINTS = ("hook_resid_pre", "attn.hook_pattern", "attn.hook_z", "mlp.hook_post", "hook_resid_post")


@dataclass(frozen=True)
class ModelShape:
    n_layers: int
    n_heads: int
    n_ctx: int
    d_model: int = 510
    d_head: int = 170
    d_mlp: int = 2040
    d_vocab: int = D_VOCAB
    act_fn: str = "relu"

    def __post_init__(self):
        for field in ("n_layers", "n_heads", "n_ctx", "d_model", "d_head", "d_mlp"):
            if getattr(self, field) < 1:
                raise InputError(f"model shape: {field} must be positive, got {getattr(self, field)}")

    @classmethod
    def for_name(cls, name, d_model: int = 510, d_head: int = 170, d_mlp: int | None = None) -> ModelShape:
        """The shape a model name implies (layers, heads, n_ctx from its digits) at the given widths."""
        from arith.vocab import Layout

        return cls(
            n_layers=name.n_layers,
            n_heads=name.n_heads,
            n_ctx=Layout(name.n_digits).n_ctx,
            d_model=d_model,
            d_head=d_head,
            d_mlp=4 * d_model if d_mlp is None else d_mlp,
        )

    def forward_flops(self, n_answer: int | None = None) -> float:
        """Multiply-add FLOPs (x2) of one forward over one sequence of n_ctx tokens; with `n_answer`, the
        unembedding counted only at the answer-predicting positions (the scoring path)."""
        P, d, h, dh, m, v = self.n_ctx, self.d_model, self.n_heads, self.d_head, self.d_mlp, self.d_vocab
        per_layer = 2 * P * d * 3 * h * dh + 2 * 2 * h * P * P * dh + 2 * P * h * dh * d + 2 * 2 * P * d * m
        unembed = 2 * (n_answer if n_answer is not None else P) * d * v
        return float(self.n_layers * per_layer + unembed)

    @property
    def init_std(self) -> float:
        """TransformerLens's gpt2 init: every W_* ~ Normal(0, 0.8/sqrt(d_model)); biases 0; LN weight 1."""
        return 0.8 / math.sqrt(self.d_model)

    def expected_state_shapes(self) -> dict[str, tuple[int, ...]]:
        d, h, dh, m, c, v = self.d_model, self.n_heads, self.d_head, self.d_mlp, self.n_ctx, self.d_vocab
        shapes: dict[str, tuple[int, ...]] = {"embed.W_E": (v, d), "pos_embed.W_pos": (c, d)}
        for i in range(self.n_layers):
            p = f"blocks.{i}."
            shapes |= {p + "ln1.w": (d,), p + "ln1.b": (d,), p + "ln2.w": (d,), p + "ln2.b": (d,)}
            shapes |= {p + f"attn.W_{x}": (h, d, dh) for x in "QKV"} | {p + "attn.W_O": (h, dh, d)}
            shapes |= {p + f"attn.b_{x}": (h, dh) for x in "QKV"} | {p + "attn.b_O": (d,)}
            shapes |= {p + "attn.mask": (c, c), p + "attn.IGNORE": ()}
            shapes |= {p + "mlp.W_in": (d, m), p + "mlp.b_in": (m,), p + "mlp.W_out": (m, d), p + "mlp.b_out": (d,)}
        shapes |= {"ln_final.w": (d,), "ln_final.b": (d,), "unembed.W_U": (d, v), "unembed.b_U": (v,)}
        return shapes


class _LayerNorm(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.w = nn.Parameter(torch.ones(d))
        self.b = nn.Parameter(torch.zeros(d))

    def forward(self, x):
        return F.layer_norm(x, (x.shape[-1],), self.w, self.b, 1e-5)


class _Embed(nn.Module):
    def __init__(self, v: int, d: int):
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(v, d))


class _PosEmbed(nn.Module):
    def __init__(self, c: int, d: int):
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(c, d))


class _Unembed(nn.Module):
    def __init__(self, d: int, v: int):
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(d, v))
        self.b_U = nn.Parameter(torch.zeros(v))


class _Attention(nn.Module):
    def __init__(self, s: ModelShape):
        super().__init__()
        h, d, dh = s.n_heads, s.d_model, s.d_head
        self.W_Q = nn.Parameter(torch.empty(h, d, dh))
        self.W_K = nn.Parameter(torch.empty(h, d, dh))
        self.W_V = nn.Parameter(torch.empty(h, d, dh))
        self.W_O = nn.Parameter(torch.empty(h, dh, d))
        self.b_Q = nn.Parameter(torch.zeros(h, dh))
        self.b_K = nn.Parameter(torch.zeros(h, dh))
        self.b_V = nn.Parameter(torch.zeros(h, dh))
        self.b_O = nn.Parameter(torch.zeros(d))
        self.register_buffer("mask", torch.tril(torch.ones(s.n_ctx, s.n_ctx, dtype=torch.bool)))
        self.register_buffer("IGNORE", torch.tensor(-torch.inf))

    def forward(self, x, hook_pattern: Hook | None, hook_z: Hook | None):
        q, k, v = qkv(self, x)  # [B, h, P, dh]
        if hook_pattern is None:
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            P, dh = q.shape[-2:]
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(dh)
            scores = scores.masked_fill(~self.mask[:P, :P], float("-inf"))
            pattern = scores.softmax(dim=-1)
            pattern = _apply(hook_pattern, pattern)
            z = pattern @ v
        z = z.transpose(1, 2)  # [B, P, h, dh]
        if hook_z is not None:
            z = _apply(hook_z, z.contiguous())
        return attn_out(self, z)


class _MLP(nn.Module):
    def __init__(self, s: ModelShape):
        super().__init__()
        self.W_in = nn.Parameter(torch.empty(s.d_model, s.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(s.d_mlp))
        self.W_out = nn.Parameter(torch.empty(s.d_mlp, s.d_model))
        self.b_out = nn.Parameter(torch.zeros(s.d_model))

    def forward(self, x, hook_post: Hook | None):
        post = mlp_post(self, x)
        if hook_post is not None:
            post = _apply(hook_post, post)
        return mlp_out(self, post)


class _Block(nn.Module):
    def __init__(self, s: ModelShape):
        super().__init__()
        self.ln1 = _LayerNorm(s.d_model)
        self.attn = _Attention(s)
        self.ln2 = _LayerNorm(s.d_model)
        self.mlp = _MLP(s)


def _apply(hook: Hook, t: torch.Tensor) -> torch.Tensor:
    out = hook(t)
    return t if out is None else out


class Transformer(nn.Module):
    """A HookedTransformer-compatible arithmetic transformer (pre-LN, learned positions, relu MLP)."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        if shape.act_fn != "relu":
            raise InputError(f"act_fn {shape.act_fn!r} is not supported (the published models use relu)")
        self.shape = shape
        self.embed = _Embed(shape.d_vocab, shape.d_model)
        self.pos_embed = _PosEmbed(shape.n_ctx, shape.d_model)
        self.blocks = nn.ModuleList(_Block(shape) for _ in range(shape.n_layers))
        self.ln_final = _LayerNorm(shape.d_model)
        self.unembed = _Unembed(shape.d_model, shape.d_vocab)
        self._hook_point_set = frozenset(self.hook_points())
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """gpt2-style init: W_* ~ N(0, 0.8/sqrt(d_model)); biases 0; LN weights 1."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                leaf = name.rsplit(".", 1)[-1]
                if leaf.startswith("W_"):
                    p.normal_(0.0, self.shape.init_std, generator=generator)
                elif leaf == "w":
                    p.fill_(1.0)
                else:
                    p.zero_()

    def forward(
        self,
        tokens: torch.Tensor,
        hooks: dict[str, Hook] | None = None,
        logit_positions: slice | None = None,
    ) -> torch.Tensor:
        """Logits [batch, pos, d_vocab] (only `logit_positions` when given). `hooks` maps point names to hooks."""
        if hooks:
            self.check_hook_points(hooks)
        P = tokens.shape[1]
        x = F.embedding(tokens, self.embed.W_E) + self.pos_embed.W_pos[:P]
        get = (hooks or {}).get
        for i, block in enumerate(self.blocks):
            p = f"blocks.{i}."
            if (hk := get(p + "hook_resid_pre")) is not None:
                x = _apply(hk, x)
            x = x + block.attn(block.ln1(x), get(p + "attn.hook_pattern"), get(p + "attn.hook_z"))
            x = x + block.mlp(block.ln2(x), get(p + "mlp.hook_post"))
            if (hk := get(p + "hook_resid_post")) is not None:
                x = _apply(hk, x)
        if logit_positions is not None:
            x = x[:, logit_positions]
        return unembed(self, x)

    def hook_points(self) -> list[str]:
        """Every intervention point name of this model, in forward order."""
        return [f"blocks.{i}.{point}" for i in range(self.shape.n_layers) for point in HOOK_POINTS]

    def check_hook_points(self, names: Iterable[str]) -> None:
        """InputError for a point name this model does not have (a misspelt point or a layer out of range)."""
        bad = [n for n in names if n not in self._hook_point_set]
        if not bad:
            return
        name = bad[0]
        shown = repr(clip(name)) if isinstance(name, str) else repr(name)
        last = self.shape.n_layers - 1
        layers = "0" if last == 0 else f"0..{last}"
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", name) if isinstance(name, str) else None
        if m and m.group(2) in HOOK_POINTS:
            problem = f"layer {m.group(1)} is out of range (the model has {last + 1} layer{'s' * bool(last)})"
        else:
            problem = "no such point"
        raise InputError(
            f"hook point {shown}: {problem}; valid points are blocks.<L>.<point> for L in {layers} and "
            f"<point> one of {', '.join(HOOK_POINTS)}"
        )

    def run_with_cache(self, tokens: torch.Tensor, names: Iterable[str], hooks: dict[str, Hook] | None = None):
        """(logits, {point name: activation}) for the requested points (and any other hooks given)."""
        cache: dict[str, torch.Tensor] = {}
        all_hooks = dict(hooks or {})
        for name in names:
            all_hooks[name] = _chain(all_hooks.get(name), Cache(cache, name))
        return self(tokens, all_hooks), cache


def fused_qkv(attn: _Attention) -> tuple[torch.Tensor, torch.Tensor]:
    """The query, key and value projections of every head as one [d, 3*h*dh] matrix (q, k, v; head-major within
    each) and its [3*h*dh] bias."""
    h, d, dh = attn.W_Q.shape
    w = torch.cat([attn.W_Q, attn.W_K, attn.W_V], dim=0).permute(1, 0, 2).reshape(d, 3 * h * dh)
    return w, torch.cat([attn.b_Q, attn.b_K, attn.b_V], dim=0).reshape(3 * h * dh)


def qkv(attn: _Attention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v [B, h, S, dh] of the normalised input x [B, S, d]: one fused matmul for every head."""
    B, S, d = x.shape
    h, _, dh = attn.W_Q.shape
    w, b = fused_qkv(attn)
    out = torch.addmm(b, x.reshape(B * S, d), w).view(B, S, 3, h, dh).permute(2, 0, 3, 1, 4)
    return out[0], out[1], out[2]


def attn_out(attn: _Attention, z: torch.Tensor) -> torch.Tensor:
    """Attention output [B, S, d] of head outputs z [B, S, h, dh]."""
    B, S, h, dh = z.shape
    return torch.addmm(attn.b_O, z.reshape(B * S, h * dh), attn.W_O.reshape(h * dh, -1)).view(B, S, -1)


def mlp_post(mlp: _MLP, x: torch.Tensor) -> torch.Tensor:
    """The MLP's hidden activations [B, S, d_mlp] of the normalised input x [B, S, d]."""
    B, S, d = x.shape
    # in place: addmm's backward does not need its output, and relu's backward uses its own output
    return torch.relu_(torch.addmm(mlp.b_in, x.reshape(B * S, d), mlp.W_in)).view(B, S, -1)


def mlp_out(mlp: _MLP, post: torch.Tensor) -> torch.Tensor:
    """The MLP's output [B, S, d] of its hidden activations [B, S, d_mlp]."""
    B, S, m = post.shape
    return torch.addmm(mlp.b_out, post.reshape(B * S, m), mlp.W_out).view(B, S, -1)


def unembed(model: Transformer, x: torch.Tensor) -> torch.Tensor:
    """Logits of residual-stream vectors x [..., d]: the final layer norm, then the unembedding."""
    return model.ln_final(x) @ model.unembed.W_U + model.unembed.b_U


class Cache:
    """A hook that stores a detached copy of the activation under `name`."""

    def __init__(self, store: dict[str, torch.Tensor], name: str):
        self.store, self.name = store, name

    def __call__(self, t: torch.Tensor) -> None:
        self.store[self.name] = t.detach().clone()


@dataclass(frozen=True)
class Patch:
    """Overwrite chosen slices of an activation, batched.

    `rows`: which batch rows (None = all; else a LongTensor) — so one forward can ablate a different node in
    each group of rows. `pos`: position (the query position for a pattern); `head`: head index for the
    per-head points. `kind` names the layout: "z" [B, P, H, dh], "pattern" [B, H, Q, K], or "pos" for the
    [B, P, d] points (residuals, MLP post). `value` is broadcast into the selected slice.
    """

    pos: int | torch.Tensor
    value: torch.Tensor
    head: int | torch.Tensor | None = None
    rows: torch.Tensor | None = None
    kind: str = "z"

    def __post_init__(self):
        if self.kind not in PATCH_KINDS:
            raise InputError(f"unknown patch kind {clip(self.kind)!r} (expected {', '.join(PATCH_KINDS)})")

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        rows = slice(None) if self.rows is None else self.rows
        value = self.value.to(t.dtype)
        if self.kind == "z":
            t[rows, self.pos, self.head] = value
        elif self.kind == "pattern":
            t[rows, self.head, self.pos] = value
        elif self.kind == "pos":
            t[rows, self.pos] = value
        else:
            raise ValueError(f"unknown patch kind {self.kind!r}")
        return t


def _chain(first: Hook | None, second: Hook) -> Hook:
    if first is None:
        return second

    def both(t):
        t = _apply(first, t)
        return _apply(second, t)

    return both


def patches(*ps: Patch) -> Hook:
    """Several patches of one point as one hook."""

    def run(t):
        for p in ps:
            t = p(t)
        return t

    return run
