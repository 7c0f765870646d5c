"""Reduce summed verification counts into `<name>_accuracy.json`.

The file holds one report per suite, keyed by the suite's name, so an exhaustive run, a random run and the
curated suites of one model live side by side; writing one suite's report keeps the others (read, modify,
write atomically, under a lock on the folder):

    {
      "exhaustive": {report of the last exhaustive run},
      "random":     {report of the last random run},
      "handpicked": {...},
      "generated":  {...},
      "tricase":    {...}
    }

A report (`accuracy_report`) has `model`, `suite` (the suite's settings; `suite.suite` is the key above),
`tested`, `failed`, `accuracy`, `by_operation`, `by_class`, `wrong_answer_positions`, `failures` (up to 100
failing questions), `scoring` (what fast scoring took: `rechecked` questions re-scored in fp32 and the
`logit_error_bound` used, arith.scoring; both 0 for the plain forward; the `precision` it scored in, the
`requested` one and the `reason` for the choice (`--precision auto` falls back to fp32 where bf16 would not pay,
arith.verify.choose_precision), when the run made one; the verdicts do not depend on any of them, so comparisons
of runs at different precisions drop this one field) and the caller's extras (`weights_sha256`, `mode`). A
failing example's `predicted` is the model's greedy answer, what `varith predict` prints for that question
(its verdict is teacher-forced, as the reference's). Sampled suites give each operation and
complexity class an exact one-sided 95% upper bound on the failure rate (`failure_rate_upper_95`), random
suites the reference's "nines" verdict per operation. An exhaustive suite checked every question, so it states
the exact `failure_rate` (no bound) and the sentence "every one of the N ... questions was checked"; counts
that do not cover the whole space (10^(2n) per operation) are refused rather than reported. A file in the
older layout (one report at the top level) is kept under its suite's key on the next write. A file that is not
an accuracy file (not JSON, another layout, a folder or device, over 64 MiB) is never replaced nor read whole:
the write is refused with one line and the file left as it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path

import numpy as np

from arith import complexity
from arith.errors import InputError, clip, plural
from arith.files import atomic_write_json
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
# question-class rows (ADD, SUB, NEG, MUL) per operation (ADD, SUB, MUL)
OP_ROWS = {0: [0], 1: [1, 2], 2: [3]}
SUITE_KEYS = ("exhaustive", "random", "handpicked", "generated", "tricase")
NINES = ((1, "six 9s"), (10, "five 9s"), (100, "four 9s"), (1000, "three 9s"), (10000, "two 9s"))


def nines_verdict(tested: int, failed: int) -> str | None:
    """The reference's verdict (docs/reference_facts.md F6.2), defined for exactly 1,000,000 questions of one
    operation."""
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


def exhaustive_space(suite: ExhaustiveSuite) -> int:
    """Questions of one operation in an exhaustive suite: every operand pair, 10^(2n)."""
    return 10 ** (2 * suite.n_digits)


def _check_exhaustive(counts: BlockCounts, suite: ExhaustiveSuite) -> None:
    space = exhaustive_space(suite)
    for op in suite.ops:
        tested = int(counts.tested[OP_ROWS[op]].sum())
        if tested != space:
            raise InputError(
                f"exhaustive counts cover {tested:,} of the {space:,} {OP_CHAR[op]} questions: "
                "no verdict from an incomplete run"
            )
    others = [r for r in range(counts.tested.shape[0]) if all(r not in OP_ROWS[op] for op in suite.ops)]
    if others and int(counts.tested[others].sum()):
        raise InputError("exhaustive counts hold questions of operations the suite does not test")


def accuracy_report(counts: BlockCounts, suite: Suite, model_name: str, extra: dict | None = None) -> dict:
    """One suite's report in `<name>_accuracy.json` (module docstring)."""
    exhaustive = isinstance(suite, ExhaustiveSuite)
    if exhaustive:
        _check_exhaustive(counts, suite)  # never report from a hole

    def rates(tested: int, failed: int) -> dict:
        if exhaustive:  # every question was checked: the rate itself, no bound
            return {"failure_rate": failed / tested}
        return {"failure_rate_upper_95": binomial_upper_bound(tested, failed)}

    layout = Layout(suite.n_digits)
    by_class: dict[str, dict] = {}
    by_op: dict[str, dict] = {}
    for qi, qname in enumerate(QCLASS_NAMES):
        tested, failed = int(counts.tested[qi].sum()), int(counts.failed[qi].sum())
        if tested == 0:
            continue
        by_op[qname] = {"tested": tested, "failed": failed, "accuracy": 1.0 - failed / tested} | rates(tested, failed)
        by_class[qname] = {
            COLUMN_NAMES[c]: {"tested": int(counts.tested[qi, c]), "failed": int(counts.failed[qi, c])}
            | rates(int(counts.tested[qi, c]), int(counts.failed[qi, c]))
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
        "scoring": {"rechecked": int(counts.rechecked), "logit_error_bound": float(counts.bound)}
        | (counts.choice.as_dict() if counts.choice is not None else {}),
    }
    if isinstance(suite, RandomSuite):
        # the reference tests each operation separately: a verdict per operation (ADD, and SUB+NEG together)
        verdicts = {}
        for op in suite.ops:
            rows = OP_ROWS[op]
            t, f = int(counts.tested[rows].sum()), int(counts.failed[rows].sum())
            verdicts[OP_CHAR[op]] = nines_verdict(t, f)
        report["nines"] = verdicts
    if exhaustive:
        ops = " and ".join({0: "addition", 1: "subtraction", 2: "multiplication"}[o] for o in suite.ops)
        report["failure_rate"] = total_failed / total_tested
        report["exhaustive"] = (
            f"every one of the {exhaustive_space(suite):,} {suite.n_digits}-digit {ops} questions was checked"
        )
    if extra:
        report |= extra
    return report


