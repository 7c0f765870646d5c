"""Algorithm sub-task search (docs/reference_facts.md F8): interventions batched over row groups, and the tag search.

An intervention (F8.2) runs the store question, then the clean question with the head output (`hook_z`) of each
patched head at its own position overwritten by the store run's value; the intervened answer is the argmax at
the n+2 answer positions (teacher forced). Here every (unit, test) of a task is one row of one batch: the rows
hold the clean questions, and one `Patch` per layer overwrites, row by row, the (position, head) slices of that
row's unit with the store values of that row's test. A unit is one head or a same-layer pair of heads.

Every test result is a fixed function of (unit, test), and the filters read only the behaviour tags, so the
driver can compute all candidate units of a task at once (`plan`: singles and same-layer pairs at every
position and digit) and the search of 8.1 is a pure reduction of the answers (`search`):
for each task in notebook order, each impact digit d: a strong pass; a weak pass if it tagged nothing and the
task allows one; in each pass, per position from the lowest to the highest useful one, every candidate that
passes alone is tagged; if none did and the task searches pairs, both heads of every passing pair are tagged.
Then the OPR/SGN clean-up, and the records: every useful node with only its `Algo:` tags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import torch

from analysis import algo_tasks as at
from analysis.ablate import Node
from analysis.impact import NO_IMPACT, intervention_impact
from arith.model import Patch, Transformer, patches
from arith.vocab import ADD, SUB, Layout, encode, ints_to_digits, string_to_tokens

ROWS = 4096  # rows per intervention forward


# ------------------------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class Unit:
    """Heads patched together (indices into the behaviour records), tried for `task`'s digit d at a position."""

    d: int
    position: int
    nodes: tuple[int, ...]


@dataclass(frozen=True)
class TaskPlan:
    """All candidate units of one task over every digit and position, its tests, and the trial rows: row r
    patches unit `unit[r]` into test `test[r]` (tests of all digits in one list)."""

    code: str
    units: tuple[Unit, ...]
    tests: tuple[at.Test, ...]
    unit: tuple[int, ...]
    test: tuple[int, ...]

    @property
    def task(self) -> at.Task:
        return at.BY_CODE[self.code]

    @property
    def n_trials(self) -> int:
        return len(self.unit)


def record_node(r: dict) -> Node:
    return Node(r["position"], r["layer"], not r["is_head"], r["num"])


def candidates(records: list[dict], task: at.Task, n: int, d: int, position: int, compat: bool) -> list[int]:
    """Indices of the records that pass the task's filter at `position` (in record order)."""
    f = task.filter(n, d)
    return [i for i, r in enumerate(records) if r["position"] == position and f.matches(r, compat)]


def positions_of(records: list[dict]) -> list[int]:
    """The useful positions searched, lowest to highest (those holding a useful node)."""
    return sorted({r["position"] for r in records})


def plan(records: list[dict], tasks: tuple[at.Task, ...], n: int, compat: bool) -> list[TaskPlan]:
    """The trials of every intervening task: each candidate head alone and, for a task with pair search, each
    same-layer pair of candidates, for every digit and position, times the digit's tests."""
    out = []
    for task in tasks:
        if not task.intervenes:
            continue
        units: list[Unit] = []
        tests: list[at.Test] = []
        rows_u: list[int] = []
        rows_t: list[int] = []
        for d in task.digits(n):
            first = len(tests)
            tests += task.tests(n, d)
            for p in positions_of(records):
                cand = candidates(records, task, n, d, p, compat)
                groups = [(i,) for i in cand]
                if task.pairs:
                    groups += [pr for pr in combinations(cand, 2) if records[pr[0]]["layer"] == records[pr[1]]["layer"]]
                for g in groups:
                    units.append(Unit(d, p, g))
                    for j in range(first, len(tests)):
                        rows_u.append(len(units) - 1)
                        rows_t.append(j)
        out.append(TaskPlan(task.code, tuple(units), tuple(tests), tuple(rows_u), tuple(rows_t)))
    return out


# ------------------------------------------------------------------------------------------------ interventions


def question_tokens(pairs: list[tuple[int, int]], op: int, n: int) -> torch.Tensor:
    """Teacher-forced token rows [len(pairs), 3n+4] of questions a op b (operands 0 <= a, b < 10^n)."""
    a = [int(p[0]) for p in pairs]  # Python integers: rep(9, 20) does not fit an int64
    b = [int(p[1]) for p in pairs]
    if any(v < 0 or v >= 10**n for v in (*a, *b)):
        raise ValueError("operands must lie in 0 .. 10^n - 1")
    ops = np.full(len(a), op, dtype=np.uint8)
    return torch.from_numpy(encode(ints_to_digits(a, n), ints_to_digits(b, n), ops)).long()


