"""The algorithm sub-tasks of docs/reference_facts.md F8.3 as data: questions, expected answers, tags and node filters.

Pure (no torch, no I/O). A task names, for n digits and an impact digit d, its tag text (`A5.SA`), the
operator of its questions, its intervention tests (store question, clean question, what passes) and the filter a
useful node's behaviour tags must pass to be a candidate at a position (F8.3 prerequisites, F8.4 filter semantics).

Positions (F2.2): D_k -> P(n-1-k), D'_k -> P(2n-k), the operator -> P(n), the answer sign -> P(2n+2), the
first answer digit -> P(2n+3), answer digit A_k -> P(3n+3-k).

Filters come in two modes. The default is what the reference meant: attention of at least 10% to the named
position (from the `Attn:P{k}={pct}` tags) and an `Impact` tag naming the digit (read by analysis/impact.py, which
takes both its grammar, `A[13]5`, and the reference's strings). `compat` is what its code does (F8.4): an `Attn`
tag whose text contains `P{k}` (so P1 matches P10..P19) and an `Impact` tag containing `A{d}` as a substring
(only the highest impacted digit matches, digits being sorted descending; a bracketed tag: its highest digit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from analysis.impact import NO_IMPACT as NO_IMPACT  # re-exported: analysis.algo reads at.NO_IMPACT
from analysis.impact import PREFIX as IMPACT_PREFIX
from analysis.impact import names_digit
from arith.vocab import ADD, SUB

MIN_ATTN_PERCENT = 10.0  # FilterAttention's intended threshold

# test rules: what a test's intervened answer must satisfy
EXACT = "exact"  # answer == expected and impact == expected impact (run_strong_intervention)
CHANGED = "changed"  # answer != the clean answer (run_weak_intervention)
SIGN = "sign"  # the answer's sign character is the expected one (GT)

_ATTN = re.compile(r"Attn:P(\d+)=(\d+(?:\.\d*)?)")


def rep(digit: int, n: int) -> int:
    """The digit repeated n times: rep(2, 6) = 222222."""
    return int(str(digit) * n)


@dataclass(frozen=True)
class Test:
    """One intervention: patch the store question's head outputs into the clean question's run."""

    store: tuple[int, int]
    clean: tuple[int, int]
    rule: str
    expected: int | None = None  # EXACT: the answer expected after the intervention
    impact: str | None = None  # EXACT: the expected impact, e.g. "A4"
    sign: str | None = None  # SIGN: "+" or "-"


@dataclass(frozen=True)
class Filter:
    """A node filter on behaviour tags: a head at `position` (checked by the caller), within [min_pos, max_pos],
    attending every position in `attends`, with an impact on `impact` (a digit) and a `math` tag when given."""

    attends: tuple[int, ...] = ()
    impact: int | None = None
    min_pos: int | None = None
    max_pos: int | None = None
    math: str | None = None  # "Math.Add" (containing "S") or "Math.Sub" (containing "M")

    def matches(self, record: dict, compat: bool) -> bool:
        if not record["is_head"]:
            return False
        pos = record["position"]
        if (self.min_pos is not None and pos < self.min_pos) or (self.max_pos is not None and pos > self.max_pos):
            return False
        tags = record["tags"]
        if not all(attends(tags, p, compat) for p in self.attends):
            return False
        if self.impact is not None and not impacts(tags, self.impact, compat):
            return False
        if self.math is not None:
            letter = "S" if self.math == "Math.Add" else "M"
            return any(t.startswith(self.math + ":") and letter in t for t in tags)
        return True


def attends(tags: list[str], position: int, compat: bool) -> bool:
    """Does the node attend to `position`? compat: some Attn tag's text contains `P{position}` (F8.4)."""
    if compat:
        return any(t.startswith("Attn:") and f"P{position}" in t for t in tags)
    for t in tags:
        m = _ATTN.fullmatch(t)
        if m and int(m.group(1)) == position and float(m.group(2)) >= MIN_ATTN_PERCENT:
            return True
    return False


def impacts(tags: list[str], digit: int, compat: bool) -> bool:
    """Does the node's Impact tag name answer digit `digit` (analysis.impact.names_digit)? Default: the digit is
    one the tag names (`Impact:A[13]5` names 13 and 5). compat: `A{digit}` is a substring of the tag."""
    return any(t.startswith(IMPACT_PREFIX) and names_digit(t, digit, compat) for t in tags)


