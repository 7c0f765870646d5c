"""Quanta maps (docs/reference_facts.md F7.2): one grid per view of the useful nodes, written as SVG and PNG.

Rows are the model's nodes by layer (`L0H0`, `L0H1`, ..., `L0MLP`, `L1H0`, ...), columns the useful positions
named by the token there (`D5`, `OPR`, `A3`, ...). A cell holds the node's value for the view, coloured on the
view's scale (the colour bar beside the grid, with its units; the caption under it says what a cell shows):
- `fail`: the Fail% value (`<1` for 0), coloured by it in 10 shades of 10 points;
- `impact`: the Impact digits, compressed to `A7..4` when three or more run down by one (`A13..9` for the
  bracketed digits of analysis/impact.py's grammar), coloured by how many answer digits it names;
- `attention`: the keys holding more than 10% of the head's attention, largest first (the top two
  alphabetical when within 5 points or both at least 40%), coloured by the largest share (10 shades);
- `add`, `sub`, `neg`: the simplest complexity class among the failed questions of that family, darker for
  simpler classes;
- `algo` (of a maths file): the node's algorithm purposes (`A5.SA`, `OPR`, ...), one per line, coloured by
  their count.
Wide models stay legible: every useful position gets its own 0.8 in column (a d20 model has 64 positions, a map
of all of them is about 55 in = 5,500 px wide), and colour bars with many counts label every few.
The pictures are deterministic: the same records give the same SVG and PNG bytes (fixed SVG ids and hash
salt, no date), so publishing skips unchanged maps. Display only: nothing here changes the JSON.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.impact import parse_impact
from arith.errors import InputError
from arith.vocab import Layout

VIEWS = ("fail", "impact", "attention", "add", "sub", "neg")  # of a behaviour file; a maths file has "algo"
MIN_ATTN_PERC = 10
ATTN_ORDER_DIFF = 5
ATTN_ORDER_MIN = 40
_MAJOR = {"add": "Math.Add", "sub": "Math.Sub", "neg": "Math.Neg"}
_CLASSES = {"add": ("S", 0, 5), "sub": ("M", 0, 4), "neg": ("N", 1, 4)}  # letter, simplest, hardest digit
_TOP_CLASS = {"sub": "M4+", "neg": "N4+"}
TITLES = {
    "fail": "Fail%, how often ablating the node fails a question",
    "impact": "Impact, the answer digits the node's ablation changes",
    "attention": "attention of the useful heads",
    "add": "Math.Add, the simplest addition class that fails",
    "sub": "Math.Sub, the simplest subtraction class that fails",
    "neg": "Math.Neg, the simplest negative-answer class that fails",
    "algo": "algorithm purpose of each useful node",
}
FORMATS = (".svg", ".png")
DPI = 100
MIN_WIDTH_IN = 8.0  # 800 px at DPI: the smallest map is legible
MAX_TICKS = 12  # colour-bar labels at most
SVG_RC = {"svg.hashsalt": "varith-quanta", "svg.id": "quanta", "svg.fonttype": "path"}


def map_paths(folder: str | Path, name: str, view: str) -> tuple[Path, ...]:
    """`folder/<name>_quanta_<view>.svg` and `.png`: the one owner of the quanta maps' file names."""
    return tuple(Path(folder) / f"{name}_quanta_{view}{ext}" for ext in FORMATS)


def behavior_map_paths(folder: str | Path, name: str) -> list[Path]:
    """Every map a behaviour file may get (each view's SVG and PNG), drawn or not."""
    return [p for view in VIEWS for p in map_paths(folder, name, view)]


def _tags(record: dict, major: str) -> list[str]:
    return [t.split(":", 1)[1] for t in record["tags"] if t.split(":", 1)[0] == major]


def impact_count(minor: str) -> int:
    """How many answer digits an Impact tag's minor part names (either grammar, analysis/impact.py)."""
    try:
        return len(parse_impact(minor))
    except InputError:
        return max(0, len(minor) - 1)


def compress_impact(minor: str) -> str:
    """`A76543` -> `A7..3`, `A[13][12][11][10]98` -> `A13..8` (three or more digits running down by one);
    others unchanged."""
    try:
        digits = parse_impact(minor)
    except InputError:
        return minor
    if len(digits) > 2 and all(a - b == 1 for a, b in zip(digits, digits[1:], strict=False)):
        return f"A{digits[0]}..{digits[-1]}"
    return minor


CELL_CHARS = 12  # characters of 8-point text that fit a 0.8 in column


