"""Intervention studies (issue 22) as stages of the one template: circuit sufficiency, matched-pair patching and
probes, farmed over Dask into `<name>.zarr/study/<kind>/` (jobs.stages.study_store) and reduced to
`<name>_<kind>.json` (the computation itself is analysis.interventions and analysis.probes).

Blocks. Block k is (seed index s, question chunk c), k = s * n_chunks + c: it runs the study on chunk c of the
questions with seed s (random control sets, resampling donors, matched pairs) for the trained model and, as extra
rows of the same block, for the untrained twin drawn from seed s (`analysis.interventions.untrained_twin`), and
writes its counts then its done flag. Counts add over chunks; seeds are repetitions, reported as a mean with a 95%
interval over seeds (`analysis.intervals.mean_interval`; Wilson's interval on the pooled counts with one seed).
Every seed sees the same questions: what a seed changes is the random node sets, the resampling donors, the
matched pairs and the twin's weights. The means that replaced nodes take (`study_means`, the ablation's corrected
per-layer means) are computed once on the driver, for the model and for each seed's twin, and handed to blocks.

Work on the driver after the blocks (documented, not farmed out):
- sufficiency: the greedy restoration (`--restore K`, `analysis.interventions.greedy_restoration`, seed 0, every
  chunk, in this process); its curve is kept in the group's `greedy` attribute, so `reduce` reads it back without
  computing. The grouped restoration (per layer, heads, MLPs, question and answer positions) is extra rows of
  the blocks.
- probe: the blocks capture the residual stream before and after every layer at every position into the store;
  the logistic probes (scikit-learn, cross-validated balanced accuracy, permutation null, transfer matrix) are
  fitted on the driver from the stored activations.
Tasks are deterministic, so a killed worker or a restarted driver changes nothing: the JSON is the same.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analysis.ablate import Means, Node
from arith.errors import InputError
from arith.files import atomic_write_bytes
from arith.vocab import QCLASS_NAMES, SUB
from hpc.blocks import run_checked, worker_cached
from hpc.cluster import ClusterHandle
from hpc.store import consolidate, group_lock, open_checked, prepare_group, stored_attributes
from jobs.stages import study_store as st
from jobs.stages.ablate import Model, questions_sha256
from jobs.stages.template import StageSettings, worker_model

KINDS = ("sufficiency", "patch", "probe")
NODE_SOURCES = ("behavior", "maths")


@dataclass(frozen=True)
class Settings(StageSettings):
    """A study's own settings besides those every stage shares (all of them go into the store's fingerprint)."""

    seeds: int = 1  # repetitions: seeds 0 .. seeds-1
    random: int = 10  # random node sets of the circuit's size (sufficiency)
    replace: str = "mean"  # mean | resample (sufficiency)
    restore: int = 3  # greedy restoration steps (sufficiency, on the driver)
    chunk: int = 256  # questions per block
    digit: int | None = None  # one answer digit (patch; probe variables' column), else every one
    path: bool = False  # path patching too (patch)
    variables: tuple[str, ...] = ()  # probe variables (default: those of the digit's column)
    folds: int = 5
    perm: int = 5  # permutation-null shuffles per probe


@dataclass(frozen=True, eq=False)
class Job:
    """One model's study: its questions, the node set (sufficiency), the store and the output folder."""

    kind: str
    model: Model
    x: np.ndarray
    y: np.ndarray
    op: np.ndarray
    store: Path
    out: Path  # <name>_<kind>.json
    nodes: tuple[Node, ...] = ()
    node_source: str = ""
    questions: str = ""  # where the questions come from, in words
    given: str = ""  # the weights as the user named them

    @property
    def questions_sha256(self) -> str:
        return questions_sha256(self.x, self.y, self.op)

    @property
    def picture(self) -> Path:
        return self.out.with_suffix(".png")


def _chunks(n_questions: int, chunk: int) -> tuple[tuple[int, int], ...]:
    """(lo, hi) of each question chunk: ceil(Q / chunk) chunks of balanced sizes (at least 2 questions each when
    Q allows, for resampling)."""
    n = max(1, math.ceil(n_questions / chunk))
    edges = np.linspace(0, n_questions, n + 1).round().astype(int)
    return tuple((int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True))


def _twin(shape, seed: int, device: str):
    """The untrained twin of seed `seed`, built once per worker process per seed."""

    def build():
        from analysis.interventions import untrained_twin
        from arith.device import choose_device

        return untrained_twin(shape, seed).to(choose_device(device))

    return worker_cached("study-twin", (shape, seed, device), build)


