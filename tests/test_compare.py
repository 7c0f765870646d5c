"""`varith compare`: two hand-made behaviour files and the numbers worked out by hand."""

from __future__ import annotations

import json
import subprocess

import pytest

from analysis.compare import compare_files, compare_records, node_label
from arith.errors import InputError
from jobs.cli import main
from tests.conftest import assert_one_line_error, varith


def cli(capsys, *args: str) -> subprocess.CompletedProcess:
    """`varith ARGS` in this process (the working folder is the test's): exit code, stdout, stderr."""
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def node(position, layer, is_head, num, *tags):
    return {"position": position, "layer": layer, "is_head": is_head, "num": num, "tags": list(tags)}


# A has nodes P9L0H0, P9L0H1, P10L1H2, P11L0MLP; B has P9L0H0, P9L0H1, P11L0MLP, P12L1H0.
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
    assert [node_label(k) for k in c.shared] == ["P9L0H0", "P9L0H1", "P11L0MLP"]  # named as the quanta maps
    assert [node_label(k) for k in c.only_a] == ["P10L1H2"]
    assert [node_label(k) for k in c.only_b] == ["P12L1H0"]
    assert c.jaccard == pytest.approx(0.6)
    tags = {t.major: (t.agree, t.nodes) for t in c.tags}
    # Fail%: 3 shared nodes carry it, P9L0H1 differs by 1 point (1 vs 2): within the default 2 -> 3/3
    # Impact: all 3 agree; Math.Add: P9L0H0 (S12 vs S123) differs, P11L0MLP agrees -> 1/2
    # Attn: only A's P9L0H1 has one (P8 at 52% there, 0% in B) -> 0/1
    assert tags == {"Fail%": (3, 3), "Impact": (3, 3), "Math.Add": (1, 2), "Attn": (0, 1)}
    exact = {t.major: (t.agree, t.nodes) for t in compare_files(a, b, fail_tol=0).tags}
    assert exact["Fail%"] == (2, 3)  # with no tolerance, 1 vs 2 differs


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
    assert d["tolerance"]["Fail%"] == 2 and d["tolerance"]["Attn"] == 5


def test_empty_files_and_bad_input(tmp_path, capsys):
    c = compare_records([], [])
    assert c.jaccard is None and c.tags == ()
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a list"}')
    with pytest.raises(InputError):
        compare_files(bad, bad)
    assert main(["compare", str(bad), str(bad)]) == 2
    assert "expected a JSON array" in capsys.readouterr().err


# near-identical models: every number a point or two apart
NEAR_A = [
    node(9, 0, True, 0, "Fail%:30", "Impact:A2", "Attn:P1=52", "Attn:P5=30", "Attn:P8=2"),
    node(9, 0, False, 0, "Fail%:61", "Impact:A21"),
]
NEAR_B = [
    node(9, 0, True, 0, "Fail%:32", "Impact:A2", "Attn:P1=55", "Attn:P5=28"),
    node(9, 0, False, 0, "Fail%:58", "Impact:A21"),
]


def test_numbers_agree_within_the_stated_tolerance_from_the_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = ("add_d2_l1_h3_t3K_s000001_behavior.json", "add_d2_l1_h3_t3K_s000002_behavior.json")
    for name, records in zip(names, (NEAR_A, NEAR_B), strict=True):
        (tmp_path / name).write_text(json.dumps(records))
    proc = varith("compare", *names, cwd=tmp_path)  # as a user runs it
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Fail% within 2 percentage points, Attn within 5 points per attended position" in out
    # Fail%: 30/32 agree, 61/58 (3 points) do not; Attn: P1 52/55, P5 30/28, P8 2/(0) all within 5
    assert "Fail%      agree on 1/2 shared nodes" in out and "Attn       agree on 1/1 shared nodes" in out
    assert "shared useful nodes: 2" in out and "P9L0MLP" not in out.split("only in")[1]
    proc = cli(capsys, "compare", *names, "--fail-tol", "3", "--attn-tol", "2")
    assert "Fail%      agree on 2/2" in proc.stdout and "Attn       agree on 0/1" in proc.stdout, proc.stdout
    assert "Fail% within 3 percentage points, Attn within 2 points" in proc.stdout
    assert_one_line_error(cli(capsys, "compare", *names, "--attn-tol", "-1"), "--attn-tol", ">= 0")
    assert_one_line_error(cli(capsys, "compare", *names, "--fail-tol", "nan"), "--fail-tol")


def test_mlp_nodes_are_named_as_the_maps_name_them(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.json").write_text(json.dumps([node(15, 1, False, 0, "Fail%:4"), node(15, 1, True, 2, "Fail%:4")]))
    (tmp_path / "b.json").write_text(json.dumps([node(15, 1, True, 2, "Fail%:4")]))
    proc = cli(capsys, "compare", "a.json", "b.json")
    assert "only in A: P15L1MLP" in proc.stdout, proc.stdout
    assert node_label((15, 1, True, 2)) == "P15L1H2"


def test_files_of_different_digit_counts_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    six, five = "add_d6_l2_h3_t15K_s372001_behavior.json", "add_d5_l1_h3_t15K_s372001_behavior.json"
    for name in (six, five):
        (tmp_path / name).write_text(json.dumps(A))
    proc = cli(capsys, "compare", six, five)
    assert_one_line_error(proc, six, "6-digit", five, "5-digit", "same digit count")
    # the sidecar's model name counts too (a file named otherwise)
    (tmp_path / "mine_behavior.json").write_text(json.dumps(A))
    (tmp_path / "mine_behavior.meta.json").write_text(json.dumps({"model": "add_d5_l1_h3_t15K_s000001"}))
    assert_one_line_error(cli(capsys, "compare", six, "mine_behavior.json"), "5-digit")
    assert cli(capsys, "compare", five, "mine_behavior.json").returncode == 0


def test_a_stale_maths_file_gets_a_warning(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import os

    name = "add_d2_l1_h3_t3K_s000001"
    maths, behavior = tmp_path / f"{name}_maths.json", tmp_path / f"{name}_behavior.json"
    behavior.write_text(json.dumps(A))
    maths.write_text(json.dumps([node(9, 0, True, 0, "Algo:A1.SA")]))
    proc = cli(capsys, "compare", maths.name, maths.name)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    os.utime(maths, ns=(behavior.stat().st_mtime_ns - 10**9,) * 2)  # made before the behaviour file was
    proc = cli(capsys, "compare", maths.name, maths.name)
    assert proc.returncode == 0 and "agree on 1/1" in proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "warning" in lines[0] and "stale" in lines[0] and behavior.name in lines[0], lines
