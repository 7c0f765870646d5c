"""Node names of the intervention studies (issue 22): `P15L1H2` (a head) and `P15L1MLP` (an MLP), the names the
ablation's maps and `analysis.ablate.Node.name` use, parsed back into nodes, with one line naming a bad one."""

from __future__ import annotations

import re
from collections.abc import Iterable

from analysis.ablate import Node
from arith.errors import InputError

_NAME = re.compile(r"P(\d+)L(\d+)(?:H(\d+)|(MLP))")


def parse_node(name: str, n_layers: int, n_heads: int, n_ctx: int) -> Node:
    """The node `name` names (`P15L1H2`, `P15L1MLP`, `P9L0H1`), or ValueError saying why it is not one of this
    model's (layers, heads, positions)."""
    m = _NAME.fullmatch(name.strip())
    if m is None:
        raise ValueError(f"{name!r} is not a node name (P<position>L<layer>H<head> or P<position>L<layer>MLP)")
    p, layer = int(m.group(1)), int(m.group(2))
    if p >= n_ctx:
        raise ValueError(f"{name}: position {p} outside 0..{n_ctx - 1}")
    if layer >= n_layers:
        raise ValueError(f"{name}: layer {layer} outside 0..{n_layers - 1}")
    if m.group(4):
        return Node.mlp(p, layer)
    h = int(m.group(3))
    if h >= n_heads:
        raise ValueError(f"{name}: head {h} outside 0..{n_heads - 1}")
    return Node.head(p, layer, h)


def parse_node_lines(lines: Iterable[str], where: str, n_layers: int, n_heads: int, n_ctx: int) -> list[Node]:
    """The nodes of a list file (one name per line; blank lines and `#` comments skipped), sorted, without
    repeats; the first bad name is one InputError line naming it and its line in `where`."""
    nodes = set()
    for i, raw in enumerate(lines, 1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            nodes.add(parse_node(text, n_layers, n_heads, n_ctx))
        except ValueError as exc:
            raise InputError(f"node file {where} line {i}: {exc}") from None
    if not nodes:
        raise InputError(f"node file {where}: no node names")
    return sorted(nodes)
