"""Compare two behaviour (or two maths) files: which useful nodes they share and how far their tags agree.

A node is (position, layer, is_head, num), labelled as the quanta maps name it: `P9L0H1` (head 1) or
`P9L0MLP` (the MLP). For the shared nodes, the tags are grouped by their major part (the text before ':',
e.g. `Impact`, `Math.Add`, `Algo`); per group, `nodes` = shared nodes where either file has a tag of the group,
`agree` = those where the two files agree. Numbers agree within a stated tolerance, the rest exactly:
- `Fail%`: the two values within `fail_tol` percentage points (default 2);
- `Attn`: every attended position within `attn_tol` points (default 5), a position one file does not list
  counting as 0% there;
- every other group: the same set of tags.
Files of models with different digit counts are refused: their positions mean different things.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from analysis.behavior import load_records

NodeKey = tuple[int, int, bool, int]
DEFAULT_FAIL_TOL = 2.0  # percentage points
DEFAULT_ATTN_TOL = 5.0  # percentage points, per attended position


def node_key(record: dict) -> NodeKey:
    return (record["position"], record["layer"], record["is_head"], record["num"])


def node_label(key: NodeKey) -> str:
    """`P9L0H1` / `P9L0MLP`: the quanta maps' row name (analysis.ablate.Node.name) after the position."""
    from analysis.ablate import Node

    position, layer, is_head, num = key
    return Node(position, layer, not is_head, num).name(width=1)


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
    fail_tol: float = DEFAULT_FAIL_TOL
    attn_tol: float = DEFAULT_ATTN_TOL

    @property
    def jaccard(self) -> float | None:
        union = len(self.shared) + len(self.only_a) + len(self.only_b)
        return len(self.shared) / union if union else None

    @property
    def rule(self) -> str:
        return (
            f"Fail% within {self.fail_tol:g} percentage points, Attn within {self.attn_tol:g} points per attended "
            "position (one a file does not list: 0%), other tags exactly"
        )

    def to_dict(self) -> dict:
        return {
            "shared": [node_label(k) for k in self.shared],
            "only_a": [node_label(k) for k in self.only_a],
            "only_b": [node_label(k) for k in self.only_b],
            "jaccard": self.jaccard,
            "tolerance": {"Fail%": self.fail_tol, "Attn": self.attn_tol, "rule": self.rule},
            "tags": {t.major: {"nodes": t.nodes, "agree": t.agree, "agreement": t.agreement} for t in self.tags},
        }