def _on(means: Means, device) -> Means:
    return Means(*([t.to(device) for t in ts] for ts in (means.z, means.mlp_post, means.resid_post)))


def _device(net):
    return next(net.parameters()).device


def _questions(job_x, job_y, job_op, lo: int, hi: int):
    return job_x[lo:hi], job_y[lo:hi], job_op[lo:hi]


def _model_means(job: Job) -> Means:
    """The values replaced nodes take: the model's means over the study's questions (computed here, once)."""
    from analysis.interventions import study_means
    from arith.weights import load_model

    m = job.model
    return study_means(load_model(m.weights, m.shape, "cpu"), job.x, job.y, job.op)


def _driver_means(job: Job, settings: Settings) -> tuple[Means, tuple[Means, ...]]:
    """The model's means and each seed's twin's (computed here, once, and handed to the blocks)."""
    from analysis.interventions import study_means, untrained_twin

    twins = tuple(study_means(untrained_twin(job.model.shape, s), job.x, job.y, job.op) for s in range(settings.seeds))
    return _model_means(job), twins


# ------------------------------------------------------------------------------------------------ sufficiency


def sufficiency_rows(job: Job, settings: Settings) -> tuple[tuple[str, ...], tuple[np.ndarray, ...]]:
    """(row names, keep [G, U] per seed): the plan's rows (baseline, circuit, complement, empty, random sets of
    the seed) then the grouped restoration rows (`restore:<group>`)."""
    from analysis.interventions import Sufficiency, restoration_groups

    m = job.model
    names, groups = restoration_groups(m.shape, job.nodes, m.layout)
    keeps, plan_names = [], ()
    for s in range(settings.seeds):
        plan = Sufficiency.plan(m.shape, job.nodes, settings.random, s)
        plan_names = plan.names
        keeps.append(np.concatenate([plan.keep, groups]))
    return plan_names + tuple(f"restore:{n}" for n in names), tuple(keeps)


@dataclass(frozen=True, eq=False)
class SufficiencyWork:
    model: Model
    group: st.SufficiencyGroup
    x: np.ndarray
    y: np.ndarray
    op: np.ndarray
    bounds: tuple[tuple[int, int], ...]
    keep: tuple[np.ndarray, ...]  # per seed [G, U]
    means: Means
    twin_means: tuple[Means, ...]
    replace: str = "mean"
    device: str = "auto"

    def key(self, k: int) -> str:
        return f"study-sufficiency-{self.model.sha256[:12]}-{self.group.location}-{k}"

    def __call__(self, k: int) -> tuple[int, dict[str, int]]:
        from analysis.interventions import Replace, keep_counts

        m = self.model
        s, c = divmod(k, len(self.bounds))
        q = _questions(self.x, self.y, self.op, *self.bounds[c])
        net = worker_model(m.weights, m.sha256, m.shape, self.device)
        twin = _twin(m.shape, s, self.device)
        how = Replace(self.replace)
        a = keep_counts(net, *q, self.keep[s], _on(self.means, _device(net)), how, seed=s, block=c)
        b = keep_counts(twin, *q, self.keep[s], _on(self.twin_means[s], _device(twin)), how, seed=s, block=c)
        rows = {"tested": a.tested, "failed": np.stack([a.failed, b.failed]), "wrong": np.stack([a.wrong, b.wrong])}
        self.group.write_rows(k, rows)
        return k, {"questions": len(q[0]), "interventions": 2 * len(q[0]) * len(self.keep[s])}


def _sufficiency_group(job: Job, settings: Settings, n_rows: int) -> st.SufficiencyGroup:
    from analysis.interventions import N_CLASSES

    n_blocks = settings.seeds * len(_chunks(len(job.x), settings.chunk))
    digest = hashlib.sha256(" ".join(n.name() for n in job.nodes).encode()).hexdigest()[:12]
    path = f"{st.GROUP}/sufficiency/{settings.replace}/{digest}"  # each circuit its own group, side by side
    return st.SufficiencyGroup(str(job.store), path, n_blocks, n_rows, N_CLASSES, job.model.n_digits + 2)


