"""Insertion ("ins") training: initialise a model from an addition model, and the periodic re-copies.

Reference behaviour (docs/reference_facts.md F5.4), the default:
  * first copy: Q/K/V weights+biases of the insert model's heads into the FIRST H_ins heads of layers
    0..L_ins-1; MLP W_in/b_in/W_out/b_out; ln1.w/b; ln_final.w; W_E, W_pos, W_U. Not copied: W_O, b_O, ln2,
    ln_final.b, b_U.
  * ins2: every 100 steps, the insert model's useful heads (its behavior json) -> the RIGHT-MOST head slots.
  * ins3: every 100 steps, all inserted heads' Q/K/V and the whole MLPs of the inserted layers.
  * ins4: as ins3, every step.
With `fixes=True` (F10 item 5): the first copy also takes W_O, b_O, ln2, ln_final.b and b_U; ins2 writes the
slots the first copy used (left-most); ins3/ins4 re-copy only the useful heads and the MLPs at useful nodes'
layers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from arith.errors import InputError

QKV = ("W_Q", "W_K", "W_V", "b_Q", "b_K", "b_V")
MLP = ("W_in", "b_in", "W_out", "b_out")


@dataclass(frozen=True)
class InsertSpec:
    mode: int  # 1..4
    n_layers: int  # layers of the insert model
    n_heads: int  # heads per layer of the insert model
    fixes: bool = False
    useful_heads: tuple[tuple[int, int], ...] = ()  # (layer, head) of the insert model's useful heads

    def recopy_due(self, step: int) -> bool:
        """After optimiser step `step` (0-based, as the reference counts): is a periodic re-copy due?"""
        if self.mode == 4:
            return True
        return self.mode in (2, 3) and step % 100 == 0


def useful_heads_from_behavior(path: str | Path) -> tuple[tuple[int, int], ...]:
    """(layer, head) of every head node in a `<name>_behavior.json` (nodes whose ablation failed questions)."""
    path = Path(path)
    try:
        nodes = json.loads(path.read_text())
        heads = {(int(n["layer"]), int(n["num"])) for n in nodes if n.get("is_head")}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"behavior json {path}: unreadable ({exc})") from None
    return tuple(sorted(heads))


@torch.no_grad()
def first_copy(main: dict[str, torch.Tensor], ins: dict[str, torch.Tensor], spec: InsertSpec) -> None:
    """Copy the insert model into the main model's parameters (dicts of live tensors, modified in place)."""
    H = spec.n_heads
    for layer in range(spec.n_layers):
        p = f"blocks.{layer}."
        for k in QKV:
            main[p + "attn." + k][:H] = ins[p + "attn." + k]
        for k in MLP:
            _copy_mlp(main, ins, p + "mlp." + k)
        for k in ("ln1.w", "ln1.b"):
            main[p + k].copy_(ins[p + k])
        if spec.fixes:
            main[p + "attn.W_O"][:H] = ins[p + "attn.W_O"]
            main[p + "attn.b_O"].copy_(ins[p + "attn.b_O"])
            for k in ("ln2.w", "ln2.b"):
                main[p + k].copy_(ins[p + k])
    for k in ("ln_final.w", "embed.W_E", "pos_embed.W_pos", "unembed.W_U"):
        main[k].copy_(ins[k])
    if spec.fixes:
        for k in ("ln_final.b", "unembed.b_U"):
            main[k].copy_(ins[k])


def _copy_mlp(main, ins, key):
    src = ins[key]
    dst = main[key]
    if key.endswith("W_in"):
        dst[:, : src.shape[1]] = src
    elif key.endswith("b_in") or key.endswith("W_out"):
        dst[: src.shape[0]] = src
    else:
        dst.copy_(src)


@torch.no_grad()
def periodic_copy(main: dict[str, torch.Tensor], ins: dict[str, torch.Tensor], spec: InsertSpec, n_heads_main: int):
    """The ins2/ins3/ins4 re-copy, done after the optimiser steps for which `spec.recopy_due(step)`."""
    if spec.mode == 2:
        offset = 0 if spec.fixes else n_heads_main - spec.n_heads
        for layer, head in spec.useful_heads:
            p = f"blocks.{layer}.attn."
            for k in QKV:
                main[p + k][offset + head] = ins[p + k][head]
    elif spec.mode in (3, 4):
        heads = (
            spec.useful_heads
            if spec.fixes
            else tuple((layer, h) for layer in range(spec.n_layers) for h in range(spec.n_heads))
        )
        for layer, head in heads:
            p = f"blocks.{layer}.attn."
            for k in QKV:
                main[p + k][head] = ins[p + k][head]
        mlp_layers = sorted({layer for layer, _ in heads}) if spec.fixes else range(spec.n_layers)
        for layer in mlp_layers:
            for k in MLP:
                _copy_mlp(main, ins, f"blocks.{layer}.mlp.{k}")
