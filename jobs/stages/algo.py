"""Algorithm search runs (docs/reference_facts.md F8): one checked block per intervening task, farmed over Dask into
`<name>.zarr/algo/<mode>/trials` (jobs.stages.algo_store), reduced to `<name>_maths.json`.

The driver plans every task's trials from the behaviour records (`analysis.algo.plan`: candidate heads and
same-layer pairs at every position, for every digit, times the digit's tests). Block k evaluates task k's
trials in batched forwards and stores the intervened answers and the per-row pass flags. The reduction
recomputes the flags from the answers (a block whose flags disagree is damaged and redone), combines them per
unit and runs the search of 8.1 (`analysis.algo.search`). Tasks are deterministic, so a killed worker or a
restarted driver changes nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis import algo
from analysis import algo_tasks as at
from analysis.ablate import Node
from arith.errors import InputError
from arith.files import atomic_write_bytes, sha256_file
from hpc.blocks import run_checked
from hpc.cluster import ClusterSpec
from hpc.store import StoreDamage, consolidate, group_lock, open_checked, prepare_group, stored_attributes
from jobs.stages import algo_store as st
from jobs.stages.ablate import Model
from jobs.stages.template import FunctionStage, StageSettings, run_stage, worker_model


@dataclass(frozen=True)
class Settings(StageSettings):
    """The search's own settings besides those every stage shares."""

    compat: bool = False  # the reference's filters (docs/reference_facts.md F8.4) instead of the intended ones

    @property
    def mode(self) -> str:
        return "compat" if self.compat else "corrected"


@dataclass(frozen=True)
class Job:
    model: Model
    records: tuple  # the behaviour records (dicts), in file order
    store: Path
    out: Path  # the maths json
    behavior: Path | None = None  # the behaviour file the records come from
    given: str = ""  # the weights as the user named them (for the commands a message suggests)

    @property
    def records_sha256(self) -> str:
        return hashlib.sha256(json.dumps(list(self.records), sort_keys=True).encode()).hexdigest()


def model_of(weights: str | Path) -> Model:
    """The jobs.stages.ablate.Model of a weights file (shape, digits, operations, sha256)."""
    from arith.names import name_of_weights
    from arith.weights import model_info, trained_ops

    shape, n_digits, config = model_info(weights)
    name = name_of_weights(weights)
    return Model(str(Path(weights).resolve()), sha256_file(weights), name, shape, n_digits, trained_ops(config, name))


def job_for(
    weights: str | Path, behavior: str | Path | None = None, store: str | Path | None = None, allow_empty: bool = False
) -> Job:
    """The search of one model from its behaviour file (default: beside the weights). Refused (InputError) when
    the file's sidecar names other weights, a node does not fit the model, or (unless `allow_empty`) it is empty."""
    from analysis.behavior import check_nodes_fit, load_records, read_sidecar
    from jobs.runs.rundir import RunDir

    run = RunDir.beside(weights)
    path = Path(behavior or run.behavior_json)
    records = load_records(path)
    model = model_of(weights)
    made_from = read_sidecar(path).get("weights_sha256")  # None without a sidecar (a published behaviour file)
    if made_from is not None and made_from != model.sha256:
        raise InputError(f"behaviour file {path}: made from other weights than {weights}; rerun varith ablate")
    if not records and not allow_empty:
        raise InputError(f"behaviour file {path}: no useful nodes, nothing to search; rerun varith ablate")
    check_nodes_fit(records, path, model.shape.n_layers, model.shape.n_heads, model.layout.n_ctx)
    root = Path(store).resolve() if store else run.store.resolve()
    return Job(model, tuple(records), root, run.maths_json, path, str(weights))


@dataclass(frozen=True)
class AlgoWork:
    model: Model
    group: st.TrialsGroup
    plans: tuple[algo.TaskPlan, ...]
    nodes: tuple[Node, ...]
    device: str = "auto"

    def key(self, k: int) -> str:
        return f"algo-{self.model.sha256[:12]}-{self.group.location}-{k}"

    def __call__(self, k: int) -> tuple[int, dict[str, int]]:
        m, g, tp = self.model, self.group, self.plans[k]
        net = worker_model(m.weights, m.sha256, m.shape, self.device)
        pred = algo.task_answers(net, m.layout, tp, self.nodes)
        ok = algo.outcomes(pred, tp.tests, np.asarray(tp.test, np.int64), tp.task.op, m.n_digits).ok
        rows = tp.n_trials
        out_pred = np.zeros((g.max_trials, m.n_digits + 2), np.uint8)
        out_passed = np.zeros(g.max_trials, np.uint8)
        out_pred[:rows], out_passed[:rows] = pred, ok
        g.write_rows(k, {"n_trials": np.int64(rows), "pred": out_pred, "passed": out_passed})
        return k, {"interventions": rows, "passed": int(ok.sum())}