def _fingerprint(job: Job, settings: Settings) -> dict:
    fp = {
        "layout": st.LAYOUT_VERSION,
        "weights_sha256": job.model.sha256,
        "questions_sha256": job.questions_sha256,
        "chunk": settings.chunk,
        "kind": job.kind,
    }
    if job.kind != "probe":  # the probe's activations do not depend on the seeds (the fits on the driver do)
        fp["seeds"] = settings.seeds
    if job.kind == "sufficiency":
        fp |= {"nodes": [n.name() for n in job.nodes], "random": settings.random, "replace": settings.replace}
    elif job.kind == "patch":
        fp |= {"digits": list(_patch_digits(job, settings)), "path": settings.path}
    return fp


def _seed_counts(data: dict, model: int, seeds: int, n_chunks: int):
    """Per seed: the `Counts` of `model` (0 trained, 1 twin) summed over the chunks."""
    from analysis.interventions import Counts

    out = []
    for s in range(seeds):
        blk = slice(s * n_chunks, (s + 1) * n_chunks)
        out.append(
            Counts(
                data["tested"][blk].sum(axis=0),
                data["failed"][blk, model].sum(axis=0),
                data["wrong"][blk, model].sum(axis=0),
            )
        )
    return out


def _num(v) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


def _digit_names(n_answer: int) -> list[str]:
    """Answer token i (the sign first, A0 last) -> its name A{n+1-i}."""
    return [f"A{n_answer - 1 - i}" for i in range(n_answer)]


def _figure(per_seed: list, rows: list[int]) -> dict:
    """{class: tested, failed, accuracy, interval, seeds, digits} for keep-set rows `rows` (one row: a figure
    of one set; several: the random sets, pooled) over the seeds: accuracy is the mean of the per-seed (and
    per-set) accuracies, interval the 95% Student-t interval over them, or with one value Wilson's interval on
    the pooled counts."""
    from analysis.intervals import mean_interval, wilson

    tested = np.stack([c.tested for c in per_seed])  # [S, C]
    failed = np.stack([c.failed[rows] for c in per_seed])  # [S, R, C]
    acc = np.stack([c.accuracy()[rows] for c in per_seed]).reshape(-1, tested.shape[1])  # [S*R, C]
    tok = np.stack([c.token_accuracy()[rows] for c in per_seed])  # [S, R, C, A]
    t_all = tested.sum(axis=0) * len(rows)
    f_all = failed.sum(axis=(0, 1))
    spread = mean_interval(acc, axis=0)
    pooled = wilson(t_all - f_all, t_all)
    names = _digit_names(tok.shape[-1])
    out = {}
    for c, cls in enumerate(QCLASS_NAMES):
        if not tested[0, c]:
            continue
        one = len(acc) == 1
        lo, hi = (pooled.lo[c], pooled.hi[c]) if one else (spread.lo[c], spread.hi[c])
        digits = np.nanmean(tok[:, :, c].reshape(-1, tok.shape[-1]), axis=0)
        out[cls] = {
            "tested": int(t_all[c]),
            "failed": int(f_all[c]),
            "accuracy": _num(spread.value[c]),
            "interval": [_num(lo), _num(hi)],
            "interval_kind": "wilson" if one else "seeds-t",
            "seeds": len(per_seed),
            "digits": {n: _num(v) for n, v in zip(names, digits, strict=True)},
        }
    return out


def _completeness(per_seed: list, names: tuple[str, ...]) -> dict:
    """Per class: completeness = acc(circuit) / acc(baseline) (the share of the baseline accuracy the circuit
    recovers) and normalised = (acc(circuit) - acc(empty)) / (acc(baseline) - acc(empty)), on the counts pooled
    over the seeds; per answer digit too."""
    from analysis.interventions import Counts, completeness

    pooled = per_seed[0]
    for c in per_seed[1:]:
        pooled = Counts(pooled.tested + c.tested, pooled.failed + c.failed, pooled.wrong + c.wrong)
    comp = completeness(pooled, names.index("circuit"), names.index("baseline"), names.index("empty"))
    digit_names = _digit_names(pooled.wrong.shape[-1])
    return {
        cls: {
            "completeness": _num(comp["completeness"][c]),
            "normalised": _num(comp["normalised"][c]),
            "digits": {n: _num(v) for n, v in zip(digit_names, comp["completeness_token"][c], strict=True)},
        }
        for c, cls in enumerate(QCLASS_NAMES)
        if pooled.tested[c]
    }


def _class_accuracy(counts) -> dict:
    acc = counts.accuracy()[0]
    return {cls: _num(acc[c]) for c, cls in enumerate(QCLASS_NAMES) if counts.tested[c]}


