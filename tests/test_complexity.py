"""Complexity classes (docs/reference_facts.md F9), the hand-picked suites (F6.3) and the
tricase questions (F6.4)."""

from __future__ import annotations

import numpy as np
import pytest

from arith.complexity import (
    CLASSES,
    N_CLASSES,
    UNKNOWN,
    class_name,
    class_names,
    classify,
    code_of,
    group_name,
    major_tag,
)
from arith.errors import InputError
from arith.suites import LITERAL_EXAMPLES, achievable, handpicked, tricase
from arith.vocab import ADD, MUL, SUB, digits_to_int, parse_questions, question_strings


# ----------------------------------------------------------------------------------- helpers
def labels(questions: list[str], n: int) -> list[str]:
    return class_names(classify(*parse_questions(questions, n)))


def label(question: str, n: int = 6) -> str:
    return labels([question], n)[0]


def from_columns(cols: list[tuple[int, int]], sym: str) -> str:
    """A question from digit pairs given units first: [(a0, b0), (a1, b1), ...]."""
    a = "".join(str(p[0]) for p in reversed(cols))
    b = "".join(str(p[1]) for p in reversed(cols))
    return f"{a}{sym}{b}"


def slow_class(a: int, b: int, sym: str, n: int) -> str:
    """F9 read literally, one question at a time, with Python ints."""
    da = [(a // 10**k) % 10 for k in range(n)]
    db = [(b // 10**k) % 10 for k in range(n)]
    if sym == "+":
        mc = [da[k] + db[k] > 9 for k in range(n)]
        ms = [da[k] + db[k] == 9 for k in range(n)]
        if not any(mc):
            return "S0"
        if not any(ms):
            return "S1"
        for run, name in ((4, "S5"), (3, "S4"), (2, "S3"), (1, "S2")):
            for k in range(n - run):
                if mc[k] and all(ms[k + 1 : k + 1 + run]):
                    return name
        return "S1"
    if sym == "-":
        bo = [da[k] < db[k] for k in range(n)]
        mz = [da[k] == db[k] for k in range(n)]
        if a >= b:
            if not any(bo):
                return "M0"
            for run, name in ((3, "M4+"), (2, "M3"), (1, "M2")):
                for k in range(n - run):
                    if bo[k] and all(mz[k + 1 : k + 1 + run]):
                        return name
            return "M1"
        top = max(k for k in range(n) if da[k] or db[k])
        mz = [mz[k] and k <= top for k in range(n)]
        if not any(bo):
            return "UNKNOWN"
        for run, name in ((3, "N4+"), (2, "N3"), (1, "N2")):
            for k in range(n - run):
                if k + run <= top and bo[k] and all(mz[k + 1 : k + 1 + run]):
                    return name
        return "N1"
    return "UNKNOWN"


def random_questions(n: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uniform questions mixed with enriched ones: many sum-9 columns, equal digits, 0-0 columns and
    short operands."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 10, (count, n)).astype(np.uint8)
    y = rng.integers(0, 10, (count, n)).astype(np.uint8)
    op = rng.choice(np.array([ADD, SUB, MUL], np.uint8), size=count, p=[0.45, 0.45, 0.10])
    kind = rng.integers(0, 5, count)
    cells = rng.random((count, n)) < 0.5
    nine = (kind == 1)[:, None] & cells
    y[nine] = 9 - x[nine]
    same = (kind == 2)[:, None] & cells
    y[same] = x[same]
    zero = (kind == 3)[:, None] & cells
    x[zero] = 0
    y[zero] = 0
    short = kind == 4  # leading zeros in both operands, then some equal columns
    lead = rng.integers(0, n, count)
    cols = np.arange(n)[None, :] < lead[:, None]
    x[short[:, None] & cols] = 0
    y[short[:, None] & cols] = 0
    same2 = short[:, None] & (rng.random((count, n)) < 0.4)
    y[same2] = x[same2]
    return x, y, op


# ----------------------------------------------------------------------------- spec examples
@pytest.mark.parametrize("n", [5, 6, 7])
def test_spec_examples(n):
    assert labels(["12345+33333", "555+445", "54545+45455"], n) == ["S0", "S3", "S5"]
    assert labels(["99111-99111", "22222-11113", "99004-8"], n) == ["M0", "M1", "M3"]
    assert labels(["100-200", "3111-3117"], n) == ["N1", "N4+"]


def test_multiplication_is_unknown():
    codes = classify(*parse_questions(["12*34", "000345*000823", "0*0"], 6))
    assert codes.tolist() == [UNKNOWN] * 3
    assert codes.dtype == np.int8


# ----------------------------------------------------------------------- addition boundaries
@pytest.mark.parametrize("chain, expected", [(0, "S1"), (1, "S2"), (2, "S3"), (3, "S4"), (4, "S5"), (5, "S5")])
def test_carry_then_exact_run_of_sum9_columns(chain, expected):
    # units column carries, then exactly `chain` sum-9 columns, then a column summing to 3 (no 9, no carry)
    cols = [(6, 7)] + [(4, 5)] * chain + [(1, 2)]
    assert label(from_columns(cols, "+"), n=len(cols)) == expected
    # the same question with the run starting higher up (a low column below the carry)
    cols = [(1, 1)] + cols
    assert label(from_columns(cols, "+"), n=len(cols)) == expected


@pytest.mark.parametrize("chain, expected", [(1, "S2"), (2, "S3"), (3, "S4")])
def test_run_ended_by_another_carry_still_counts_only_its_nines(chain, expected):
    cols = [(9, 9)] + [(0, 9)] * chain + [(5, 5), (1, 1)]
    assert label(from_columns(cols, "+"), n=len(cols)) == expected


def test_sum9_below_a_carry_does_not_count():
    assert label("64+45") == "S1"  # units sum to 9, tens carry: the 9 is below the carry
    below = from_columns([(4, 5)] * 4 + [(6, 4), (1, 1)], "+")  # four sum-9 columns, then the carry above them
    assert [label(below, n) for n in (6, 8)] == ["S1", "S1"]
    assert label("99964+00045") == "S4"  # the carry in the tens runs into three 9+0 columns above it


def test_sum9_without_any_carry_is_s0():
    assert label("4545+5454") == "S0"
    assert label("999999+000000") == "S0"


def test_carry_with_gap_before_sum9_is_s1():
    assert label("405+505") == "S1"  # carry in units, 0+0 in tens, 4+5=9 in hundreds
    assert label("5+5", n=1) == "S1"


def test_longest_run_wins_over_earlier_shorter_run():
    # units carry + one 9 (S2), then a second carry with three 9s above it (S4)
    cols = [(5, 5), (4, 5), (7, 7), (3, 6), (2, 7), (8, 1), (1, 1)]
    assert label(from_columns(cols, "+"), n=7) == "S4"


def test_s5_needs_five_columns():
    assert label("54545+45455", n=5) == "S5"
    assert label("4545+5455", n=4) == "S4"  # same pattern one column shorter: carry + three 9s
    assert label("45+55", n=2) == "S2"


def test_carry_in_top_column_with_nothing_above():
    assert label("945+154", n=3) == "S1"  # 9s in units/tens, carry in hundreds


# ----------------------------------------------------------------------- Math.Sub boundaries
@pytest.mark.parametrize("zeros, expected", [(0, "M1"), (1, "M2"), (2, "M3"), (3, "M4+"), (4, "M4+")])
def test_borrow_then_exact_run_of_zero_difference_columns(zeros, expected):
    # units borrow (2-7), `zeros` equal non-zero columns (3-3), then a larger column (8-1) so x > y
    cols = [(2, 7)] + [(3, 3)] * zeros + [(8, 1)]
    assert label(from_columns(cols, "-"), n=len(cols)) == expected
    # zero differences made of 0-0 columns count the same
    cols = [(2, 7)] + [(0, 0)] * zeros + [(8, 1)]
    assert label(from_columns(cols, "-"), n=len(cols)) == expected


def test_m_classes_of_round_numbers():
    assert labels(["10-1", "100-1", "1000-1", "10000-1", "100000-1"], 6) == ["M1", "M2", "M3", "M4+", "M4+"]


def test_m0_no_borrow_and_zero_answers():
    assert labels(["5-3", "99111-99111", "0-0", "987654-123"], 6) == ["M0"] * 4


def test_zero_difference_below_a_borrow_does_not_count():
    assert label("305-215") == "M1"  # units 5-5 equal, tens borrow, hundreds larger
    assert label("20-11") == "M1"


def test_sub_classes_do_not_depend_on_padding_width():
    for q in ["1000-1", "5343-4348", "22222-11113", "100-1"]:
        assert len({label(q, n) for n in range(5, 10)}) == 1


def test_m_run_ended_by_another_borrow():
    assert label("9214-1225") == "M2"  # units borrow, tens borrow, hundreds equal, thousands larger
    assert label("9214-1125") == "M1"  # units and tens borrow, hundreds larger: no zero column above a borrow
    assert label("1213-1114") == "M2"


# ----------------------------------------------------------------------- Math.Neg boundaries
@pytest.mark.parametrize("n", [1, 2, 4, 6, 9])
def test_leading_zero_columns_never_extend_a_negative_run(n):
    # without clearing MZ above the highest non-zero column these would be N4+ for n >= 4
    assert label("1-2", n) == "N1"
    if n >= 3:
        assert label("100-200", n) == "N1"
    if n >= 2:
        assert label("11-12", n) == "N2"


@pytest.mark.parametrize("zeros, expected", [(0, "N1"), (1, "N2"), (2, "N3"), (3, "N4+"), (4, "N4+")])
def test_negative_borrow_then_equal_columns_up_to_the_top(zeros, expected):
    # units borrow, then `zeros` equal columns, the top one non-zero: x < y
    cols = [(1, 7)] + [(0, 0)] * max(zeros - 1, 0) + ([(3, 3)] if zeros else [])
    assert label(from_columns(cols, "-"), n=9) == expected


def test_negative_run_stops_at_an_unequal_column():
    assert label("3111-4117") == "N3"  # units borrow, two equal, then thousands 3 < 4
    assert label("1311-2117") == "N2"  # units borrow, tens equal, hundreds 3 > 1 ends the run after one column
    assert label("10-15") == "N2"
    assert label("0012-0013", 4) == "N2"


def test_negative_equal_zero_columns_inside_the_number_count():
    assert label("101-102") == "N3"
    assert label("1001-1002") == "N4+"
    assert label("3111-3117") == "N4+"


def test_negative_borrow_in_top_column():
    assert label("05-10") == "N1"
    assert label("100-200") == "N1"
    assert label("109-200") == "N1"


def test_negative_and_positive_twins():
    # the same digit patterns with the operands swapped fall into different families
    assert label("3117-3111") == "M0"
    assert label("200-100") == "M0"
    assert label("102-101") == "M0"


# ------------------------------------------------------------------------------- cross-check
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7])
def test_matches_slow_reference_on_random_and_enriched_questions(n):
    x, y, op = random_questions(n, 4000, seed=1000 + n)
    got = class_names(classify(x, y, op))
    a = digits_to_int(x).tolist()
    b = digits_to_int(y).tolist()
    sym = [{ADD: "+", SUB: "-", MUL: "*"}[o] for o in op.tolist()]
    want = [slow_class(a[i], b[i], sym[i], n) for i in range(len(a))]
    bad = [(question_strings(x[i : i + 1], y[i : i + 1], op[i : i + 1])[0], got[i], want[i])
           for i in range(len(a)) if got[i] != want[i]]  # fmt: skip
    assert not bad, bad[:10]
    # the enrichment really reaches the rare classes for n >= 5
    if n >= 5:
        assert {"S5", "M4+", "N4+"} <= set(got)


@pytest.mark.parametrize("only", [ADD, SUB])
def test_single_operation_batches_match_mixed_batches(only):
    x, y, op = random_questions(6, 3000, seed=7)
    mixed = classify(x, y, op)
    keep = op == only
    assert np.array_equal(classify(x[keep], y[keep], op[keep]), mixed[keep])


def test_accepts_other_integer_dtypes_and_empty_input():
    x, y, op = parse_questions(["555+445", "99004-8"], 6)
    assert classify(x.astype(np.int64), y.astype(np.int32), op.astype(np.int64)).tolist() == [3, 9]
    assert classify(np.zeros((0, 6), np.uint8), np.zeros((0, 6), np.uint8), np.zeros(0, np.uint8)).shape == (0,)


@pytest.mark.parametrize(
    "x, y, op, fragment",
    [
        (np.full((1, 3), 10), np.zeros((1, 3)), np.zeros(1), "outside 0..9"),
        (np.full((1, 3), -1), np.zeros((1, 3), int), np.zeros(1), "outside 0..9"),
        (np.zeros((1, 3), int), np.zeros((1, 4), int), np.zeros(1), "same shape"),
        (np.zeros((2, 3), int), np.zeros((2, 3), int), np.zeros(3), "op must have shape"),
        (np.zeros((1, 3), int), np.zeros((1, 3), int), np.array([5]), "unknown operation code 5"),
        (np.zeros((1, 3), float), np.zeros((1, 3), float), np.zeros(1), "integer digit grid"),
    ],
)
def test_bad_grids_raise_input_error(x, y, op, fragment):
    with pytest.raises(InputError, match=fragment):
        classify(x, y, op)


# ------------------------------------------------------------------------------------- names
def test_names_and_groups():
    assert N_CLASSES == 15 and CLASSES[0] == "S0" and CLASSES[-1] == "N4+"
    assert class_names(np.array([-1, 0, 5, 6, 10, 11, 14], np.int8)) == [
        "UNKNOWN", "S0", "S5", "M0", "M4+", "N1", "N4+"
    ]  # fmt: skip
    assert [group_name(CLASSES.index(c)) for c in ("S3", "M0", "N1", "M4+")] == [
        "Math.Add.S3", "Math.Sub.M0", "Math.Neg.N1", "Math.Sub.M4+"
    ]  # fmt: skip
    assert major_tag(CLASSES.index("N2")) == "Math.Neg"
    assert group_name(UNKNOWN) == "Unknown"
    assert class_name(UNKNOWN) == "UNKNOWN"
    assert [code_of(c) for c in CLASSES] == list(range(N_CLASSES))
    with pytest.raises(InputError, match="S6"):
        code_of("S6")
    with pytest.raises(InputError, match="15"):
        group_name(15)
    with pytest.raises(InputError, match="-2"):
        class_names([0, -2])


# ------------------------------------------------------------------------ hand-picked suites
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 8, 12, 20])
def test_handpicked_covers_exactly_the_achievable_classes(n):
    x, y, op, lab = handpicked(n, seed=0, per_class=12)
    assert x.shape == y.shape == (len(op), n) and x.dtype == np.uint8
    assert np.array_equal(lab, classify(x, y, op))
    counts = np.bincount(lab, minlength=N_CLASSES)
    present = {CLASSES[i] for i in range(N_CLASSES) if counts[i]}
    assert present == set(achievable(n))
    assert all(counts[CLASSES.index(c)] == 12 for c in achievable(n))
    rows = {(bytes(a), bytes(b), o) for a, b, o in zip(x, y, op.tolist(), strict=True)}
    assert len(rows) == len(op)  # no duplicates
    assert list(lab) == sorted(lab)  # grouped in CLASSES order


def test_achievable_classes_by_width():
    assert achievable(1) == ("S0", "S1", "M0", "N1")
    assert achievable(3) == ("S0", "S1", "S2", "S3", "M0", "M1", "M2", "N1", "N2", "N3")
    assert "M4+" not in achievable(4) and "N4+" in achievable(4) and "S5" not in achievable(4)
    assert achievable(5) == CLASSES


def test_handpicked_starts_each_class_with_the_spec_examples():
    x, y, op, lab = handpicked(6)
    q = question_strings(x, y, op)
    names = class_names(lab)
    for name, a, o, b in LITERAL_EXAMPLES:
        text = f"{a:06d}{'+' if o == ADD else '-'}{b:06d}"
        assert text in q
        i = q.index(text)
        assert names[i] == name
        assert names.index(name) == i  # first of its class
    # only those that fit: the 4-digit suite has 555+445, 100-200 and 3111-3117 but not the 5-digit ones
    q4 = set(question_strings(*handpicked(4)[:3]))
    fits = {f"{a:04d}{'+' if o == ADD else '-'}{b:04d}" for _, a, o, b in LITERAL_EXAMPLES if max(a, b) < 10**4}
    assert fits == {"0555+0445", "0100-0200", "3111-3117"} and fits <= q4


def test_handpicked_is_deterministic_and_seeded_per_class():
    a = handpicked(6, seed=5)
    b = handpicked(6, seed=5)
    c = handpicked(6, seed=6)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])
    # a class's examples do not depend on which other classes are asked for
    s3 = CLASSES.index("S3")
    only = handpicked(6, seed=5, per_class={"S3": 7})
    assert set(only[3].tolist()) == {s3}
    assert np.array_equal(only[0], a[0][a[3] == s3][:7])


