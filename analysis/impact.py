"""The `Impact:` tag's grammar: which answer digits a node's ablation (or an intervention) changes.

A node's impact is the set of answer positions that went wrong in some failed question (docs/reference_facts.md
F7 step 6). Answer digit A_k is the answer's k-th digit from the units (A0 .. An); the sign is A(n+1), except in
an addition-only model, where the sign position is named `+` and adds no digit (a sign-only impact is `Impact:A`).

Default grammar (correct for any digit count):

    tag    := "Impact:A" item*          items: the impacted digits, distinct, largest first
    item   := digit                     for a digit 0..9, one character:          A7, A5, A0
            | "[" digit digit+ "]"      for a digit 10 or more, in square brackets: A[13], A[10], A[21]

    Impact:A765          A7, A6 and A5 (the reference's string: every model up to 8 digits, whose sign is A9 at
                         most, gets exactly the reference's tags)
    Impact:A[13][11]5    A13, A11 and A5
    Impact:A[10]         A10 alone (the reference's `A10` would read as A1 and A0)
    Impact:A             only the sign of an addition-only model

Every string has one reading: a bare character is one digit and a bracket holds one number, so `A[10]` (A10) and
`A10` (A1 and A0) differ, and so do `A[21]` and `A21`.

Compat grammar (`compat=True`, what the reference writes, F7 step 6 and upstream spec 14.3): the meanings of the
changed positions joined (`A13A11A5`), every character that is a digit kept once, sorted descending: `A531`. For
answer digits A10 and above this is wrong (A13 alone gives `A31`, A11 alone `A1`); for digits up to 9 both grammars
give the same string.

The impact of an intervention (the suffix of a weak Algo tag, `A5.ND.A5`) follows the same rules
(`intervention_impact`), except that the reference keeps a pure-addition model's changed sign as a trailing `+`.

`parse_impact` reads both: bracketed items are one digit each, bare characters one digit each, so a compat string
reads as what it literally says (`A31` -> A3 and A1). Pure: no torch, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

from arith.errors import InputError, clip
from arith.vocab import Layout

MAJOR = "Impact"
NO_IMPACT = "(none)"  # an intervention that changed nothing
PREFIX = "Impact:"
_ITEMS = re.compile(r"(?:\[(?:[1-9]\d+)\]|\d)*")
_ITEM = re.compile(r"\[(\d+)\]|(\d)")


def impacted_digits(hit: np.ndarray, layout: Layout, pure_add: bool) -> list[int]:
    """The answer digits of a row of answer positions [n+2] (sign first), largest first: position i holds digit
    n+1-i; the sign (i = 0) counts only when the model is not addition-only."""
    row = np.asarray(hit, dtype=bool)
    digits = layout.n_digits + 1 - np.flatnonzero(row)
    if pure_add:
        digits = digits[digits <= layout.n_digits]
    return sorted(set(digits.tolist()), reverse=True)


def format_minor(digits: Iterable[int]) -> str:
    """`A` and the digits in the default grammar: [13, 11, 5] -> `A[13][11]5`; [] -> `A`."""
    items = sorted({int(d) for d in digits}, reverse=True)
    if items and items[-1] < 0:
        raise ValueError(f"answer digits are 0 or more, got {items[-1]}")
    return "A" + "".join(str(d) if d < 10 else f"[{d}]" for d in items)


def compat_minor(hit: np.ndarray, layout: Layout, pure_add: bool) -> str:
    """The reference's string: the changed positions' meanings joined, its digit characters distinct and sorted
    descending (`A13` alone -> `A31`)."""
    names = layout.position_meanings(pure_add)[layout.answer_start :]
    joined = "".join(name for name, h in zip(names, np.asarray(hit, dtype=bool), strict=True) if h)
    return "A" + "".join(sorted({c for c in joined if c.isdigit()}, reverse=True))


def impact_minor(hit: np.ndarray, layout: Layout, pure_add: bool, compat: bool = False) -> str:
    """The minor part of the Impact tag of one row of changed answer positions [n+2] (sign first)."""
    if compat:
        return compat_minor(hit, layout, pure_add)
    return format_minor(impacted_digits(hit, layout, pure_add))


def impact_tag(hit: np.ndarray, layout: Layout, pure_add: bool, compat: bool = False) -> str:
    """`Impact:A...` of one row of changed answer positions (see impact_minor)."""
    return PREFIX + impact_minor(hit, layout, pure_add, compat)


def parse_impact(text: str) -> tuple[int, ...]:
    """The digits an Impact tag (`Impact:A[13]5`) or its minor part (`A[13]5`, `A765`, `A`) names, largest first,
    in either grammar (module docstring). InputError for anything else."""
    minor = text[len(PREFIX) :] if text.startswith(PREFIX) else text
    if not minor.startswith("A") or not _ITEMS.fullmatch(minor[1:]):
        raise InputError(f"impact {clip(text)!r}: expected A followed by digits, 10 and above in brackets (A[13]5)")
    digits = {int(m.group(1) or m.group(2)) for m in _ITEM.finditer(minor[1:])}
    return tuple(sorted(digits, reverse=True))


def is_bracketed(text: str) -> bool:
    """Whether a tag uses the default grammar's brackets (so it cannot be a reference-written string)."""
    return "[" in text


def names_digit(text: str, digit: int, compat: bool) -> bool:
    """Does the Impact tag `text` name answer digit `digit`?

    Default: the digit is among those the tag names (parse_impact; a reference-written string reads literally).
    compat, the reference's filter (F8.4): `A{digit}` is a substring of the tag, which for a tag sorted
    descending asks whether its highest digit is `digit`; for a bracketed tag (which the reference never wrote),
    that highest-digit rule is applied to the digits it names."""
    if compat and not is_bracketed(text):
        return f"A{digit}" in text
    try:
        digits = parse_impact(text)
    except InputError:
        return False
    if compat:
        return bool(digits) and digits[0] == digit
    return digit in digits


def intervention_impact(changed: np.ndarray, layout: Layout, pure_add: bool, compat: bool = False) -> str:
    """The impact of an intervention (the suffix of a weak Algo tag, `A5.ND.A5`; F8.1): the reference's
    get_answer_impact, "A" and the changed positions' meanings with "A" dropped, characters sorted descending, so
    a pure-addition model's sign shows as a trailing `+` (`A5+`); `(none)` when nothing changed.

    Default: the digits in this module's grammar (`A[13]5`), then `+` for that sign: the same strings as the
    reference's up to 8 digits. compat: the reference's string for any digit count, repeats kept (`A13` -> `A31`,
    A13 and A11 -> `A3111`)."""
    row = np.asarray(changed, dtype=bool)
    if not row.any():
        return NO_IMPACT
    if compat:
        names = layout.position_meanings(pure_add)[layout.answer_start :]
        joined = "".join(nm for nm, hit in zip(names, row, strict=True) if hit).replace("A", "")
        return "A" + "".join(sorted(joined, reverse=True))
    sign = "+" if pure_add and row[0] else ""
    return format_minor(impacted_digits(row, layout, pure_add)) + sign
