"""Behaviour tags of useful nodes (docs/reference_facts.md F7 steps 6-8, F7.1), from ablation results held as arrays.

Everything is a pure function of arrays (whole node x question grids), so `<name>_behavior.json` can be rebuilt
from the Zarr store without a forward pass:

- `Fail%:{int(100 * failures / questions)}` (floored: `Fail%:0` means some failures, under 1%).
- `Impact:A{digits}`: the answer digits any failed question got wrong (the sign is A{n+1}, or `+` in a
  pure-addition model, which adds no digit), distinct, largest first (`Impact:A765`; a sign-only impact in an
  addition model is `Impact:A`). Digits 10 and above are bracketed (`Impact:A[13][11]5`), a grammar that stays
  unambiguous for any digit count; with `compat` the reference's character-sorted string (`A13` -> `Impact:A31`).
  The grammar, and the parser that reads both: analysis/impact.py.
- `Math.Add:S{digits}` / `Math.Sub:M{digits}` / `Math.Neg:N{digits}`: the complexity classes of the failed
  questions per family, distinct digits ascending (`M4+` counts as 4); a family only when it had failures.
- `Attn:P{key}={percent:.0f}`: the head's attention row at its position, averaged over the questions; the top
  four keys with at least 1% of the row, largest first.
A node is useful when its ablation fails at least one question. Records are sorted by node (position, layer,
heads before the MLP).
"""

from __future__ import annotations

import numpy as np

from analysis.ablate import Node
from analysis.impact import impact_tag
from arith import complexity
from arith.vocab import Layout

MAX_ATTN_TAGS = 4
MIN_ATTN_PERCENT = 1.0
_FAMILIES = (
    ("Math.Add", "S", complexity.S_BASE, complexity.S_TOP),
    ("Math.Sub", "M", complexity.M_BASE, complexity.M_TOP),
    ("Math.Neg", "N", complexity.N_BASE, complexity.N_TOP),
)


def fail_tag(failures: int, questions: int) -> str:
    return f"Fail%:{int(100 * failures / questions)}"


def impact_tags(wrong_any: np.ndarray, layout: Layout, pure_add: bool, compat: bool = False) -> list[str]:
    """`wrong_any` [N, n+2]: per node, was each answer position wrong in some failed question. The default
    grammar, or with `compat` the reference's strings (analysis/impact.py; the same up to 8 digits)."""
    return [impact_tag(row, layout, pure_add, compat) for row in np.asarray(wrong_any, dtype=bool)]


def math_tags(class_hit: np.ndarray) -> list[list[str]]:
    """`class_hit` [N, N_CLASSES] bool: per node, did a failed question have each complexity class."""
    out = []
    for row in np.asarray(class_hit, dtype=bool):
        tags = []
        for major, letter, lo, hi in _FAMILIES:
            digits = sorted({complexity.CLASSES[c][1] for c in range(lo, hi + 1) if row[c]})
            if digits:
                tags.append(f"{major}:{letter}{''.join(digits)}")
        out.append(tags)
    return out


def attention_tags(row: np.ndarray) -> list[str]:
    """One attention row (weights over keys, averaged over questions): the top keys as `Attn:P{k}={pct}`."""
    row = np.asarray(row, dtype=np.float64)
    total = row.sum()
    if total <= 0:
        return []
    order = np.argsort(-row, kind="stable")[:MAX_ATTN_TAGS]
    tags = []
    for key in order:
        percent = row[key] / total * 100.0
        if percent >= MIN_ATTN_PERCENT:
            tags.append(f"Attn:P{int(key)}={percent:.0f}")
    return tags