@dataclass(frozen=True)
class Task:
    """One sub-task (F8.3). The strong pass needs every test to pass its rule. `weak`: the task has a weak pass
    whose rule differs (SA, MD, ND: every test's impact is the expected one). The other tasks allowing an impact
    mismatch (ST, MB, NB, GT) re-run the strong test in the weak pass, which cannot tag what the strong pass
    did not, so they have none here. `pairs`: same-layer head pairs are tried where no single node passed."""

    code: str
    op: int
    pairs: bool = False
    weak: bool = False  # allow_impact_mismatch with a weak rule that differs from the strong one
    intervenes: bool = True  # OPR and SGN pass without an intervention

    def tag(self, d: int) -> str:
        if self.code in ("OPR", "SGN"):
            return self.code
        shown = d - 1 if self.code in ("SC", "SS", "MB", "NB") else d
        return f"A{shown}.{self.code}"

    def digits(self, n: int) -> range:
        """The impact digits whose filters can match at all (the attended digits exist)."""
        if self.code in ("SC", "MB", "NB"):
            return range(1, n + 1)
        if self.code == "SS":
            return range(2, n + 1)
        if self.code in ("OPR", "SGN"):
            return range(0, 1)  # the same search for every digit: done once
        return range(0, n)

    def filter(self, n: int, d: int) -> Filter:
        late = 2 * n + 3  # the first answer-digit position: "after the +/- token" in the reference

        def both(a: int) -> tuple[int, int]:
            return (n - 1 - a, 2 * n - a)

        c = self.code
        if c in ("SA", "MD", "ND"):
            return Filter(both(d), impact=d, min_pos=late)
        if c in ("SC", "MB", "NB"):
            return Filter(both(d - 1), impact=d, min_pos=late)
        if c == "SS":
            return Filter(both(d - 2), impact=d, min_pos=late)
        if c in ("ST", "MT"):
            return Filter(both(d), min_pos=n, max_pos=2 * n + 2, math="Math.Add" if c == "ST" else "Math.Sub")
        if c == "GT":
            return Filter(both(d))
        if c == "OPR":
            return Filter((n,))
        if c == "SGN":
            return Filter((2 * n + 2,))
        raise ValueError(c)

    def tests(self, n: int, d: int) -> tuple[Test, ...]:
        """The intervention tests for impact (or focus) digit d (F8.3)."""
        L = 10**d
        r = lambda k: rep(k, n)  # noqa: E731
        imp = f"A{d}"
        c = self.code
        if c == "SA":
            c1, c2 = (r(5), r(4)), (r(5), r(1))
            return (
                Test((r(2), r(1)), c1, EXACT, sum(c1) + (3 - 9) * L, imp),
                Test((r(2), r(6)), c2, EXACT, sum(c2) + (8 - 6) * L, imp),
            )
        if c == "SC":
            clean = (r(3), r(5))
            return (Test((r(2), r(6) + 3 * 10 ** (d - 1)), clean, EXACT, sum(clean) + L, imp),)
        if c == "SS":
            store = (r(2) + 3 * 10 ** (d - 1), r(4))
            clean = (r(3) + 10 ** (d - 1) + 3 * 10 ** (d - 2), r(5))
            return (Test(store, clean, EXACT, sum(clean) - L, imp),)
        if c == "ST":
            return (Test((r(2), r(7) + 2 * L), (r(3), r(6)), CHANGED),)
        if c == "MD":
            c1, c2 = (r(9), r(4)), (r(9), r(3))
            return (
                Test((r(3), r(1)), c1, EXACT, c1[0] - c1[1] + (2 - 5) * L, imp),
                Test((r(6), r(2)), c2, EXACT, c2[0] - c2[1] + (4 - 6) * L, imp),
            )
        if c == "MB":
            clean = (r(7), r(4))
            return (Test((r(2), r(1) + 2 * 10 ** (d - 1)), clean, EXACT, clean[0] - clean[1] - L, imp),)
        if c == "MT":
            return (Test((r(5), 0), (r(2), r(2) + 2 * L), CHANGED),)
        if c == "ND":
            top = 10 ** (n - 1)
            c1, c2 = (r(9) - 9 * top, r(4)), (r(9) - 9 * top, r(3))
            return (
                Test((r(3) - 3 * top, r(1)), c1, EXACT, c1[0] - c1[1] - 3 * L, imp),
                Test((r(6) - 6 * top, r(2)), c2, EXACT, c2[0] - c2[1] - 2 * L, imp),
            )
        if c == "NB":
            top = 10 ** (n - 1)
            clean = (r(7) - 7 * top, r(4))
            store = (r(2) - 2 * top, r(1) + 2 * 10 ** (d - 1))
            return (Test(store, clean, EXACT, clean[0] - clean[1] - L, imp),)
        if c == "GT":
            sub, neg = (6 * L, 2 * L + 1), (1 * L, 2 * L + 1)
            return (Test(sub, neg, SIGN, sign="+"), Test(neg, sub, SIGN, sign="-"))
        return ()


SS = Task("SS", ADD)
SC = Task("SC", ADD)
SA = Task("SA", ADD, pairs=True, weak=True)
ST = Task("ST", ADD, pairs=True)
MD = Task("MD", SUB, pairs=True, weak=True)
MB = Task("MB", SUB)
MT = Task("MT", SUB, pairs=True)
OPR = Task("OPR", ADD, intervenes=False)
SGN = Task("SGN", ADD, intervenes=False)
ND = Task("ND", SUB, pairs=True, weak=True)
NB = Task("NB", SUB)
GT = Task("GT", SUB)
ALL = (SS, SC, SA, ST, MD, MB, MT, OPR, SGN, ND, NB, GT)
BY_CODE = {t.code: t for t in ALL}


def notebook_order(ops: tuple[int, ...]) -> tuple[Task, ...]:
    """The tasks in the order the Algorithm notebook searches them (F8.3): addition tasks always; the
    subtraction ones when the model was trained on subtraction; OPR only for a mixed model."""
    has_add, has_sub = ADD in ops, SUB in ops
    out = [SS, SC, SA, ST]
    if has_sub:
        out += [MD, MB, MT]
    if has_add and has_sub:
        out.append(OPR)
    if has_sub:
        out += [SGN, ND, NB, GT]
    return tuple(out)


def answer_string(value: int, n: int) -> str:
    """The reference's int_to_answer_str: sign then |value| in n+1 digits (`+0315600`)."""
    return ("+" if value >= 0 else "-") + str(abs(value)).rjust(n + 1, "0")