def test_handpicked_literal_first_then_seeded_examples():
    x1, *_ = handpicked(6, seed=5, per_class={"S3": 3})
    x2, *_ = handpicked(6, seed=6, per_class={"S3": 3})
    assert np.array_equal(x1[0], x2[0])  # the literal 555+445 comes first whatever the seed
    assert not np.array_equal(x1[1:], x2[1:])


def test_handpicked_generates_the_subtle_patterns():
    # beyond the literal examples: short operands in every family, and 0-0 columns inside borrow runs
    x, y, op, lab = handpicked(6, seed=0, per_class=40)
    literal = {f"{a:06d}{'+' if o == ADD else '-'}{b:06d}" for _, a, o, b in LITERAL_EXAMPLES}
    rows = [(s, c) for s, c in zip(question_strings(x, y, op), class_names(lab), strict=True) if s not in literal]
    for family in "SMN":
        assert any(s.startswith("00") and s[7:9] == "00" for s, c in rows if c[0] == family)

    def inner_zero_zero(q: str) -> bool:  # a 0-0 column below some non-zero digit
        a, b = q[:6], q[7:]
        return any(a[i] == b[i] == "0" and (a[:i] + b[:i]).strip("0") for i in range(6))

    for cls in ("M3", "M4+", "N3", "N4+"):
        assert any(inner_zero_zero(s) for s, c in rows if c == cls), cls