def wrap_impact(text: str, width: int = CELL_CHARS) -> str:
    """An impact cell's text on lines of at most `width` characters, broken between digits only
    (`A[20][18][16][14]9` -> `A[20][18]` / `[16][14]9`); short texts unchanged."""
    if len(text) <= width:
        return text
    lines = [""]
    for item in re.findall(r"\[\d+\]|\.\.|.", text):
        if lines[-1] and len(lines[-1]) + len(item) > width:
            lines.append("")
        lines[-1] += item
    return "\n".join(lines)


def cell(record: dict, view: str) -> tuple[str, float] | None:
    """(text, value on the view's scale: `scale(view, ...)`) of one node in one view; None when the node has
    nothing to show there."""
    if view == "fail":
        vals = _tags(record, "Fail%")
        if not vals:
            return None
        v = int(vals[0])
        return ("<1" if v == 0 else str(v)), float(v)
    if view == "impact":
        vals = sorted(_tags(record, "Impact"), key=len)
        if not vals:
            return None
        return wrap_impact(compress_impact(vals[0])), float(impact_count(vals[0]))
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
        return " ".join(k for k, _ in pairs), float(max(p for _, p in pairs))
    if view == "algo":
        vals = _tags(record, "Algo")
        return ("\n".join(vals), float(len(vals))) if vals else None
    vals = _tags(record, _MAJOR[view])
    if not vals:
        return None
    lowest = min(int(d) for d in vals[0][1:])
    return f"{vals[0][0]}{lowest}", float(lowest)


@dataclass(frozen=True)
class Scale:
    """How a view's values are coloured: bins (one shade each) in the colour bar's units."""

    label: str  # the colour bar's title, with its units
    edges: tuple[float, ...]  # bin edges, increasing
    caption: str  # what a cell shows
    ticks: tuple[float, ...] | None = None  # None: the edges
    ticklabels: tuple[str, ...] | None = None
    darker_low: bool = False  # darker for lower values (the simpler classes)