def _greedy(job: Job, settings: Settings, means: Means) -> list[dict]:
    """The greedy restoration on the driver (seed 0, every chunk summed): the curve as JSON records."""
    from analysis.interventions import Replace, greedy_restoration, keep_counts, keep_mask, node_universe
    from arith.weights import load_model

    m = job.model
    net = load_model(m.weights, m.shape, "cpu")
    universe = node_universe(m.shape)
    bounds = _chunks(len(job.x), settings.chunk)
    how = Replace(settings.replace)

    def evaluate(keep):
        total = None
        for c, (lo, hi) in enumerate(bounds):
            part = keep_counts(net, *_questions(job.x, job.y, job.op, lo, hi), keep, means, how, seed=0, block=c)
            total = part if total is None else total + part
        return total

    r = greedy_restoration(evaluate, keep_mask(universe, job.nodes), settings.restore)
    added = [None, *(universe[i].name() for i in r.added)]
    return [{"added": a, "accuracy": _class_accuracy(r.counts[i])} for i, a in enumerate(added)]


def _reduce_sufficiency(job: Job, settings: Settings, group: st.SufficiencyGroup, names) -> dict:
    data = group.read_checked()
    n_chunks = len(_chunks(len(job.x), settings.chunk))
    model = _seed_counts(data, 0, settings.seeds, n_chunks)
    twin = _seed_counts(data, 1, settings.seeds, n_chunks)
    row = {n: i for i, n in enumerate(names)}
    random_rows = [i for n, i in row.items() if n.startswith("random")]
    greedy = stored_attributes(group).get("greedy") or {}
    out = {
        "model": job.model.name,
        "kind": "sufficiency",
        "replace": settings.replace,
        "nodes": [n.name() for n in job.nodes],
        "node_source": job.node_source,
        "questions": job.questions,
        "seeds": settings.seeds,
        "baseline": _figure(model, [row["baseline"]]),
        "circuit": _figure(model, [row["circuit"]]),
        "random_circuits": _figure(model, random_rows) if random_rows else {},
        "complement": _figure(model, [row["complement"]]),
        "empty": _figure(model, [row["empty"]]),
        "untrained_twin": _figure(twin, [row["circuit"]]),
        "untrained_twin_rows": {n: _figure(twin, [row[n]]) for n in ("baseline", "circuit", "complement", "empty")},
        "completeness": _completeness(model, names),
        "restoration": {
            "groups": {n.split(":", 1)[1]: _figure(model, [i]) for n, i in row.items() if n.startswith("restore:")},
            "greedy": greedy.get("curve", []),
        },
    }
    return out


# ------------------------------------------------------------------------------------------------ patching


def _patch_digits(job: Job, settings: Settings) -> tuple[int, ...]:
    """The answer digits mapped: --digit K, else A0 .. A{n} (the sign token is left out)."""
    if settings.digit is not None:
        return (settings.digit,)
    return tuple(range(job.model.n_digits + 1))


def _change_of(k: int, n_digits: int):
    """The controlled change for answer digit k: the x operand's digit in column k (the top column for the
    carry digit A{n})."""
    from analysis.interventions import Change

    return Change("x", min(k, n_digits - 1))


@dataclass(frozen=True, eq=False)
class PatchWork:
    model: Model
    group: st.PatchGroup
    x: np.ndarray
    y: np.ndarray
    op: np.ndarray
    bounds: tuple[tuple[int, int], ...]
    digits: tuple[int, ...]
    path: bool = False
    device: str = "auto"

    def key(self, k: int) -> str:
        return f"study-patch-{self.model.sha256[:12]}-{self.group.location}-{k}"

    def __call__(self, k: int) -> tuple[int, dict[str, int]]:
        from analysis.interventions import flip_counts, matched_pairs, node_universe, null_pairs, path_flip_counts

        m, g = self.model, self.group
        s, c = divmod(k, len(self.bounds))
        q = _questions(self.x, self.y, self.op, *self.bounds[c])
        nets = (worker_model(m.weights, m.sha256, m.shape, self.device), _twin(m.shape, s, self.device))
        universe = node_universe(m.shape)
        heads = [n for n in universe if n.is_head]
        K = len(self.digits)
        tested = np.zeros((st.MODELS, K, 2), np.int64)
        changed = np.zeros((st.MODELS, K, 2), np.int64)
        flips = np.zeros((st.MODELS, K, 2, g.n_nodes), np.int64)
        path_flips = np.zeros((st.MODELS, K, 2, max(g.n_paths, 1)), np.int64)
        for j, d in enumerate(self.digits):
            pairs = (matched_pairs(*q, _change_of(d, m.n_digits), s, c), null_pairs(*q, d, s, c))
            for i, net in enumerate(nets):
                for t, (clean, corrupt) in enumerate(pairs):
                    f = flip_counts(net, clean, corrupt, universe, d)
                    tested[i, j, t], changed[i, j, t], flips[i, j, t] = f.tested, f.changed, f.flips
                    if self.path:
                        _paths, pf = path_flip_counts(net, clean, corrupt, heads, d)
                        path_flips[i, j, t] = pf.flips
        g.write_rows(k, {"tested": tested, "changed": changed, "flips": flips, "path_flips": path_flips})
        return k, {"pairs": int(tested.sum())}