def _by_major(tags: list[str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for tag in tags:
        out.setdefault(tag.split(":", 1)[0], set()).add(tag)
    return out


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _fail(tags: set[str]) -> float | None:
    values = [_number(t.split(":", 1)[1]) for t in tags]
    return values[0] if len(values) == 1 else None


def _attention(tags: set[str]) -> dict[str, float] | None:
    out = {}
    for t in tags:
        key, _, pct = t.split(":", 1)[1].partition("=")
        if (value := _number(pct)) is None:
            return None
        out[key] = value
    return out


def tags_agree(major: str, a: set[str] | None, b: set[str] | None, fail_tol: float, attn_tol: float) -> bool:
    """Whether two files' tags of one group on one node agree (the module docstring's rules)."""
    if a is None or b is None:
        return a == b
    if major == "Fail%":
        fa, fb = _fail(a), _fail(b)
        if fa is not None and fb is not None:
            return abs(fa - fb) <= fail_tol
    elif major == "Attn":
        pa, pb = _attention(a), _attention(b)
        if pa is not None and pb is not None:
            return all(abs(pa.get(k, 0.0) - pb.get(k, 0.0)) <= attn_tol for k in {*pa, *pb})
    return a == b  # a malformed number: only the same text agrees


def compare_records(
    a: list[dict], b: list[dict], fail_tol: float = DEFAULT_FAIL_TOL, attn_tol: float = DEFAULT_ATTN_TOL
) -> Comparison:
    ta = {node_key(r): _by_major(r["tags"]) for r in a}
    tb = {node_key(r): _by_major(r["tags"]) for r in b}
    shared = tuple(sorted(set(ta) & set(tb)))
    majors = sorted({m for k in shared for m in (*ta[k], *tb[k])})
    tags = []
    for major in majors:
        with_tag = [k for k in shared if major in ta[k] or major in tb[k]]
        agree = sum(tags_agree(major, ta[k].get(major), tb[k].get(major), fail_tol, attn_tol) for k in with_tag)
        tags.append(TagAgreement(major, len(with_tag), agree))
    only_a, only_b = tuple(sorted(set(ta) - set(tb))), tuple(sorted(set(tb) - set(ta)))
    return Comparison(shared, only_a, only_b, tuple(tags), fail_tol, attn_tol)


def file_kind(records: list[dict]) -> str | None:
    """ "behaviour" (its nodes carry Fail% tags), "maths" (nodes, none with a Fail% tag) or None (no nodes)."""
    if not records:
        return None
    return "behaviour" if any(t.startswith("Fail%:") for r in records for t in r["tags"]) else "maths"


def model_of_file(path: str | Path) -> str | None:
    """The model a behaviour or maths file belongs to: its sidecar's `model`, else its file name
    (`<name>_behavior.json`, `<name>_maths.json`) when that is a model name; None when neither says."""

    from analysis.behavior import read_sidecar
    from arith.errors import InputError
    from arith.names import ARTIFACT_SUFFIXES, parse_name

    path = Path(path)
    model = read_sidecar(path).get("model")
    candidates = [model] if isinstance(model, str) else []
    candidates += [
        path.name.removesuffix(ARTIFACT_SUFFIXES[k])
        for k in ("behavior", "maths")
        if path.name.endswith(ARTIFACT_SUFFIXES[k])
    ]
    for text in candidates:
        try:
            return parse_name(text).format()
        except InputError:
            continue
    return None


def digits_of_file(path: str | Path) -> int | None:
    from arith.names import parse_name

    model = model_of_file(path)
    return parse_name(model).n_digits if model else None


def compare_files(
    a: str | Path, b: str | Path, fail_tol: float = DEFAULT_FAIL_TOL, attn_tol: float = DEFAULT_ATTN_TOL
) -> Comparison:
    """Two behaviour files or two maths files of models with the same digit count (InputError for one of each,
    or for two digit counts: their tags never agree, their positions mean different things)."""
    from arith.errors import InputError, clip

    for flag, value in (("--fail-tol", fail_tol), ("--attn-tol", attn_tol)):
        if not value >= 0:  # NaN too
            raise InputError(f"{flag} must be a number of percentage points >= 0, not {value}")
    ra, rb = load_records(a), load_records(b)
    ka, kb = file_kind(ra), file_kind(rb)
    if ka and kb and ka != kb:
        raise InputError(
            f"{clip(a)} is a {ka} file and {clip(b)} a {kb} file; compare two behaviour or two maths files"
        )
    da, db = digits_of_file(a), digits_of_file(b)
    if da is not None and db is not None and da != db:
        raise InputError(
            f"{clip(a)} is of a {da}-digit model and {clip(b)} of a {db}-digit one: their positions mean "
            "different things; compare files of models with the same digit count"
        )
    return compare_records(ra, rb, fail_tol, attn_tol)


def stale_warnings(*paths: str | Path) -> list[str]:
    """A line for each maths file among `paths` older than the behaviour file beside it (analysis.behavior's
    staleness rule): its tags were searched on an earlier behaviour file."""
    from analysis.behavior import behavior_of_maths, stale_files

    out = []
    for p in dict.fromkeys(str(p) for p in paths):
        behavior = behavior_of_maths(p)
        if behavior is not None and stale_files(behavior, [Path(p)]):
            out.append(
                f"{p} is older than {behavior}, the behaviour file it was made from (stale): its tags may not be "
                "those of the nodes now; run varith algo on the model's weights to remake it"
            )
    return out


def format_comparison(c: Comparison, a: str, b: str) -> str:
    jac = "-" if c.jaccard is None else f"{c.jaccard:.3f}"
    lines = [
        f"A: {a}",
        f"B: {b}",
        f"shared useful nodes: {len(c.shared)} (Jaccard {jac}); only in A: {len(c.only_a)}; only in B: {len(c.only_b)}",
        f"agreement on the shared nodes ({c.rule}):",
    ]
    for t in c.tags:
        pct = "-" if t.agreement is None else f"{100 * t.agreement:.1f}%"
        lines.append(f"  {t.major:<10} agree on {t.agree}/{t.nodes} shared nodes ({pct})")
    lines.append("only in A: " + (" ".join(node_label(k) for k in c.only_a) or "-"))
    lines.append("only in B: " + (" ".join(node_label(k) for k in c.only_b) or "-"))
    return "\n".join(lines)
