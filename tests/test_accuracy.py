import json
import math

import numpy as np
import pytest

from analysis.accuracy import accuracy_report, binomial_upper_bound, nines_verdict, read_reports, write_report
from arith.errors import InputError
from arith.verify import BlockCounts, RandomSuite, count_block
from arith.vocab import ADD, SUB, parse_questions


def test_binomial_upper_bound_matches_known_clopper_pearson_values():
    assert binomial_upper_bound(1_000_000, 0) == pytest.approx(-math.log(0.05) / 1_000_000, rel=1e-3)  # rule of 3
    assert binomial_upper_bound(1_000_000, 1) == pytest.approx(4.744e-6, rel=1e-3)
    assert binomial_upper_bound(1_000_000, 10) == pytest.approx(16.96e-6, rel=1e-3)
    assert binomial_upper_bound(20, 20) == 1.0 and binomial_upper_bound(0, 0) is None
    # more failures, or fewer questions, never lower the bound
    assert binomial_upper_bound(1000, 5) < binomial_upper_bound(1000, 6) < binomial_upper_bound(500, 6)


@pytest.mark.parametrize(
    "failed, words", [(0, "six 9s"), (1, "six 9s"), (2, "five 9s"), (100, "four 9s"), (10_001, "fewer than two 9s")]
)
def test_nines_verdict_follows_the_reference_thresholds(failed, words):
    assert nines_verdict(1_000_000, failed) == words
    assert nines_verdict(999_999, failed) is None  # only defined for exactly 1M questions


def test_report_counts_operations_and_classes_and_lists_failures():
    x, y, op = parse_questions(["12+34", "55+45", "10-20", "30-10", "99-99"], 2)
    pred = np.array([[10, 0, 4, 6], [10, 1, 0, 0], [11, 0, 1, 0], [10, 0, 2, 0], [11, 0, 0, 0]], dtype=np.uint8)
    from arith.vocab import encode

    wrong = pred != encode(x, y, op)[:, -4:]
    failed = wrong.any(axis=1)
    counts = count_block(x, y, op, failed, wrong, pred) + BlockCounts.empty(2)
    suite = RandomSuite(2, (ADD, SUB), 3)
    report = accuracy_report(counts, suite, "mix_d2_l1_h3_t20_s111111")
    assert report["tested"] == 5 and report["failed"] == 1
    assert report["by_operation"]["SUB"] == {**report["by_operation"]["SUB"], "tested": 2, "failed": 1}
    assert report["by_class"]["SUB"]["M0"]["failed"] == 1  # 99-99 answered -000
    assert report["failures"] == [{"question": "99-99=", "expected": "+000", "predicted": "-000", "class": "M0"}]
    assert report["wrong_answer_positions"] == {"A3": 1, "A2": 0, "A1": 0, "A0": 0}


def _exhaustive_counts(n_digits: int = 1, ops=(ADD,), drop: int = 0):
    """Counts of an exhaustive suite in which the questions with x == y fail; `drop` questions left out."""
    from arith.verify import ExhaustiveSuite

    suite = ExhaustiveSuite(n_digits, ops)
    total = BlockCounts.empty(n_digits)
    for k in range(suite.n_blocks):
        x, y, op = suite.block(k)
        x, y, op = x[drop:], y[drop:], op[drop:]
        failed = (x == y).all(axis=1)
        wrong = np.zeros((len(op), n_digits + 2), dtype=bool)
        wrong[failed, -1] = True
        total = total + count_block(x, y, op, failed, wrong, np.zeros((len(op), n_digits + 2), np.uint8))
    return total, suite


def test_exhaustive_report_states_the_exact_rate_and_no_bound():
    counts, suite = _exhaustive_counts(1, (ADD, SUB))
    report = accuracy_report(counts, suite, "mix_d1_l1_h3_t20_s111111")
    assert report["tested"] == 200 and report["failed"] == 20
    assert report["failure_rate"] == 0.1
    assert report["exhaustive"] == "every one of the 100 1-digit addition and subtraction questions was checked"
    text = json.dumps(report)
    assert "failure_rate_upper_95" not in text  # no bound anywhere: every question was checked
    assert report["by_operation"]["ADD"]["failure_rate"] == 0.1
    for cell in report["by_class"]["ADD"].values():
        assert cell["failure_rate"] == cell["failed"] / cell["tested"]


def test_exhaustive_counts_with_a_hole_are_refused():
    counts, suite = _exhaustive_counts(1, (ADD,), drop=1)  # one question missing from every block
    with pytest.raises(InputError, match="cover 99 of the 100"):
        accuracy_report(counts, suite, "add_d1_l1_h3_t20_s111111")


def test_sampled_reports_keep_their_upper_bound():
    counts, _ = _exhaustive_counts(1, (ADD,))
    report = accuracy_report(counts, RandomSuite(1, (ADD,), 100), "add_d1_l1_h3_t20_s111111")
    assert "failure_rate" not in report and "exhaustive" not in report
    assert report["by_operation"]["ADD"]["failure_rate_upper_95"] > 0.1


def test_accuracy_file_keeps_one_report_per_suite(tmp_path):
    from arith.verify import HandpickedSuite

    counts, exhaustive = _exhaustive_counts(1, (ADD,))
    path = tmp_path / "m_accuracy.json"
    as_json = lambda report: json.loads(json.dumps(report))  # noqa: E731  (tuples become lists)
    ex = as_json(accuracy_report(counts, exhaustive, "m"))
    rnd = as_json(accuracy_report(counts, RandomSuite(1, (ADD,), 100), "m"))
    hand = as_json(accuracy_report(counts, HandpickedSuite(1, (ADD,)), "m"))
    path.write_text(json.dumps(rnd))  # the old layout: one report at the top level
    write_report(path, ex)
    assert read_reports(path) == {"random": rnd, "exhaustive": ex}
    write_report(path, hand)
    rnd2 = rnd | {"mode": "exact"}
    write_report(path, rnd2)  # a rerun of a suite replaces that suite's report only
    data = json.loads(path.read_text())
    assert list(data) == ["exhaustive", "random", "handpicked"]
    assert data == {"exhaustive": ex, "random": rnd2, "handpicked": hand}
    assert not [p for p in tmp_path.iterdir() if p.name != path.name]  # no temporary or lock files left
    path.write_text("{not json")  # not ours to replace: refused, left as it is
    with pytest.raises(InputError, match="m_accuracy.json: not an accuracy file .*left as it is"):
        write_report(path, ex)
    assert path.read_text() == "{not json"
