"""Quanta maps (analysis.quanta): legible (a colour bar with units, axis titles, a caption saying what a cell
shows, at least 800 px wide and wider for many positions) and deterministic (same records, same bytes)."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

from analysis.quanta import draw, draw_all, map_paths
from arith.vocab import Layout
from tests.conftest import REPO


def rec(position, layer, is_head, num, *tags):
    return {"position": position, "layer": layer, "is_head": is_head, "num": num, "tags": list(tags)}


RECORDS = [
    rec(6, 0, True, 0, "Fail%:42", "Impact:A2", "Math.Add:S01", "Attn:P1=60", "Attn:P4=30"),
    rec(6, 0, False, 0, "Fail%:0", "Impact:A21", "Math.Add:S2"),
    rec(8, 0, True, 2, "Fail%:88", "Impact:A1", "Math.Add:S0", "Attn:P0=45", "Attn:P3=44"),
]


def png_width(path: Path) -> int:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">I", data[16:20])[0]


def test_maps_are_legible_and_say_what_they_show(tmp_path):
    svg, png = draw(RECORDS, Layout(2), 1, 3, "fail", tmp_path / "m_quanta_fail", "m: fail")
    assert png_width(png) >= 800
    text = svg.read_text()
    for words in (
        "Fail (% of the answered questions)",  # the colour bar and its units
        "useful position",  # the axis titles
        "node (layer, head or MLP)",
        "Cell: Fail%",  # the caption: what a cell shows
        "L0MLP",
    ):
        assert f"<!-- {words}" in text, words
    svg, _ = draw(RECORDS, Layout(2), 1, 3, "add", tmp_path / "m_quanta_add", "m: add")
    assert "simplest failing class (Math.Add)" in svg.read_text() and "<!-- S5 -->" in svg.read_text()
    # many useful positions: the map grows wider (about 80 px a position)
    wide = [rec(p, 0, True, 0, "Fail%:5") for p in range(40)]
    _, png = draw(wide, Layout(12), 1, 3, "fail", tmp_path / "w_quanta_fail", "w: fail")
    assert png_width(png) >= 40 * 80


DRAW_TWICE = """
import sys
from pathlib import Path
from analysis.quanta import draw
from arith.vocab import Layout
from tests.test_quanta import RECORDS
draw(RECORDS, Layout(2), 1, 3, "attention", Path(sys.argv[1]) / "m_quanta_attention", "m: attention")
"""


def test_rendering_twice_gives_the_same_bytes(tmp_path):
    """Two processes (fresh ids, hash seeds, clocks) draw byte-identical SVGs and PNGs."""
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        proc = subprocess.run(
            [sys.executable, "-c", DRAW_TWICE, str(tmp_path / folder)], cwd=REPO, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
    one = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert one == sorted(p.name for p in (tmp_path / "two").iterdir()) and any(n.endswith(".svg") for n in one)
    for name in one:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_a_view_with_nothing_to_show_loses_its_old_maps(tmp_path):
    draw_all(RECORDS, Layout(2), 1, 3, tmp_path, "m")
    add = map_paths(tmp_path, "m", "add")
    assert all(p.is_file() for p in add)
    no_add = [{**r, "tags": [t for t in r["tags"] if not t.startswith("Math.Add")]} for r in RECORDS]
    drawn = draw_all(no_add, Layout(2), 1, 3, tmp_path, "m")
    assert not any(p.exists() for p in add)  # they showed the earlier behaviour file
    assert map_paths(tmp_path, "m", "fail")[0] in drawn
