"""Compare two behaviour (or two maths) files: which useful nodes they share and how far their tags agree.

A node is (position, layer, is_head, num), labelled `P9L0H1` (head 1) or `P9L0M0` (the MLP). For the shared
nodes, the tags are grouped by their major part (the text before ':', e.g. `Impact`, `Math.Add`, `Algo`); a
group agrees on a node when both files give that node exactly the same tags of the group. Per group:
`nodes` = shared nodes where either file has a tag of the group, `agree` = those where the two sets are equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from analysis.behavior import load_records

NodeKey = tuple[int, int, bool, int]


def node_key(record: dict) -> NodeKey:
    return (record["position"], record["layer"], record["is_head"], record["num"])


def node_label(key: NodeKey) -> str:
    position, layer, is_head, num = key
    return f"P{position}L{layer}{'H' if is_head else 'M'}{num}"


@dataclass(frozen=True)
class TagAgreement:
    major: str
    nodes: int
    agree: int

    @property
    def agreement(self) -> float | None:
        return self.agree / self.nodes if self.nodes else None


@dataclass(frozen=True)
class Comparison:
    shared: tuple[NodeKey, ...]
    only_a: tuple[NodeKey, ...]
    only_b: tuple[NodeKey, ...]
    tags: tuple[TagAgreement, ...]

    @property
    def jaccard(self) -> float | None:
        union = len(self.shared) + len(self.only_a) + len(self.only_b)
        return len(self.shared) / union if union else None

    def to_dict(self) -> dict:
        return {
            "shared": [node_label(k) for k in self.shared],
            "only_a": [node_label(k) for k in self.only_a],
            "only_b": [node_label(k) for k in self.only_b],
            "jaccard": self.jaccard,
            "tags": {t.major: {"nodes": t.nodes, "agree": t.agree, "agreement": t.agreement} for t in self.tags},
        }


def _by_major(tags: list[str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for tag in tags:
        out.setdefault(tag.split(":", 1)[0], set()).add(tag)
    return out


def compare_records(a: list[dict], b: list[dict]) -> Comparison:
    ta = {node_key(r): _by_major(r["tags"]) for r in a}
    tb = {node_key(r): _by_major(r["tags"]) for r in b}
    shared = tuple(sorted(set(ta) & set(tb)))
    majors = sorted({m for k in shared for m in (*ta[k], *tb[k])})
    tags = []
    for major in majors:
        with_tag = [k for k in shared if major in ta[k] or major in tb[k]]
        agree = sum(ta[k].get(major) == tb[k].get(major) for k in with_tag)
        tags.append(TagAgreement(major, len(with_tag), agree))
    return Comparison(shared, tuple(sorted(set(ta) - set(tb))), tuple(sorted(set(tb) - set(ta))), tuple(tags))


def file_kind(records: list[dict]) -> str | None:
    """ "behaviour" (its nodes carry Fail% tags), "maths" (nodes, none with a Fail% tag) or None (no nodes)."""
    if not records:
        return None
    return "behaviour" if any(t.startswith("Fail%:") for r in records for t in r["tags"]) else "maths"


def compare_files(a: str | Path, b: str | Path) -> Comparison:
    """Two behaviour files or two maths files (InputError for one of each: their tags never agree)."""
    from arith.errors import InputError, clip

    ra, rb = load_records(a), load_records(b)
    ka, kb = file_kind(ra), file_kind(rb)
    if ka and kb and ka != kb:
        raise InputError(
            f"{clip(a)} is a {ka} file and {clip(b)} a {kb} file; compare two behaviour or two maths files"
        )
    return compare_records(ra, rb)


def format_comparison(c: Comparison, a: str, b: str) -> str:
    jac = "-" if c.jaccard is None else f"{c.jaccard:.3f}"
    lines = [
        f"A: {a}",
        f"B: {b}",
        f"shared useful nodes: {len(c.shared)} (Jaccard {jac}); only in A: {len(c.only_a)}; only in B: {len(c.only_b)}",
    ]
    for t in c.tags:
        pct = "-" if t.agreement is None else f"{100 * t.agreement:.1f}%"
        lines.append(f"  {t.major:<10} agree on {t.agree}/{t.nodes} shared nodes ({pct})")
    lines.append("only in A: " + (" ".join(node_label(k) for k in c.only_a) or "-"))
    lines.append("only in B: " + (" ".join(node_label(k) for k in c.only_b) or "-"))
    return "\n".join(lines)
