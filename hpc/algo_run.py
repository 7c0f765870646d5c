"""Algorithm search runs (upstream_spec 8): one checked block per intervening task, farmed over Dask into
`<name>.zarr/algo/<mode>/trials` (hpc.algo_store), reduced to `<name>_maths.json`.

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
from hpc import algo_store as st
from hpc.ablation import Model
from hpc.blocks import DEFAULT_RETRIES, run_checked, worker_model
from hpc.store import StoreDamage, consolidate, group_lock, prepare_group


@dataclass(frozen=True)
class Settings:
    compat: bool = False  # the reference's filters (8.4) instead of the intended ones
    device: str = "auto"
    retries: int = DEFAULT_RETRIES
    progress: bool = True
    fresh: bool = False
    wait: bool = True  # another run writing this mode's group of the store: wait for it (False: refuse)

    @property
    def mode(self) -> str:
        return "compat" if self.compat else "corrected"


@dataclass(frozen=True)
class Job:
    model: Model
    records: tuple  # the behaviour records (dicts), in file order
    store: Path
    out: Path  # the maths json

    @property
    def records_sha256(self) -> str:
        return hashlib.sha256(json.dumps(list(self.records), sort_keys=True).encode()).hexdigest()


def model_of(weights: str | Path) -> Model:
    """The hpc.ablation.Model of a weights file (shape, digits, operations, sha256)."""
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
    from analysis.behavior import check_nodes_fit, load_records
    from arith.names import sidecar_path
    from hpc.rundir import RunDir

    run = RunDir.beside(weights)
    path = Path(behavior or run.behavior_json)
    records = load_records(path)
    model = model_of(weights)
    try:
        made_from = json.loads(sidecar_path(path).read_text()).get("weights_sha256")
    except (OSError, ValueError, AttributeError):
        made_from = None  # no sidecar (a published behaviour file): nothing to check against
    if made_from is not None and made_from != model.sha256:
        raise InputError(f"behaviour file {path}: made from other weights than {weights}; rerun varith ablate")
    if not records and not allow_empty:
        raise InputError(f"behaviour file {path}: no useful nodes, nothing to search; rerun varith ablate")
    check_nodes_fit(records, path, model.shape.n_layers, model.shape.n_heads, model.layout.n_ctx)
    root = Path(store).resolve() if store else run.store.resolve()
    return Job(model, tuple(records), root, run.maths_json)


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


def _analyse(client, job: Job, settings: Settings, resources: dict | None = None) -> list[dict]:
    tasks, plans = _plans(job, settings)
    group = _group(job, settings, plans)
    prepare_group(group, group.specs(), _fingerprint(job, settings), settings.fresh)
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


def _reduce(job: Job, settings: Settings, group: st.TrialsGroup, tasks, plans) -> list[dict]:
    m = job.model
    data = group.read_checked()
    results, bad = {}, {}
    for k, tp in enumerate(plans):
        pred = data["pred"][k, : tp.n_trials]
        ok = algo.outcomes(pred, tp.tests, np.asarray(tp.test, np.int64), tp.task.op, m.n_digits).ok
        if not np.array_equal(ok, data["passed"][k, : tp.n_trials].astype(bool)):
            bad[k] = "pass flags disagree with the answers"
        results[tp.code] = algo.unit_results(tp, pred, m.n_digits, m.pure_add)
    if bad:
        raise StoreDamage(group.location, bad)
    return algo.search(list(job.records), tasks, plans, results, m.n_digits, settings.compat)


def reduce_store(job: Job, settings: Settings) -> list[dict]:
    """The maths records from the store alone (refused if it was made from other weights, behaviour or mode)."""
    import zarr

    tasks, plans = _plans(job, settings)
    group = _group(job, settings, plans)
    try:
        stored = dict(zarr.open_group(store=group.root, path=group.path, mode="r").attrs).get("fingerprint")
    except FileNotFoundError:
        stored = None
    if stored is None:
        raise InputError(f"store {group.location}: no algorithm search results there; run varith algo first")
    if stored != json.loads(json.dumps(_fingerprint(job, settings))):
        raise InputError(f"store {group.location} was made by other weights, behaviour or settings; run it again")
    return _reduce(job, settings, group, tasks, plans)


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


def run(job: Job, settings: Settings, spec=None) -> list[dict]:
    """The search on a Dask cluster (`spec`, a hpc.cluster.ClusterSpec) or in this process (None)."""
    if spec is None:
        return analyse(None, job, settings)
    import logging

    from hpc.cluster import open_cluster

    logging.getLogger("tornado.application").setLevel(logging.CRITICAL)
    with open_cluster(spec) as handle:
        print(handle.description)
        print(f"dask dashboard: {handle.dashboard_text}", flush=True)
        return analyse(handle.client, job, settings, handle.task_resources)