def node_summaries(
    failed: np.ndarray, wrong: np.ndarray, codes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From failed [N, Q] bool, wrong [N, Q, n+2] bool and the questions' class codes [Q]: failures per node
    [N], answer positions wrong in some failed question [N, n+2], classes among the failed questions [N, C]."""
    failed = np.asarray(failed, dtype=bool)
    n_fail = failed.sum(axis=1)
    wrong_any = (np.asarray(wrong, dtype=bool) & failed[:, :, None]).any(axis=1)
    onehot = np.zeros((len(codes), complexity.N_CLASSES), dtype=np.int64)
    known = codes >= 0
    onehot[np.flatnonzero(known), codes[known]] = 1
    class_hit = (failed.astype(np.int64) @ onehot) > 0
    return n_fail, wrong_any, class_hit


def behavior_records(
    nodes: list[Node],
    failed: np.ndarray,
    wrong: np.ndarray,
    codes: np.ndarray,
    attention: np.ndarray,
    layout: Layout,
    pure_add: bool,
    compat: bool = False,
) -> list[dict]:
    """The `<name>_behavior.json` records: the useful nodes (some failure) with their tags, sorted.

    `attention` [layers, heads, P, P]: attention patterns averaged over the questions. `compat`: the reference's
    Impact strings (wrong for answer digits A10 and above; analysis/impact.py)."""
    n_questions = failed.shape[1]
    if n_questions == 0:
        return []
    n_fail, wrong_any, class_hit = node_summaries(failed, wrong, codes)
    impact = impact_tags(wrong_any, layout, pure_add, compat)
    maths = math_tags(class_hit)
    records = []
    for i in sorted(range(len(nodes)), key=lambda i: nodes[i]):
        if n_fail[i] == 0:
            continue
        node = nodes[i]
        tags = [fail_tag(int(n_fail[i]), n_questions), impact[i], *maths[i]]
        if node.is_head:
            tags += attention_tags(attention[node.layer, node.num, node.position])
        records.append(node.record(tags))
    return records


MAJOR_TAGS = (
    ("Fail%", "Impact", "Attn", "Algo", "Math.Add", "Math.Sub", "Math.Neg", "PCA")
    + ("Posn", "ACDC", "Math", "Math.Mul", "Unknown")  # reserved by the reference
    + tuple(f"{kind}.{i}" for kind in ("Logic", "Spare") for i in range(1, 5))
)


def load_records(path) -> list[dict]:
    """A behaviour or maths file read back, checked against the schema of docs/reference_facts.md F7.1 (InputError with
    the first problem): a JSON array of {position, layer, is_head, num, tags} with one ':' per tag."""
    import json
    from pathlib import Path

    from arith.errors import InputError

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"behaviour file {path}: unreadable ({type(exc).__name__})") from None
    if not isinstance(data, list):
        raise InputError(f"behaviour file {path}: expected a JSON array of nodes")
    keys = {"position", "layer", "is_head", "num", "tags"}
    for i, rec in enumerate(data):
        if not isinstance(rec, dict) or set(rec) != keys:
            raise InputError(f"behaviour file {path}: node {i} does not have exactly the keys {sorted(keys)}")
        ints = (rec["position"], rec["layer"], rec["num"])
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints):
            raise InputError(f"behaviour file {path}: node {i} has a position, layer or num that is not a count")
        if not isinstance(rec["is_head"], bool) or not isinstance(rec["tags"], list):
            raise InputError(f"behaviour file {path}: node {i} has a bad is_head or tags")
        for tag in rec["tags"]:
            if not isinstance(tag, str) or tag.count(":") != 1 or tag.split(":")[0] not in MAJOR_TAGS:
                raise InputError(f"behaviour file {path}: node {i} has a malformed tag {tag!r}")
    return data


def read_sidecar(behavior) -> dict:
    """What a behaviour file's sidecar (`<name>_behavior.meta.json`, arith.names.sidecar_path) records: model,
    mode, weights_sha256, questions, ...; {} when there is none or it is unreadable (a published behaviour file
    has none). The one reader of the sidecar; `write_sidecar` is its writer."""
    import json

    from arith.names import sidecar_path

    try:
        meta = json.loads(sidecar_path(behavior).read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def write_sidecar(behavior, meta: dict):
    """Write the behaviour file's sidecar (atomically); returns its path."""
    from arith.files import atomic_write_json
    from arith.names import sidecar_path

    path = sidecar_path(behavior)
    atomic_write_json(path, meta, indent=1)
    return path


def check_nodes_fit(records: list[dict], path, n_layers: int, n_heads: int, n_ctx: int) -> None:
    """InputError naming the first node that the model's shape has no place for (a position past the context, a
    layer or head it lacks, an MLP with num other than 0)."""
    from arith.errors import InputError

    for i, r in enumerate(records):
        p, layer, num = r["position"], r["layer"], r["num"]
        if p >= n_ctx or layer >= n_layers or num >= (n_heads if r["is_head"] else 1):
            label = Node(p, layer, not r["is_head"], num).name(width=1) + ("" if r["is_head"] else f" num {num}")
            raise InputError(
                f"behaviour file {path}: node {i} ({label}) is not in this model ({n_layers} layers, {n_heads} "
                f"heads, {n_ctx} positions); was it made for other weights? rerun varith ablate"
            )


# ------------------------------------------------------------------------------------------------ output files

KEEP_OUT = "move it away or remove it"
MAX_RECORDS_BYTES = 64 << 20  # a behaviour or maths file is a few hundred kilobytes: anything this big is not one


def require_output_file(path, what: str, records: bool = False, hint: str = KEEP_OUT) -> None:
    """Before any work: refuse (InputError, one line; the path is left as it is) an output path that the write
    at the end could not replace, or must not: a folder, a device, fifo or socket, and with `records` an
    existing file that is not a behaviour or maths file (load_records). Absent, or a file we may replace: None."""
    import stat
    from pathlib import Path

    from arith.errors import InputError

    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot be checked ({exc.strerror or type(exc).__name__})") from None
    if stat.S_ISDIR(st.st_mode):
        problem = "is a folder, not a file"
    elif not stat.S_ISREG(st.st_mode):
        problem = "is not a regular file (a device, fifo or socket)"
    elif records and st.st_size > MAX_RECORDS_BYTES:
        problem = f"over {MAX_RECORDS_BYTES >> 20} MiB, not a behaviour or maths file"
    elif records:
        try:
            load_records(path)
            return
        except InputError as exc:
            problem = f"not a behaviour or maths file ({str(exc).removeprefix(f'behaviour file {path}: ')})"
    else:
        return
    raise InputError(f"{what} {path}: {problem}; it is left as it is and nothing was done: {hint}")


# ------------------------------------------------------------------------------------------------ staleness


def behavior_of_maths(maths):
    """The behaviour file a maths file was made from: `<name>_maths.json` -> `<name>_behavior.json` beside it;
    None when `maths` is not named as a maths file."""
    from pathlib import Path

    from arith.names import ARTIFACT_SUFFIXES, artifact_path

    maths = Path(maths)
    suffix = ARTIFACT_SUFFIXES["maths"]
    if not maths.name.endswith(suffix) or maths.name == suffix:
        return None
    return artifact_path(maths.parent, maths.name.removesuffix(suffix), "behavior")


def made_from_behavior(behavior) -> list:
    """What is made from a behaviour file, beside it: the maths file, the quanta maps of the behaviour views
    and the maths file's algorithm map (`<name>_quanta_algo`)."""
    from pathlib import Path

    from analysis.quanta import behavior_map_paths, map_paths
    from arith.names import ARTIFACT_SUFFIXES, artifact_path

    behavior = Path(behavior)
    name = behavior.name.removesuffix(ARTIFACT_SUFFIXES["behavior"])
    folder = behavior.parent
    return [artifact_path(folder, name, "maths"), *behavior_map_paths(folder, name), *map_paths(folder, name, "algo")]


def stale_files(behavior, files=None) -> list:
    """The staleness rule (its one owner): of `files` (default: made_from_behavior), those that exist and were
    last written before the behaviour file was (modification time, strictly older): made from an earlier
    behaviour file, so they may not show the nodes and tags it holds now. [] when there is no behaviour file."""
    import stat
    from pathlib import Path

    try:
        made = Path(behavior).stat().st_mtime_ns
    except OSError:
        return []
    out = []
    for f in made_from_behavior(behavior) if files is None else files:
        try:
            st = Path(f).stat()
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mtime_ns < made:
            out.append(Path(f))
    return out