@dataclass(frozen=True)
class Trials:
    """Trial rows as arrays: `test` [R]; `layer` [R]; `pos`, `head` [R, 2] (head -1: no second node)."""

    test: np.ndarray
    layer: np.ndarray
    pos: np.ndarray
    head: np.ndarray

    @classmethod
    def of(cls, units: list[tuple[Node, ...]], tests: list[int]) -> Trials:
        R = len(units)
        pos = np.zeros((R, 2), np.int64)
        head = np.full((R, 2), -1, np.int64)
        layer = np.zeros(R, np.int64)
        for r, nodes in enumerate(units):
            if not 1 <= len(nodes) <= 2 or any(nd.is_mlp or nd.layer != nodes[0].layer for nd in nodes):
                raise ValueError("a unit is one head or two heads of one layer")
            layer[r] = nodes[0].layer
            for s, nd in enumerate(nodes):
                pos[r, s], head[r, s] = nd.position, nd.num
        return cls(np.asarray(tests, np.int64), layer, pos, head)

    @classmethod
    def of_plan(cls, tp: TaskPlan, nodes: list[Node] | tuple[Node, ...]) -> Trials:
        """The rows of a plan; `nodes[i]` is the node of behaviour record i."""
        return cls.of([tuple(nodes[i] for i in tp.units[u].nodes) for u in tp.unit], list(tp.test))


def _z_names(model: Transformer) -> list[str]:
    return [f"blocks.{i}.attn.hook_z" for i in range(model.shape.n_layers)]


@torch.inference_mode()
def intervened_answers(
    model: Transformer, layout: Layout, store: torch.Tensor, clean: torch.Tensor, trials: Trials, rows: int = ROWS
) -> np.ndarray:
    """Predicted answer tokens uint8 [R, n+2] of every trial: clean question `clean[test]` with the trial's
    heads patched by the store run `store[test]` (one store forward, then ROWS trials per forward)."""
    device = next(model.parameters()).device
    names = _z_names(model)
    _, cache = model.run_with_cache(store.to(device), names)
    z = torch.stack([cache[nm] for nm in names])  # [L, T, P, H, dh]
    clean = clean.to(device)
    R = len(trials.test)
    out = np.zeros((R, layout.n_answer), np.uint8)
    for lo in range(0, R, rows):
        sl = slice(lo, lo + rows)
        test = torch.from_numpy(trials.test[sl]).to(device)
        head = trials.head[sl]
        r_idx, slot = np.nonzero(head >= 0)
        layer = trials.layer[sl][r_idx]
        hooks = {}
        for lyr in np.unique(layer).tolist():
            m = layer == lyr
            r_t = torch.from_numpy(r_idx[m]).to(device)
            p_t = torch.from_numpy(trials.pos[sl][r_idx[m], slot[m]]).to(device)
            h_t = torch.from_numpy(head[r_idx[m], slot[m]]).to(device)
            hooks[names[lyr]] = Patch(pos=p_t, value=z[lyr, test[r_t], p_t, h_t], head=h_t, rows=r_t)
        logits = model(clean[test], hooks, logit_positions=layout.predict_slice)
        out[sl] = logits.argmax(-1).to(torch.uint8).cpu().numpy()
    return out


@torch.inference_mode()
def intervened_answer_plain(
    model: Transformer, layout: Layout, store: torch.Tensor, clean: torch.Tensor, nodes: tuple[Node, ...]
) -> np.ndarray:
    """The slow path the batched one is checked against: one store forward and one patched clean forward for
    one unit and one test (`store`, `clean` [1, n_ctx]); answer tokens uint8 [n+2]."""
    device = next(model.parameters()).device
    names = _z_names(model)
    _, cache = model.run_with_cache(store.to(device), names)
    by_layer: dict[str, list[Patch]] = {}
    for nd in nodes:
        value = cache[names[nd.layer]][0, nd.position, nd.num]
        by_layer.setdefault(names[nd.layer], []).append(Patch(pos=nd.position, value=value, head=nd.num))
    hooks = {k: patches(*v) for k, v in by_layer.items()}
    logits = model(clean.to(device), hooks, logit_positions=layout.predict_slice)
    return logits[0].argmax(-1).to(torch.uint8).cpu().numpy()


# ------------------------------------------------------------------------------------------------ pass rules