def _plans(job: Job, settings: Settings) -> tuple[tuple[at.Task, ...], list[algo.TaskPlan]]:
    tasks = at.notebook_order(job.model.ops)
    return tasks, algo.plan(list(job.records), tasks, job.model.n_digits, settings.compat)


def _group(job: Job, settings: Settings, plans: list[algo.TaskPlan]) -> st.TrialsGroup:
    counts = tuple(tp.n_trials for tp in plans)
    path = f"{st.GROUP}/{settings.mode}/trials"
    return st.TrialsGroup(str(job.store), path, len(plans), job.model.n_digits, max((1, *counts)), counts)


def _fingerprint(job: Job, settings: Settings) -> dict:
    return {
        "layout": st.LAYOUT_VERSION,
        "weights_sha256": job.model.sha256,
        "behavior_sha256": job.records_sha256,
        "mode": settings.mode,
        "ops": list(job.model.ops),
    }


def analyse(client, job: Job, settings: Settings, resources: dict | None = None) -> list[dict]:
    """Every task's block (resuming what the store has), then the reduction: the maths records.
    `client`: a Dask client, or None to run the blocks in this process. Holds `algo/<mode>` of the store
    meanwhile (one writer per group, hpc.store.group_lock: another run's is waited for, or refused)."""
    with group_lock(job.store, f"{st.GROUP}/{settings.mode}", wait=settings.wait):
        return _analyse(client, job, settings, resources)


def check_store(job: Job, settings: Settings, reduce_only: bool = False) -> None:
    """Before any work: when the store's search of this mode was made from another behaviour file than the
    job's (same weights and settings), one InputError line saying so in words and which command to run. Any
    other difference is prepare_group's to name; with --fresh (not --reduce-only) the search is redone anyway."""
    from jobs.stages.ablate import ablate_command, mode_of

    if settings.fresh and not reduce_only:
        return
    _tasks, plans = _plans(job, settings)
    group = _group(job, settings, plans)
    attrs = stored_attributes(group)
    stored, wanted = attrs.get("fingerprint"), json.loads(json.dumps(_fingerprint(job, settings)))
    if not isinstance(stored, dict) or stored == wanted:
        return
    if {k: v for k, v in stored.items() if k != "behavior_sha256"} != {
        k: v for k, v in wanted.items() if k != "behavior_sha256"
    }:
        return
    weights = job.given or job.model.weights
    behavior = job.behavior or job.out
    now = ablate_command(behavior, weights)
    then = attrs.get("behavior_made_by")
    searched = f"the one `{then}` made" if isinstance(then, str) and then != now else "another one"
    compat = " --compat" if settings.compat else ""
    made = mode_of(behavior)
    advice = []
    if made and made != settings.mode:
        other = " --compat" if made == "compat" else ""
        advice.append(f"`varith algo {weights}{other}` (the filters of a {made} ablation)")
    if isinstance(then, str) and then != now:
        advice.append(f"`{then}` first to put that one back (quick when the store still holds it)")
    elif (made and made != settings.mode) or "--question-file" in now:
        varied = " (the varied questions)" if "--question-file" in now else ""
        advice.append(f"`varith ablate {weights}{compat}` first{varied}")
    advice.append(f"`varith algo {weights}{compat} --fresh` to search this file")
    kept = f", so {job.out.name} cannot be rebuilt from it" if reduce_only else ""
    raise InputError(
        f"{behavior} was made by `{now}`, but the {settings.mode} search in store {job.store} is of {searched}"
        f"{kept}: run " + ", or ".join(advice)
    )


