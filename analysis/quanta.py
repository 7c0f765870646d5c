"""Quanta maps (upstream_spec 7.2): one grid per view of the useful nodes, written as SVG and PNG.

Rows are the model's nodes by layer (`L0H0`, `L0H1`, ..., `L0MLP`, `L1H0`, ...), columns the useful positions
named by meaning (`D5`, `OPR`, `A3`, ...). A cell holds the node's value for the view, shaded:
- `fail`: the Fail% value (`<1` for 0), shaded by it (10 shades);
- `impact`: the Impact digits, compressed to `A7..4` when they run in order and are longer than 3 characters;
- `attention`: the keys holding more than 10% of the head's attention, largest first (the top two
  alphabetical when within 5 points or both at least 40%), shaded by the largest (10 shades);
- `add`, `sub`, `neg`: the smallest complexity class among the failed questions of that family;
- `algo` (of a maths file): the node's algorithm purposes (`A5.SA`, `OPR`, ...), one per line.
Display only: nothing here changes the JSON.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arith.vocab import Layout

VIEWS = ("fail", "impact", "attention", "add", "sub", "neg")  # of a behaviour file; a maths file has "algo"
MIN_ATTN_PERC = 10
ATTN_ORDER_DIFF = 5
ATTN_ORDER_MIN = 40
SHADES = {"fail": 10, "impact": 10, "attention": 10, "add": 6, "sub": 5, "neg": 5, "algo": 2}
_MAJOR = {"add": "Math.Add", "sub": "Math.Sub", "neg": "Math.Neg"}


def _tags(record: dict, major: str) -> list[str]:
    return [t.split(":", 1)[1] for t in record["tags"] if t.split(":", 1)[0] == major]


def compress_impact(minor: str) -> str:
    """`A76543` -> `A7..3` (digits running down by one and longer than 3 characters); others unchanged."""
    digits = minor[1:]
    if len(minor) > 3 and all(int(a) - int(b) == 1 for a, b in zip(digits, digits[1:], strict=False)):
        return f"A{digits[0]}..{digits[-1]}"
    return minor


def cell(record: dict, view: str) -> tuple[str, float] | None:
    """(text, shade in 0..1) of one node in one view; None when the node has nothing to show there."""
    if view == "fail":
        vals = _tags(record, "Fail%")
        if not vals:
            return None
        v = int(vals[0])
        return ("<1" if v == 0 else str(v)), min(1.0, max(v, 1) / 100)
    if view == "impact":
        vals = sorted(_tags(record, "Impact"), key=len)
        if not vals:
            return None
        return compress_impact(vals[0]), min(1.0, (len(vals[0]) - 1) / 8)
    if view == "attention":
        pairs = []
        for t in _tags(record, "Attn"):
            key, pct = t.split("=")
            if int(pct) > MIN_ATTN_PERC:
                pairs.append((key, int(pct)))
        if not pairs:
            return None
        pairs.sort(key=lambda kp: -kp[1])
        if len(pairs) > 1:
            (k1, p1), (k2, p2) = pairs[0], pairs[1]
            if abs(p1 - p2) <= ATTN_ORDER_DIFF or (p1 >= ATTN_ORDER_MIN and p2 >= ATTN_ORDER_MIN):
                pairs[0], pairs[1] = sorted([(k1, p1), (k2, p2)])
        return " ".join(k for k, _ in pairs), max(p for _, p in pairs) / 100
    if view == "algo":
        vals = _tags(record, "Algo")
        return ("\n".join(vals), min(1.0, len(vals) / SHADES["algo"])) if vals else None
    major = _MAJOR[view]
    vals = _tags(record, major)
    if not vals:
        return None
    digits = vals[0][1:]
    lowest = min(int(d) for d in digits)
    return f"{vals[0][0]}{lowest}", 1.0 - lowest / SHADES[view]


def grid(records: list[dict], n_layers: int, n_heads: int, view: str) -> tuple[list[str], list[int], list[list]]:
    """(row names, column positions, cells[row][col]) of one view."""
    rows = [f"L{lyr}" + (f"H{h}" if h < n_heads else "MLP") for lyr in range(n_layers) for h in range(n_heads + 1)]
    positions = sorted({r["position"] for r in records})
    cells = [[None] * len(positions) for _ in rows]
    for r in records:
        row = r["layer"] * (n_heads + 1) + (r["num"] if r["is_head"] else n_heads)
        cells[row][positions.index(r["position"])] = cell(r, view)
    return rows, positions, cells


def draw(
    records: list[dict],
    layout: Layout,
    n_layers: int,
    n_heads: int,
    view: str,
    out_base: Path,
    title: str,
    pure_add: bool = False,
):
    """Write `<out_base>.svg` and `<out_base>.png` for one view; returns the two paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, positions, cells = grid(records, n_layers, n_heads, view)
    meanings = layout.position_meanings(pure_add)
    fig_w = max(3.0, 0.7 * len(positions) + 1.2)
    fig, ax = plt.subplots(figsize=(fig_w, 0.35 * len(rows) + 1.0))
    shade = np.full((len(rows), max(1, len(positions))), np.nan)
    for i, row in enumerate(cells):
        for j, c in enumerate(row):
            if c is not None:
                levels = SHADES[view]
                shade[i, j] = np.ceil(c[1] * levels) / levels
                ax.text(j, i, c[0], ha="center", va="center", fontsize=7)
    ax.imshow(shade, cmap="Blues", vmin=0, vmax=1.6, aspect="auto")
    ax.set_xticks(range(len(positions)), [meanings[p] for p in positions], fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    out_base = Path(out_base)
    paths = (out_base.with_suffix(".svg"), out_base.with_suffix(".png"))
    for p in paths:
        fig.savefig(p, dpi=120, metadata={"Date": None} if p.suffix == ".svg" else None)
    plt.close(fig)
    return paths


def draw_all(
    records: list[dict], layout: Layout, n_layers: int, n_heads: int, folder: Path, name: str, pure_add: bool = False
) -> list[Path]:
    """Every view of a behaviour file with something to show: `<name>_quanta_<view>.svg/.png` in `folder`."""
    out = []
    for view in VIEWS:
        if view in _MAJOR and not any(_tags(r, _MAJOR[view]) for r in records):
            continue
        base = Path(folder) / f"{name}_quanta_{view}"
        out += draw(records, layout, n_layers, n_heads, view, base, f"{name}: {view}", pure_add)
    return out


def draw_algo(
    records: list[dict], layout: Layout, n_layers: int, n_heads: int, folder: Path, name: str, pure_add: bool = False
) -> list[Path]:
    """The algorithm purpose of each node (a maths file's Algo tags): `<name>_quanta_algo.svg/.png`."""
    shown = [r for r in records if _tags(r, "Algo")]
    if not shown:
        return []
    base = Path(folder) / f"{name}_quanta_algo"
    return list(draw(shown, layout, n_layers, n_heads, "algo", base, f"{name}: algorithm purpose", pure_add))
