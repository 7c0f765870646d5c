import math

import numpy as np
import pytest

from analysis.accuracy import accuracy_report, binomial_upper_bound, nines_verdict
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