def _analyse(client, job: Job, settings: Settings, resources: dict | None = None) -> list[dict]:
    tasks, plans = _plans(job, settings)
    group = _group(job, settings, plans)
    check_store(job, settings)
    prepare_group(group, group.specs(), _fingerprint(job, settings), settings.fresh)
    if job.behavior is not None:  # names, once the behaviour file changes, the command that made this one
        _remember_behavior(group, job)
    work = AlgoWork(job.model, group, tuple(plans), tuple(algo.record_node(r) for r in job.records), settings.device)
    records = run_checked(
        client,
        work,
        lambda: _reduce(job, settings, group, tasks, plans),
        retries=settings.retries,
        resources=resources,
        progress=settings.progress,
        desc=f"{job.model.name} algo",
    )
    consolidate(job.store)
    return records


def _remember_behavior(group: st.TrialsGroup, job: Job) -> None:
    import zarr

    from jobs.stages.ablate import ablate_command

    made_by = ablate_command(job.behavior, job.given or job.model.weights)
    g = zarr.open_group(store=group.root, path=group.path, mode="r+", zarr_format=3)
    if g.attrs.get("behavior_made_by") != made_by:
        g.attrs["behavior_made_by"] = made_by


def _reduce(job: Job, settings: Settings, group: st.TrialsGroup, tasks, plans) -> list[dict]:
    m = job.model
    data = group.read_checked()
    results, bad = {}, {}
    for k, tp in enumerate(plans):
        pred = data["pred"][k, : tp.n_trials]
        ok = algo.outcomes(pred, tp.tests, np.asarray(tp.test, np.int64), tp.task.op, m.n_digits).ok
        if not np.array_equal(ok, data["passed"][k, : tp.n_trials].astype(bool)):
            bad[k] = "pass flags disagree with the answers"
        results[tp.code] = algo.unit_results(tp, pred, m.n_digits, m.pure_add, settings.compat)
    if bad:
        raise StoreDamage(group.location, bad)
    return algo.search(list(job.records), tasks, plans, results, m.n_digits, settings.compat)


def reduce_store(job: Job, settings: Settings) -> list[dict]:
    """The maths records from the store alone (refused if it was made from other weights, behaviour or mode)."""
    tasks, plans = _plans(job, settings)
    group = _group(job, settings, plans)
    again = f"varith algo {job.given or job.model.weights}{' --compat' if settings.compat else ''}"
    if not isinstance(stored_attributes(group).get("fingerprint"), dict):
        raise InputError(
            f"store {group.location}: no algorithm search results there; run `{again}` (without --reduce-only) first"
        )
    check_store(job, settings, reduce_only=True)  # made from another behaviour file: says which command to run
    open_checked(group, _fingerprint(job, settings), "no algorithm search results there", f"run `{again} --fresh`")
    return _reduce(job, settings, group, tasks, plans)


def check_outputs(maths: str | Path, name: str) -> None:
    """Before any work (one InputError line, every path left as it is): the maths file can be written (absent or
    a maths file) and so can its quanta map `<name>_quanta_algo.svg/.png` (absent or files)."""
    from analysis.behavior import require_output_file
    from analysis.quanta import map_paths

    require_output_file(maths, "maths file", records=True)
    for p in map_paths(Path(maths).parent, name, "algo"):
        require_output_file(p, "quanta map")


def write_outputs(job: Job, records: list[dict], pictures: bool = True) -> Path:
    """`<name>_maths.json`: the reference's format (a plain JSON array, every useful node, Algo tags only), and
    beside it the quanta map of the nodes' algorithm purposes (`<name>_quanta_algo.svg/.png`)."""
    out = Path(job.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, json.dumps(records).encode())
    if pictures:
        from analysis.quanta import draw_algo

        m = job.model
        draw_algo(records, m.layout, m.shape.n_layers, m.shape.n_heads, out.parent, m.name, m.pure_add)
    return out


class AlgoStage(FunctionStage):
    """The algorithm search as a stage of the template (jobs.stages.template): trial blocks into `algo/<mode>` of
    the store, reduced to the maths records."""

    name = "algo"
    work = (AlgoWork,)
    MAX_TASKS = 16  # sizes a SLURM cluster

    analyse = staticmethod(analyse)
    reduce_store = staticmethod(reduce_store)


def run(job: Job, settings: Settings, spec: ClusterSpec) -> list[dict]:
    """The search on one cluster (`spec`, any kind: `none` runs the blocks in this process)."""
    ((_job, records),) = run_stage(AlgoStage(settings), [job], spec)
    return records