@dataclass(frozen=True)
class Outcomes:
    """Per trial row: `ok` (its test's rule holds), `impact_ok` (the impact is the expected one), `changed`
    [R, n+2] (answer positions differing from the clean question's true answer)."""

    ok: np.ndarray
    impact_ok: np.ndarray
    changed: np.ndarray


def outcomes(pred: np.ndarray, tests: tuple[at.Test, ...], test_of_row: np.ndarray, op: int, n: int) -> Outcomes:
    """Each trial row's test rule, vectorised over rows (F8.2)."""
    layout = Layout(n)
    T, A = len(tests), layout.n_answer
    clean = np.zeros((0, A), np.int64)
    if T:
        clean = question_tokens([t.clean for t in tests], op, n)[:, layout.answer_start :].numpy()
    expected = np.full((T, A), -1, np.int64)
    want_mask = np.zeros((T, A), bool)
    rule = np.zeros(T, np.int64)  # 0 exact, 1 changed, 2 sign
    sign = np.full(T, -1, np.int64)
    for j, t in enumerate(tests):
        if t.rule == at.EXACT:
            expected[j] = string_to_tokens(at.answer_string(t.expected, n))
            d = int(t.impact[1:])
            want_mask[j, A - 1 - d] = True
        elif t.rule == at.CHANGED:
            rule[j] = 1
        else:
            rule[j] = 2
            sign[j] = string_to_tokens(t.sign)[0]
    pred = np.asarray(pred, np.int64)
    tr = np.asarray(test_of_row, np.int64)
    changed = pred != clean[tr]
    impact_ok = (changed == want_mask[tr]).all(1)
    exact = (pred == expected[tr]).all(1) & impact_ok
    ok = np.select([rule[tr] == 0, rule[tr] == 1], [exact, changed.any(1)], pred[:, 0] == sign[tr])
    return Outcomes(ok, impact_ok, changed)


@dataclass
class UnitResults:
    """Per unit of a plan: passes the strong rule, passes the weak rule, and the impact of its last test."""

    strong: np.ndarray
    weak: np.ndarray
    impact: list[str] = field(default_factory=list)


def unit_results(tp: TaskPlan, pred: np.ndarray, n: int, pure_add: bool, compat: bool = False) -> UnitResults:
    """Combine the trial rows of each unit: strong = every test passes; weak (SA, MD, ND) = every test's
    impact is the expected one; the weak tag's suffix is the last test's intervened impact
    (analysis.impact.intervention_impact: the reference's string with `compat`, else its grammar's)."""
    task = tp.task
    U = len(tp.units)
    unit = np.asarray(tp.unit, np.int64)
    oc = outcomes(pred, tp.tests, np.asarray(tp.test, np.int64), task.op, n)
    strong = np.ones(U, bool)
    weak = np.ones(U, bool)
    np.logical_and.at(strong, unit, oc.ok)
    np.logical_and.at(weak, unit, oc.impact_ok)
    last = np.full(U, -1, np.int64)
    last[unit] = np.arange(len(unit))  # rows are in test order within a unit: the last write wins
    layout = Layout(n)
    impact = [
        intervention_impact(oc.changed[r], layout, pure_add, compat) if r >= 0 else NO_IMPACT for r in last.tolist()
    ]
    return UnitResults(strong, weak if task.weak else np.zeros(U, bool), impact)


# ------------------------------------------------------------------------------------------------ the search


def search(
    records: list[dict],
    tasks: tuple[at.Task, ...],
    plans: list[TaskPlan],
    results: dict[str, UnitResults],
    n: int,
    compat: bool,
) -> list[dict]:
    """The search of F8.1 over precomputed unit results, the clean-up of F8.3 and the maths records: every
    record of `records` (the behaviour file's useful nodes, in order) with only its Algo tags."""
    tags: list[list[str]] = [[] for _ in records]

    def add(i: int, tag: str) -> None:
        full = "Algo:" + tag
        if full not in tags[i]:
            tags[i].append(full)

    def carries(i: int, text: str) -> bool:
        return any(text in t for t in tags[i])

    by_code = {tp.code: tp for tp in plans}
    for task in tasks:
        if not task.intervenes:  # OPR, SGN: every candidate passes
            for p in positions_of(records):
                for i in candidates(records, task, n, 0, p, compat):
                    add(i, task.tag(0))
            continue
        tp, res = by_code[task.code], results[task.code]
        index: dict[tuple[int, int], list[int]] = {}
        for u, unit in enumerate(tp.units):
            index.setdefault((unit.d, unit.position), []).append(u)
        for d in task.digits(n):
            tag = task.tag(d)
            for strong in (True, False) if task.weak else (True,):
                passes = res.strong if strong else res.weak
                success = False
                for p in positions_of(records):
                    units = [u for u in index.get((d, p), []) if not any(carries(i, tag) for i in tp.units[u].nodes)]
                    passed = [u for u in units if len(tp.units[u].nodes) == 1 and passes[u]]
                    if not passed and task.pairs:
                        passed = [u for u in units if len(tp.units[u].nodes) == 2 and passes[u]]
                    for u in passed:
                        for i in tp.units[u].nodes:
                            add(i, tag if strong else f"{tag}.{res.impact[u]}")
                    success |= bool(passed)
                if success:
                    break
    for t in tags:  # a node whose only Algo tag is OPR or SGN loses it
        if len(t) == 1 and ("OPR" in t[0] or "SGN" in t[0]):
            t.clear()
    return [record_node(r).record(t) for r, t in zip(records, tags, strict=True)]