def _paths(job: Job) -> list:
    from analysis.interventions import node_universe

    nL = job.model.shape.n_layers
    return [(h, r) for h in node_universe(job.model.shape) if h.is_head for r in range(h.layer, nL)]


def _patch_group(job: Job, settings: Settings) -> st.PatchGroup:
    from analysis.interventions import node_universe

    n_blocks = settings.seeds * len(_chunks(len(job.x), settings.chunk))
    digits = "all" if settings.digit is None else f"A{settings.digit}"
    path = f"{st.GROUP}/patch/{'path' if settings.path else 'nodes'}/{digits}"
    n_paths = len(_paths(job)) if settings.path else 0
    k = len(_patch_digits(job, settings))
    return st.PatchGroup(str(job.store), path, n_blocks, k, len(node_universe(job.model.shape)), n_paths)


def _reduce_patch(job: Job, settings: Settings, group: st.PatchGroup) -> dict:
    """Per answer digit: the flip map (every node: flip rate over the pairs of every seed and chunk, with
    Wilson's 95% interval, against the matched null), for the model and its twin; with --path the head -> MLP
    paths' map too."""
    from analysis.interventions import Flips, flip_map, node_universe

    data = group.read_checked()
    universe = node_universe(job.model.shape)
    path_names = [Node.mlp(h.position, r) for h, r in _paths(job)] if settings.path else []
    path_labels = [f"{h.name()}->L{r}MLP" for h, r in _paths(job)] if settings.path else []

    def flips(model: int, j: int, t: int, key: str) -> Flips:
        return Flips(
            int(data["tested"][:, model, j, t].sum()),
            data[key][:, model, j, t].sum(axis=0),
            int(data["changed"][:, model, j, t].sum()),
        )

    def maps(model: int, key: str, nodes, labels=None) -> dict:
        out = {}
        for j, d in enumerate(_patch_digits(job, settings)):
            recs = flip_map(flips(model, j, 0, key), flips(model, j, 1, key), nodes)
            if labels is not None:
                recs = [r | {"node": lab} for r, lab in zip(recs, labels, strict=True)]
            change = _change_of(d, job.model.n_digits)
            out[f"A{d}"] = {
                "change": f"{change.kind}{change.column}",
                "pairs": int(data["tested"][:, model, j, 0].sum()),
                "null_pairs": int(data["tested"][:, model, j, 1].sum()),
                "changed": int(data["changed"][:, model, j, 0].sum()),
                "nodes": recs,
            }
        return out

    out = {
        "model": job.model.name,
        "kind": "patch",
        "questions": job.questions,
        "seeds": settings.seeds,
        "digits": maps(0, "flips", universe),
        "untrained_twin": maps(1, "flips", universe),
    }
    if settings.path:
        n = len(path_names)
        out["paths"] = maps(0, "path_flips", path_names, path_labels) if n else {}
        out["untrained_twin_paths"] = maps(1, "path_flips", path_names, path_labels) if n else {}
    return out


# ------------------------------------------------------------------------------------------------ probes


def probe_sites(job: Job):
    """The probe sites: the residual stream before and after every layer at every position (one width)."""
    from analysis.probes import sites

    return sites(job.model.shape, ("resid_pre", "resid_post"))


def probe_variables(job: Job, settings: Settings) -> tuple[str, ...]:
    """--variable names, else those of column k (--digit, default 0): both operand digits, the carries in and
    out, the pair summing to 9, and for a model trained on subtraction the borrow and the sign."""
    if settings.variables:
        return settings.variables
    k = min(settings.digit or 0, job.model.n_digits - 1)
    out = [f"x{k}", f"y{k}", f"carry_in{k}", f"carry_out{k}", f"sum9_{k}"]
    if SUB in job.model.ops:
        out += [f"borrow{k}", "sign"]
    return tuple(out)