def suite_key(report: dict) -> str:
    """The key of a report in the accuracy file: its suite's name."""
    return str(report["suite"]["suite"])


def _is_report(obj) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("suite"), dict) and "suite" in obj["suite"]


MAX_ACCURACY_BYTES = 64 << 20  # a real accuracy file is a few hundred kilobytes: anything this big is not ours


def _read_bounded(path: Path) -> str | None:
    """The text of `path`, None when it does not exist; InputError for anything but a regular file of at most
    MAX_ACCURACY_BYTES (a folder, a device such as /dev/full, a fifo: never opened, never read without end)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"accuracy file {path}: unreadable ({exc.strerror or type(exc).__name__})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"accuracy file {path}: is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"accuracy file {path}: not a regular file (a device, fifo or socket)")
    too_big = f"accuracy file {path}: over {MAX_ACCURACY_BYTES >> 20} MiB, not an accuracy file"
    if st.st_size > MAX_ACCURACY_BYTES:
        raise InputError(too_big)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_ACCURACY_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"accuracy file {path}: unreadable ({exc.strerror or type(exc).__name__})") from None
    if len(data) > MAX_ACCURACY_BYTES:  # grew since the stat
        raise InputError(too_big)
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise InputError(f"accuracy file {path}: not an accuracy file (not UTF-8 text)") from None


def read_reports(path: str | Path) -> dict[str, dict]:
    """suite name -> report from an accuracy file ({} when there is none, or it is empty). An old single-report
    file comes back under its suite's key. Anything else raises InputError: a file that is not JSON or not an
    object of reports, a folder, a device or fifo (never opened), a file over MAX_ACCURACY_BYTES (never read)."""
    path = Path(path)
    text = _read_bounded(path)
    if text is None or not text.strip():  # no file, or an empty one: nothing in it to keep
        return {}
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InputError(f"accuracy file {path}: not an accuracy file (not JSON: {clip(exc)})") from None
    if _is_report(data):
        return {suite_key(data): data}
    if not isinstance(data, dict) or not all(_is_report(v) for v in data.values()):
        raise InputError(f"accuracy file {path}: not an accuracy file (not an object of reports keyed by suite)")
    return data


def existing_reports(path: str | Path, hint: str = "move it away") -> dict[str, dict]:
    """The reports a write to `path` keeps (read_reports). Call it before any work: a path that is not an
    accuracy file raises InputError saying it is left as it is, and `hint` (how to go on)."""
    try:
        return read_reports(path)
    except InputError as exc:
        raise InputError(f"{exc}; it is left as it is: {hint}") from None


@contextlib.contextmanager
def _folder_lock(folder: Path):
    """An exclusive flock on the folder itself, so two runs of one model do not lose each other's report."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_report(path: str | Path, report: dict, hint: str = "move it away") -> dict[str, dict]:
    """Put `report` under its suite's key in the accuracy file, keeping the other suites' reports; atomic.

    An existing file that is not an accuracy file (read_reports) is never replaced: InputError naming it and
    `hint`, the file left as it is. Returns what the file now holds.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _folder_lock(path.parent):
        reports = existing_reports(path, hint)
        reports[suite_key(report)] = report
        ordered = {k: reports[k] for k in SUITE_KEYS if k in reports} | {
            k: v for k, v in reports.items() if k not in SUITE_KEYS
        }
        atomic_write_json(path, ordered, indent=1)
    return ordered


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
    scoring = report.get("scoring") or {}
    if scoring.get("precision"):
        lines.append(f"  scored in {scoring['precision']} ({scoring.get('reason', '')})")
    if scoring.get("logit_error_bound"):
        lines.append(
            f"  fast scoring: {plural(scoring['rechecked'], 'question')} re-scored by the plain fp32 forward "
            f"(logit error bound {scoring['logit_error_bound']:.2g}); the verdicts are the plain fp32 forward's"
        )
    return "\n".join(lines)