def test_handpicked_rejects_bad_arguments():
    with pytest.raises(InputError, match="n_digits"):
        handpicked(0)
    with pytest.raises(InputError, match="S9"):
        handpicked(6, per_class={"S9": 3})


# ----------------------------------------------------------------------------------- tricase
def _digit(grid: np.ndarray, n: int, d: int) -> np.ndarray:
    return grid[:, n - 1 - d].astype(int)


@pytest.mark.parametrize("n", [3, 6])
def test_tricase_cases_hold_at_their_digit(n):
    suite = tricase(n, seed=0, per_case=100)
    assert set(suite) == {(d, o) for d in range(n) for o in (ADD, SUB)}
    for (d, o), (x, y, ops, case) in suite.items():
        assert np.bincount(case, minlength=11)[8:].tolist() == [100, 100, 100]
        assert (ops == o).all()
        a, b = _digit(x, n, d), _digit(y, n, d)
        if o == ADD:
            s = a + b
            assert ((s <= 8) == (case == 8)).all() and ((s == 9) == (case == 9)).all()
            assert ((s >= 10) == (case == 10)).all()
        else:
            assert ((a < b) == (case == 8)).all() and ((a == b) == (case == 9)).all()
            assert ((a > b) == (case == 10)).all()
        low_x = digits_to_int(x[:, n - d :]) if d else np.zeros(len(x), int)
        low_y = digits_to_int(y[:, n - d :]) if d else np.zeros(len(x), int)
        if o == ADD:
            assert (low_x + low_y < 10**d).all()  # nothing carries into digit d
        else:
            assert (low_y <= low_x).all()  # nothing borrows from digit d
        high_x, high_y = x[:, : n - 1 - d], y[:, : n - 1 - d]
        assert np.array_equal(high_x, high_y)  # zero, or the same padding digits in both operands
        if d >= 2:
            assert not high_x.any()
        rows = np.unique(np.concatenate([x, y], axis=1), axis=0)
        assert len(rows) == len(x)


def test_tricase_subtraction_case8_is_negative():
    x, y, op, case = tricase(6, seed=1)[(2, SUB)]
    neg = digits_to_int(x) < digits_to_int(y)
    assert np.array_equal(neg, case == 8)


def test_tricase_is_deterministic_and_handles_tiny_and_wide_grids():
    a, b = tricase(4, seed=9), tricase(4, seed=9)
    assert all(np.array_equal(u, v) for k in a for u, v in zip(a[k], b[k], strict=True))
    assert not np.array_equal(tricase(4, seed=10)[(3, ADD)][0], a[(3, ADD)][0])
    tiny = tricase(1, seed=0)
    x, y, op, case = tiny[(0, ADD)]
    assert np.bincount(case, minlength=11)[9] == 10  # only ten single-digit pairs sum to 9
    wide = tricase(20, seed=0, per_case=5)
    x, y, op, case = wide[(19, ADD)]
    assert x.shape == (15, 20)
    assert ((x[:, 0].astype(int) + y[:, 0]) >= 10).sum() == 5