def run_search(
    model: Transformer, records: list[dict], ops: tuple[int, ...], n: int, compat: bool, pure_add: bool
) -> list[dict]:
    """The whole search in this process (no store): plan, interventions per task, search."""
    tasks = at.notebook_order(ops)
    plans = plan(records, tasks, n, compat)
    layout = Layout(n)
    nodes = [record_node(r) for r in records]
    results = {tp.code: unit_results(tp, task_answers(model, layout, tp, nodes), n, pure_add, compat) for tp in plans}
    return search(records, tasks, plans, results, n, compat)


def task_answers(model: Transformer, layout: Layout, tp: TaskPlan, nodes) -> np.ndarray:
    """The intervened answers of every trial row of one task plan, uint8 [R, n+2]."""
    if tp.n_trials == 0:
        return np.zeros((0, layout.n_answer), np.uint8)
    n, op = layout.n_digits, tp.task.op
    store = question_tokens([t.store for t in tp.tests], op, n)
    clean = question_tokens([t.clean for t in tp.tests], op, n)
    return intervened_answers(model, layout, store, clean, Trials.of_plan(tp, nodes))


# ------------------------------------------------------------------------------------------------ --check


def _algo_positions(records: list[dict], tag_start: str) -> list[int]:
    """Positions of the nodes with an Algo tag starting with `tag_start` (strong or weak)."""
    return sorted(
        r["position"]
        for r in records
        if any(t == "Algo:" + tag_start or t.startswith("Algo:" + tag_start + ".") for t in r["tags"])
    )


def check_claims(records: list[dict], ops: tuple[int, ...], n: int) -> list[tuple[str, bool]]:
    """The algorithm claims the Algorithm notebook checks with the tags (F8.4), each with whether it holds.

    Addition: every answer digit A{d} (d < n) has an A{d}.SA node at or before the position that predicts it
    (A{d+1}'s); A{d}.ST for d in 2..n-1 at or before the sign position. Subtraction: an A{d}.MD node per digit
    likewise; A{d}.MT for d in 1..n-1 at or before the sign; and the earliest MT position does not rise as
    the digit rises."""
    layout = Layout(n)
    sign = layout.answer_start

    def predicts(d: int) -> int:  # the position whose logits give A{d}: the one holding A{d+1}
        return layout.n_ctx - 2 - d

    out: list[tuple[str, bool]] = []
    if ADD in ops:
        for d in range(n):
            pos = _algo_positions(records, f"A{d}.SA")
            out.append((f"A{d}.SA at or before P{predicts(d)}", bool(pos) and pos[0] <= predicts(d)))
        for d in range(2, n):
            pos = _algo_positions(records, f"A{d}.ST")
            out.append((f"A{d}.ST at or before P{sign}", bool(pos) and pos[0] <= sign))
    if SUB in ops:
        for d in range(n):
            pos = _algo_positions(records, f"A{d}.MD")
            out.append((f"A{d}.MD at or before P{predicts(d)}", bool(pos) and pos[0] <= predicts(d)))
        firsts = []
        for d in range(1, n):
            pos = _algo_positions(records, f"A{d}.MT")
            out.append((f"A{d}.MT at or before P{sign}", bool(pos) and pos[0] <= sign))
            if pos:
                firsts.append(pos[0])
        ordered = len(firsts) == n - 1 and all(a >= b for a, b in zip(firsts, firsts[1:], strict=False))
        out.append(("MT positions get earlier as the digit rises", ordered))
    return out