@dataclass(frozen=True, eq=False)
class ProbeWork:
    model: Model
    group: st.ActsGroup
    x: np.ndarray
    y: np.ndarray
    op: np.ndarray
    bounds: tuple[tuple[int, int], ...]
    device: str = "auto"

    def key(self, k: int) -> str:
        return f"study-probe-{self.model.sha256[:12]}-{self.group.location}-{k}"

    def __call__(self, k: int) -> tuple[int, dict[str, int]]:
        from analysis.probes import capture, sites

        m, g = self.model, self.group
        q = _questions(self.x, self.y, self.op, *self.bounds[k])
        where = sites(m.shape, ("resid_pre", "resid_post"))
        acts = np.zeros((st.MODELS, g.chunk, g.n_sites, g.width), np.float32)
        nets = (worker_model(m.weights, m.sha256, m.shape, self.device), _twin(m.shape, 0, self.device))
        for i, net in enumerate(nets):
            acts[i, : len(q[0])] = np.stack(capture(net, *q, where), axis=1)
        g.write_rows(k, {"n_rows": np.int64(len(q[0])), "acts": acts})
        return k, {"questions": len(q[0])}


def _probe_group(job: Job, settings: Settings) -> st.ActsGroup:
    bounds = _chunks(len(job.x), settings.chunk)
    rows = tuple(hi - lo for lo, hi in bounds)
    width = job.model.shape.d_model
    path = f"{st.GROUP}/probe/acts"
    return st.ActsGroup(str(job.store), path, len(bounds), max(rows), len(probe_sites(job)), width, rows)


def _reduce_probe(job: Job, settings: Settings, group: st.ActsGroup) -> dict:
    """Fit the probes on the driver from the stored activations: per variable and site, the balanced accuracy
    (mean over seeds, with its 95% interval over seeds) against its permutation null, for the model and its twin;
    the transfer matrix of the first variable across the sites."""
    from analysis.intervals import mean_interval
    from analysis.probes import labels, transfer_matrix
    from analysis.probes import probe_sites as fit_sites

    data = group.read_checked()
    acts = np.concatenate([data["acts"][b, :, : group.rows[b]] for b in range(group.n_blocks)], axis=1)
    where = probe_sites(job)
    variables = probe_variables(job, settings)

    def maps(model: int) -> dict:
        feats = [acts[model, :, i] for i in range(len(where))]
        out = {}
        for v in variables:
            y = labels(job.x, job.y, job.op, v)
            runs = [fit_sites(feats, y, s, v, settings.folds, settings.perm) for s in range(settings.seeds)]
            acc = mean_interval(np.array([[p.accuracy for p in r] for r in runs]), axis=0)
            null = np.array([[p.null_mean for p in r] for r in runs])
            with np.errstate(invalid="ignore"):
                null_mean = np.nanmean(null, axis=0) if len(null) else null
            out[v] = [
                {
                    "site": s.name(),
                    "accuracy": _num(acc.value[i]),
                    "interval": [_num(acc.lo[i]), _num(acc.hi[i])],
                    "null": _num(null_mean[i]),
                    "null_hi": _num(runs[0][i].null_hi),
                    "p_value": _num(runs[0][i].p_value),
                    "chance": _num(runs[0][i].chance),
                }
                for i, s in enumerate(where)
            ]
        return out

    first = variables[0]
    feats = [acts[0, :, i] for i in range(len(where))]
    matrix = transfer_matrix(feats, labels(job.x, job.y, job.op, first), 0, first)
    return {
        "model": job.model.name,
        "kind": "probe",
        "questions": job.questions,
        "seeds": settings.seeds,
        "sites": [s.name() for s in where],
        "variables": maps(0),
        "untrained_twin": maps(1),
        "transfer": {
            "variable": first,
            "sites": [s.name() for s in where],
            "matrix": [[_num(v) for v in row] for row in matrix],
        },
    }


# ------------------------------------------------------------------------------------------------ the stages


@dataclass(frozen=True)
class _Plan:
    """What one job's run and reduction share: the group, its fingerprint, the work (None for a reduction)."""

    group: object
    fingerprint: dict
    names: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)