def scale(view: str, n_digits: int) -> Scale:
    """The colour scale and caption of one view (`n_digits`: the model's, for the impact counts)."""
    tens = tuple(float(v) for v in range(0, 101, 10))
    if view == "fail":
        return Scale(
            "Fail (% of the answered questions)",
            tens,
            "Cell: Fail%, the share of the questions the model answers that fail with the node mean-ablated "
            "(<1: some, under 1%).",
        )
    if view == "attention":
        return Scale(
            "attention to the top key (% of the head's attention)",
            tens,
            "Cell: the positions a head attends with over 10% of its attention, largest first; "
            "colour: the largest share.",
        )
    if view == "impact":
        counts = tuple(range(n_digits + 3))
        every = -(-len(counts) // MAX_TICKS)  # label every few counts on a long bar (a d20 model counts 0..22)
        return Scale(
            "answer digits changed (count)",
            tuple(c - 0.5 for c in (*counts, counts[-1] + 1)),
            "Cell: the answer digits the node's ablation changes (A7..4: A7 down to A4; A alone: the sign; "
            "A[13]5: A13 and A5).",
            tuple(float(c) for c in counts[::every]),
        )
    if view == "algo":
        counts = (1, 2, 3)
        return Scale(
            "algorithm purposes (count)",
            (0.5, 1.5, 2.5, 3.5),
            "Cell: the node's algorithm purposes (its Algo tags: the answer digit and the sub-task, e.g. A5.SA).",
            tuple(float(c) for c in counts),
            ("1", "2", "3+"),
        )
    letter, lo, hi = _CLASSES[view]
    classes = tuple(range(lo, hi + 1))
    names = tuple(f"{letter}{c}" for c in classes[:-1]) + (_TOP_CLASS.get(view, f"{letter}{hi}"),)
    family = {"add": "addition", "sub": "subtraction", "neg": "negative-answer subtraction"}[view]
    return Scale(
        f"simplest failing class ({_MAJOR[view]})",
        tuple(c - 0.5 for c in (*classes, hi + 1)),
        f"Cell: the simplest complexity class ({names[0]} simplest, {names[-1]} hardest) among the {family} "
        "questions that fail with the node mean-ablated; darker: simpler.",
        tuple(float(c) for c in classes),
        names,
        darker_low=True,
    )


def grid(records: list[dict], n_layers: int, n_heads: int, view: str) -> tuple[list[str], list[int], list[list]]:
    """(row names, column positions, cells[row][col]) of one view."""
    rows = [f"L{lyr}" + (f"H{h}" if h < n_heads else "MLP") for lyr in range(n_layers) for h in range(n_heads + 1)]
    positions = sorted({r["position"] for r in records})
    cells = [[None] * len(positions) for _ in rows]
    for r in records:
        row = r["layer"] * (n_heads + 1) + (r["num"] if r["is_head"] else n_heads)
        cells[row][positions.index(r["position"])] = cell(r, view)
    return rows, positions, cells


def figure_width(n_positions: int) -> float:
    """Inches at DPI: at least 800 px, and 0.8 in per useful position beside the labels and colour bar."""
    return max(MIN_WIDTH_IN, 0.8 * n_positions + 3.5)


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
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.figure import Figure

    rows, positions, cells = grid(records, n_layers, n_heads, view)
    meanings = layout.position_meanings(pure_add)
    sc = scale(view, layout.n_digits)
    width = figure_width(len(positions))
    chars = int(width * 11)  # characters of 9-point text per line across the figure
    title_lines = textwrap.wrap(title, chars) or [""]
    caption = textwrap.wrap(sc.caption, int(width * 15))
    height = 0.42 * len(rows) + 1.6 + 0.2 * (len(title_lines) + len(caption))
    n_bins = len(sc.edges) - 1
    shades = matplotlib.colormaps["Blues"](np.linspace(0.08, 0.62, n_bins))  # dark enough, text stays legible
    cmap = ListedColormap(shades[::-1] if sc.darker_low else shades).with_extremes(bad="white")
    values = np.full((len(rows), max(1, len(positions))), np.nan)
    with matplotlib.rc_context(SVG_RC):
        fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
        ax = fig.add_subplot()
        for i, row in enumerate(cells):
            for j, c in enumerate(row):
                if c is not None:
                    values[i, j] = min(max(c[1], sc.edges[0]), sc.edges[-1])
                    ax.text(j, i, c[0], ha="center", va="center", fontsize=8)
        image = ax.imshow(values, cmap=cmap, norm=BoundaryNorm(sc.edges, n_bins), aspect="auto")
        bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
        bar.set_label(sc.label, fontsize=8)
        bar.set_ticks(sc.ticks if sc.ticks is not None else sc.edges)
        if sc.ticklabels is not None:
            bar.set_ticklabels(sc.ticklabels)
        bar.ax.tick_params(labelsize=8)
        ax.set_xticks(range(len(positions)), [meanings[p] for p in positions], fontsize=8)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.set_xlabel("useful position (the token there: D digit of x, D' of y, OPR, =, A answer digit)", fontsize=8)
        ax.set_ylabel("node (layer, head or MLP)", fontsize=8)
        ax.set_title("\n".join(title_lines), fontsize=9)
        fig.get_layout_engine().set(h_pad=0.1)
        fig.supxlabel("\n".join(caption), fontsize=8, x=0.02, ha="left")
        out_base = Path(out_base)
        paths = (out_base.with_suffix(".svg"), out_base.with_suffix(".png"))
        for p in paths:
            fig.savefig(p, dpi=DPI, metadata={"Date": None} if p.suffix == ".svg" else {"Software": None})
    return paths


def _remove(paths) -> None:
    """Maps of a view that shows nothing now: they showed an older file, so they go (never a stale picture)."""
    for p in paths:
        if Path(p).is_file():
            Path(p).unlink()


def draw_all(
    records: list[dict], layout: Layout, n_layers: int, n_heads: int, folder: Path, name: str, pure_add: bool = False
) -> list[Path]:
    """Every view of a behaviour file with something to show: `<name>_quanta_<view>.svg/.png` in `folder`
    (the maps of a view with nothing to show, left by an earlier file, are removed)."""
    out = []
    for view in VIEWS:
        if view in _MAJOR and not any(_tags(r, _MAJOR[view]) for r in records):
            _remove(map_paths(folder, name, view))
            continue
        base = map_paths(folder, name, view)[0].with_suffix("")
        out += draw(records, layout, n_layers, n_heads, view, base, f"{name}: {TITLES[view]}", pure_add)
    return out


def draw_algo(
    records: list[dict], layout: Layout, n_layers: int, n_heads: int, folder: Path, name: str, pure_add: bool = False
) -> list[Path]:
    """The algorithm purpose of each node (a maths file's Algo tags): `<name>_quanta_algo.svg/.png` (removed
    when no node has one: an earlier map would show an older maths file)."""
    shown = [r for r in records if _tags(r, "Algo")]
    if not shown:
        _remove(map_paths(folder, name, "algo"))
        return []
    base = map_paths(folder, name, "algo")[0].with_suffix("")
    return list(draw(shown, layout, n_layers, n_heads, "algo", base, f"{name}: {TITLES['algo']}", pure_add))
