"""Reduce summed verification counts into `<name>_accuracy.json`."""

from __future__ import annotations

import numpy as np

from arith import complexity
from arith.verify import N_CCOLS, BlockCounts, ExhaustiveSuite, RandomSuite, Suite
from arith.vocab import OP_CHAR, QCLASS_NAMES, Layout, encode, tokens_to_strings

COLUMN_NAMES = (*complexity.CLASSES, "UNKNOWN")
# which complexity columns can occur for each question class
_FAMILY = {
    "ADD": range(complexity.S_BASE, complexity.S_TOP + 1),
    "SUB": range(complexity.M_BASE, complexity.M_TOP + 1),
    "NEG": range(complexity.N_BASE, complexity.N_TOP + 1),
    "MUL": range(N_CCOLS - 1, N_CCOLS),
}
NINES = ((1, "six 9s"), (10, "five 9s"), (100, "four 9s"), (1000, "three 9s"), (10000, "two 9s"))


def nines_verdict(tested: int, failed: int) -> str | None:
    """The reference's verdict (upstream_spec 6.2), defined for exactly 1,000,000 questions of one operation."""
    if tested != 1_000_000:
        return None
    for limit, words in NINES:
        if failed <= limit:
            return words
    return "fewer than two 9s"


def binomial_upper_bound(tested: int, failed: int, confidence: float = 0.95) -> float | None:
    """Exact (Clopper-Pearson, one-sided) upper bound on the failure rate: the p with P(X <= failed | p) = 1-conf."""
    if tested == 0:
        return None
    if failed >= tested:
        return 1.0
    alpha = 1.0 - confidence
    if failed == 0:
        return float(1.0 - alpha ** (1.0 / tested))
    from math import log

    i = np.arange(failed + 1, dtype=np.float64)
    # log C(tested, i) for i = 0..failed, as a running sum of log((tested - j + 1) / j): no per-term Python loop
    steps = np.log(tested - i[1:] + 1) - np.log(i[1:])
    log_binom = np.concatenate([[0.0], np.cumsum(steps)])

    def cdf(p: float) -> float:
        terms = log_binom + i * log(p) + (tested - i) * np.log1p(-p)
        m = terms.max()
        return float(np.exp(m) * np.exp(terms - m).sum())

    lo, hi = failed / tested, 1.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if cdf(mid) > alpha:
            lo = mid
        else:
            hi = mid
    return float(hi)


def failing_examples(counts: BlockCounts, n_digits: int, limit: int = 100) -> list[dict]:
    if len(counts.fail_op) == 0:
        return []
    x, y, op = counts.fail_x[:limit], counts.fail_y[:limit], counts.fail_op[:limit]
    full = tokens_to_strings(encode(x, y, op))
    predicted = tokens_to_strings(counts.fail_pred[:limit].astype(np.int64))
    cls = complexity.class_names(complexity.classify(x, y, op))
    q = Layout(n_digits).n_question
    return [
        {"question": f[:q], "expected": f[q:], "predicted": p, "class": c}
        for f, p, c in zip(full, predicted, cls, strict=True)
    ]


def accuracy_report(counts: BlockCounts, suite: Suite, model_name: str, extra: dict | None = None) -> dict:
    """The `<name>_accuracy.json` object."""
    layout = Layout(suite.n_digits)
    by_class: dict[str, dict] = {}
    by_op: dict[str, dict] = {}
    for qi, qname in enumerate(QCLASS_NAMES):
        tested, failed = int(counts.tested[qi].sum()), int(counts.failed[qi].sum())
        if tested == 0:
            continue
        by_op[qname] = {
            "tested": tested,
            "failed": failed,
            "accuracy": 1.0 - failed / tested,
            "failure_rate_upper_95": binomial_upper_bound(tested, failed),
        }
        by_class[qname] = {
            COLUMN_NAMES[c]: {
                "tested": int(counts.tested[qi, c]),
                "failed": int(counts.failed[qi, c]),
                "failure_rate_upper_95": binomial_upper_bound(int(counts.tested[qi, c]), int(counts.failed[qi, c])),
            }
            for c in _FAMILY[qname]
            if counts.tested[qi, c] > 0
        }
    total_tested, total_failed = int(counts.tested.sum()), int(counts.failed.sum())
    report = {
        "model": model_name,
        "suite": suite.fingerprint(),
        "tested": total_tested,
        "failed": total_failed,
        "accuracy": 1.0 - total_failed / total_tested if total_tested else None,
        "by_operation": by_op,
        "by_class": by_class,
        "wrong_answer_positions": dict(zip(layout.answer_names(), counts.wrong_pos.tolist(), strict=True)),
        "failures": failing_examples(counts, suite.n_digits),
    }
    if isinstance(suite, RandomSuite):
        # the reference tests each operation separately: a verdict per operation (ADD, and SUB+NEG together)
        verdicts = {}
        for op in suite.ops:
            rows = {0: [0], 1: [1, 2], 2: [3]}[op]
            t, f = int(counts.tested[rows].sum()), int(counts.failed[rows].sum())
            verdicts[OP_CHAR[op]] = nines_verdict(t, f)
        report["nines"] = verdicts
    if isinstance(suite, ExhaustiveSuite):
        ops = " and ".join({0: "addition", 1: "subtraction", 2: "multiplication"}[o] for o in suite.ops)
        report["exhaustive"] = (
            f"every one of the {10 ** (2 * suite.n_digits):,} {suite.n_digits}-digit {ops} questions was checked"
        )
    if extra:
        report |= extra
    return report


def format_table(report: dict) -> str:
    """A human-readable accuracy table per operation and complexity class."""
    lines = [f"{report['model']}: {report['tested']:,} questions, {report['failed']:,} failed"]
    for qname, classes in report["by_class"].items():
        op = report["by_operation"][qname]
        lines.append(
            f"  {qname}: {op['tested']:,} tested, {op['failed']:,} failed, accuracy {100 * op['accuracy']:.4f}%"
        )
        for cname, c in classes.items():
            acc = 100.0 * (1 - c["failed"] / c["tested"])
            lines.append(f"    {cname:>4}: {c['tested']:>10,} tested {c['failed']:>8,} failed  {acc:8.4f}%")
    if "exhaustive" in report:
        lines.append("  " + report["exhaustive"])
    return "\n".join(lines)