class _StudyStage:
    """The shared shape of the three study stages (jobs.stages.template.Stage): `run` prepares the group under its
    lock, runs the pending blocks through `run_checked` and reduces; `reduce` reads a finished store alone."""

    name = "study"
    kind = ""
    MAX_TASKS = 16  # sizes a SLURM cluster

    def __init__(self, settings: Settings):
        self.settings = settings

    def tasks(self, job: Job) -> int:
        return min(self.MAX_TASKS, self._group(job).n_blocks)

    # subclass hooks
    def _group(self, job: Job):
        raise NotImplementedError

    def _work(self, job: Job, group):
        raise NotImplementedError

    def _reduce(self, job: Job, group) -> dict:
        raise NotImplementedError

    def _after_blocks(self, job: Job, group) -> None:
        """Driver work after the blocks, before the reduction (sufficiency: the greedy restoration)."""

    def run(self, job: Job, cluster: ClusterHandle) -> dict:
        s = self.settings
        group = self._group(job)
        with group_lock(job.store, group.path, wait=s.wait):
            group = prepare_group(group, group.specs(), _fingerprint(job, s), s.fresh)
            work = self._work(job, group)

            def reduce():
                self._after_blocks(job, group)
                return self._reduce(job, group)

            result = run_checked(
                cluster.client,
                work,
                reduce,
                retries=s.retries,
                resources=cluster.task_resources,
                progress=s.progress,
                desc=f"{job.model.name} study {self.kind}",
            )
        consolidate(job.store)
        return result

    def reduce(self, job: Job) -> dict:
        group = self._group(job)
        again = f"run `varith study {self.kind} {job.given or job.model.weights}`"
        open_checked(group, _fingerprint(job, self.settings), f"no {self.kind} study there", again)
        return self._reduce(job, group)


class SufficiencyStage(_StudyStage):
    """Circuit sufficiency: keep-set rows (baseline, circuit, complement, empty, random sets, restoration groups)
    for the model and its twin per block into `study/sufficiency/<replace>`; the greedy restoration on the driver
    after the blocks (kept in the group's `greedy` attribute)."""

    name = "study-sufficiency"
    kind = "sufficiency"
    work = (SufficiencyWork,)

    def _group(self, job: Job) -> st.SufficiencyGroup:
        names, _keep = sufficiency_rows(job, self.settings)
        return _sufficiency_group(job, self.settings, len(names))

    def _work(self, job: Job, group) -> SufficiencyWork:
        s = self.settings
        _names, keep = sufficiency_rows(job, s)
        means, twins = _driver_means(job, s)
        bounds = _chunks(len(job.x), s.chunk)
        return SufficiencyWork(job.model, group, job.x, job.y, job.op, bounds, keep, means, twins, s.replace, s.device)

    def _after_blocks(self, job: Job, group) -> None:
        s = self.settings
        held = stored_attributes(group).get("greedy") or {}
        if s.restore and held.get("k") != s.restore:
            group.set_attribute("greedy", {"k": s.restore, "curve": _greedy(job, s, _model_means(job))})

    def _reduce(self, job: Job, group) -> dict:
        names, _keep = sufficiency_rows(job, self.settings)
        out = _reduce_sufficiency(job, self.settings, group, names)
        held = stored_attributes(group).get("greedy") or {}
        out["restoration"]["greedy"] = held.get("curve", []) if held.get("k") == self.settings.restore else []
        return out


class PatchStage(_StudyStage):
    """Matched-pair patching: every node's flips of each answer digit on the test and the matched null pairs,
    for the model and its twin, per block into `study/patch/<nodes|path>`."""

    name = "study-patch"
    kind = "patch"
    work = (PatchWork,)

    def _group(self, job: Job) -> st.PatchGroup:
        return _patch_group(job, self.settings)

    def _work(self, job: Job, group) -> PatchWork:
        s = self.settings
        bounds = _chunks(len(job.x), s.chunk)
        return PatchWork(job.model, group, job.x, job.y, job.op, bounds, _patch_digits(job, s), s.path, s.device)

    def _reduce(self, job: Job, group) -> dict:
        return _reduce_patch(job, self.settings, group)


