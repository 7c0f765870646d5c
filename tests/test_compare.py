"""`varith compare`: two hand-made behaviour files and the numbers worked out by hand."""

from __future__ import annotations

import json

import pytest

from analysis.compare import compare_files, compare_records, node_label
from arith.errors import InputError
from jobs.cli import main


def node(position, layer, is_head, num, *tags):
    return {"position": position, "layer": layer, "is_head": is_head, "num": num, "tags": list(tags)}


# A has nodes P9L0H0, P9L0H1, P10L1H2, P11L0M0; B has P9L0H0, P9L0H1, P11L0M0, P12L1H0.
A = [
    node(9, 0, True, 0, "Fail%:3", "Impact:A765", "Math.Add:S12"),
    node(9, 0, True, 1, "Fail%:1", "Impact:A654", "Attn:P8=52"),
    node(10, 1, True, 2, "Fail%:2", "Impact:A4"),
    node(11, 0, False, 0, "Fail%:8", "Impact:A3", "Math.Add:S1"),
]
B = [
    node(9, 0, True, 0, "Fail%:3", "Impact:A765", "Math.Add:S123"),
    node(9, 0, True, 1, "Fail%:2", "Impact:A654"),
    node(11, 0, False, 0, "Fail%:8", "Impact:A3", "Math.Add:S1"),
    node(12, 1, True, 0, "Fail%:1", "Impact:A2"),
]


def test_hand_computed_numbers(tmp_path):
    a, b = tmp_path / "a_behavior.json", tmp_path / "b_behavior.json"
    a.write_text(json.dumps(A))
    b.write_text(json.dumps(B))
    c = compare_files(a, b)
    # shared: 3 nodes; union: 5 -> Jaccard 3/5
    assert [node_label(k) for k in c.shared] == ["P9L0H0", "P9L0H1", "P11L0M0"]
    assert [node_label(k) for k in c.only_a] == ["P10L1H2"]
    assert [node_label(k) for k in c.only_b] == ["P12L1H0"]
    assert c.jaccard == pytest.approx(0.6)
    tags = {t.major: (t.agree, t.nodes) for t in c.tags}
    # Fail%: 3 shared nodes carry it, P9L0H1 differs (1 vs 2) -> 2/3
    # Impact: all 3 agree; Math.Add: P9L0H0 (S12 vs S123) differs, P11L0M0 agrees -> 1/2
    # Attn: only A's P9L0H1 has one -> 0/1
    assert tags == {"Fail%": (2, 3), "Impact": (3, 3), "Math.Add": (1, 2), "Attn": (0, 1)}


def test_cli_text_and_json(tmp_path, capsys):
    a, b = tmp_path / "a_maths.json", tmp_path / "b_maths.json"
    a.write_text(json.dumps([node(15, 0, True, 2, "Algo:A5.SA"), node(15, 0, True, 3)]))
    b.write_text(json.dumps([node(15, 0, True, 2, "Algo:A5.SA", "Algo:A5.MD")]))
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "shared useful nodes: 1 (Jaccard 0.500)" in out and "only in A: P15L0H3" in out
    assert main(["compare", str(a), str(b), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["jaccard"] == 0.5 and d["tags"]["Algo"] == {"nodes": 1, "agree": 0, "agreement": 0.0}


def test_empty_files_and_bad_input(tmp_path, capsys):
    c = compare_records([], [])
    assert c.jaccard is None and c.tags == ()
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a list"}')
    with pytest.raises(InputError):
        compare_files(bad, bad)
    assert main(["compare", str(bad), str(bad)]) == 2
    assert "expected a JSON array" in capsys.readouterr().err