class ProbeStage(_StudyStage):
    """Probes: the blocks capture the residual stream (model and twin) into `study/probe/acts`; the probes are
    fitted on the driver from the stored activations (one block per question chunk: seeds only change the
    folds and permutations of the fits)."""

    name = "study-probe"
    kind = "probe"
    work = (ProbeWork,)

    def _group(self, job: Job) -> st.ActsGroup:
        return _probe_group(job, self.settings)

    def _work(self, job: Job, group) -> ProbeWork:
        s = self.settings
        return ProbeWork(job.model, group, job.x, job.y, job.op, _chunks(len(job.x), s.chunk), s.device)

    def _reduce(self, job: Job, group) -> dict:
        return _reduce_probe(job, self.settings, group)


STAGES = {"sufficiency": SufficiencyStage, "patch": PatchStage, "probe": ProbeStage}


# ------------------------------------------------------------------------------------------------ jobs


def weights_of(paths) -> list[Path]:
    """The weights files named: a `.pth`, a run folder (its `<folder>.pth`), or a runs folder (every run folder
    in it with its weights); one InputError line for a path that names none."""
    out: list[Path] = []
    for given in paths:
        p = Path(given)
        if p.is_file():
            out.append(p)
        elif p.is_dir() and (p / f"{p.name}.pth").is_file():
            out.append(p / f"{p.name}.pth")
        elif p.is_dir():
            found = sorted(d / f"{d.name}.pth" for d in p.iterdir() if d.is_dir() and (d / f"{d.name}.pth").is_file())
            if not found:
                raise InputError(f"{given}: no run folders with weights (<name>/<name>.pth) in it")
            out += found
        else:
            raise InputError(f"{given}: no such weights file or runs folder")
    return out


def study_nodes(weights: Path, model: Model, spec: str) -> tuple[tuple[Node, ...], str]:
    """The node set: `behavior` (the behaviour file beside the weights), `maths` (the maths file's nodes with an
    Algo tag) or a file of names; one InputError line when missing, empty or naming a node the model lacks."""
    from analysis.algo import record_node
    from analysis.behavior import check_nodes_fit, load_records
    from analysis.study_nodes import parse_node_lines
    from jobs.runs.rundir import RunDir

    run = RunDir.beside(weights)
    shape = model.shape
    if spec in NODE_SOURCES:
        path = run.behavior_json if spec == "behavior" else run.maths_json
        if not path.is_file():
            make = "ablate" if spec == "behavior" else "algo"
            raise InputError(f"{spec} file {path}: missing; run `varith {make} {weights}` first, or pass --nodes FILE")
        records = load_records(path)
        if spec == "maths":
            records = [r for r in records if any(str(t).startswith("Algo:") for t in r.get("tags", []))]
        if not records:
            raise InputError(f"{spec} file {path}: no nodes to keep")
        check_nodes_fit(records, path, shape.n_layers, shape.n_heads, model.layout.n_ctx)
        return tuple(sorted({record_node(r) for r in records})), str(path)
    path = Path(spec)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"node file {spec}: unreadable ({type(exc).__name__})") from None
    nodes = parse_node_lines(text.splitlines(), spec, shape.n_layers, shape.n_heads, model.layout.n_ctx)
    return tuple(nodes), str(path)


def job_for(
    kind: str,
    weights: str | Path,
    nodes: str = "behavior",
    question_file: str | None = None,
    store: str | Path | None = None,
) -> Job:
    """One model's study of `kind`: its questions (the ablation's varied questions, or a question file), its node
    set (sufficiency only), its store and `<name>_<kind>.json` beside the weights."""
    from jobs.stages import ablate as ablation

    if kind not in KINDS:
        raise InputError(f"unknown study {kind!r} (expected one of {', '.join(KINDS)})")
    ab = ablation.job_for(weights, question_file, store=store)
    chosen, source = study_nodes(Path(weights), ab.model, nodes) if kind == "sufficiency" else ((), "")
    out = Path(weights).resolve().parent / f"{ab.model.name}_{kind}.json"
    return Job(kind, ab.model, ab.x, ab.y, ab.op, ab.store, out, chosen, source, ab.source, str(weights))


def write_outputs(job: Job, result: dict, pictures: bool = True) -> list[Path]:
    """`<name>_<kind>.json` and its picture `<name>_<kind>.png` (analysis.study_plots)."""
    job.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(job.out, (json.dumps(result, indent=1) + "\n").encode())
    written = [job.out]
    if pictures:
        from analysis.study_plots import draw

        written.append(draw(result, job.picture))
    return written


def result_sha256(result: dict) -> str:
    return hashlib.sha256(json.dumps(result, sort_keys=True).encode()).hexdigest()
