"""Ablation runs (docs/reference_facts.md F7): survey, useful positions and node ablations farmed as blocks over
Dask into `<name>.zarr/ablate/` (jobs.stages.ablate_store), then reduced to `<name>_behavior.json`.

Stages, each a group of blocks run through `hpc.blocks.run_checked` (done flags, checks, redo of damaged
blocks, deterministic tasks, so a killed worker or a restarted driver changes nothing):
1. questions: the driver stores the question set (varied questions, or a question file) once;
2. survey: per chunk of questions, the clean run (answered questions, activation sums, attention, the stored
   activations); the driver reduces the sums into the means of the mode (`ablate/means`);
3. positions: per chunk, failures under the residual overwrite at each position -> the useful positions;
4. nodes: per (chunk, block of node groups), failed flags and predicted answers of each node's ablation.
The JSON (and its sidecar and pictures) is a pure reduction of the store: `reduce_only` rebuilds it with no
forward pass. Several models share one cluster (`run_many`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np
import torch

from analysis.ablate import Means, Node
from analysis.ablation import CHUNK, MeanRule, candidate_nodes, node_failures, position_failures, survey
from analysis.behavior import behavior_records, read_sidecar, write_sidecar
from arith import complexity
from arith.errors import InputError
from arith.files import sha256_file
from arith.model import ModelShape
from arith.names import sidecar_path
from arith.vocab import ADD, Layout, encode
from hpc.blocks import run_checked
from hpc.cluster import ClusterSpec
from hpc.store import consolidate, group_lock, open_checked, prepare_group
from jobs.stages import ablate_store as st
from jobs.stages.template import FunctionStage, StageSettings, run_stage, worker_model


@dataclass(frozen=True)
class Model:
    """One model to analyse: weights, shape, digits, the operations it was trained on."""

    weights: str  # absolute path
    sha256: str
    name: str
    shape: ModelShape
    n_digits: int
    ops: tuple[int, ...]

    @property
    def layout(self) -> Layout:
        return Layout(self.n_digits)

    @property
    def pure_add(self) -> bool:
        return tuple(self.ops) == (ADD,)


@dataclass(frozen=True)
class Settings(StageSettings):
    """The ablation's own settings besides those every stage shares (wait: for another run writing this mode's
    groups of the store)."""

    rule: MeanRule = MeanRule.CORRECTED
    save_mlp: bool = False
    pca: bool = False


def _tokens(x, y, op) -> torch.Tensor:
    return torch.from_numpy(encode(x, y, op)).long()


def questions_sha256(x: np.ndarray, y: np.ndarray, op: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in (x, y, op):
        h.update(np.ascontiguousarray(a, dtype=np.uint8).tobytes())
        h.update(b"|")
    return h.hexdigest()


@cache
def _kept_tokens(survey_group: st.SurveyGroup, questions: st.QuestionsGroup, c: int, token: str) -> torch.Tensor:
    """Chunk c's answered questions as tokens (read once per worker process; `token` names the weights and
    questions, so a store rebuilt for others is read again)."""
    x, y, op = questions.read()
    correct = survey_group.answered(c)
    lo, hi = c * CHUNK, c * CHUNK + len(correct)
    return _tokens(x[lo:hi][correct], y[lo:hi][correct], op[lo:hi][correct])


@cache
def _means(group: st.MeansGroup, token: str) -> Means:
    """The stored means (read once per worker process; `token` names the weights, questions and mode)."""
    data = group.read_checked()
    L = group.shape.n_layers
    return Means(
        [torch.from_numpy(data["z"][0, i]) for i in range(L)],
        [torch.from_numpy(data["mlp"][0, i]) for i in range(L)],
        [torch.from_numpy(data["resid"][0, i]) for i in range(L)],
    )


@dataclass(frozen=True)
class SurveyWork:
    model: Model
    questions: st.QuestionsGroup
    group: st.SurveyGroup
    device: str = "auto"

    def key(self, k: int) -> str:
        return f"ablate-survey-{self.model.sha256[:12]}-{self.group.location}-{k}"

    def __call__(self, k: int) -> tuple[int, dict[str, int]]:
        m = self.model
        net = worker_model(m.weights, m.sha256, m.shape, self.device)
        x, y, op = self.questions.read()
        rows = st.chunk_rows(self.questions.n_questions, k)
        lo = k * CHUNK
        tok = _tokens(x[lo : lo + rows], y[lo : lo + rows], op[lo : lo + rows]).to(next(net.parameters()).device)
        g = self.group
        keep: dict = {}

        def on_chunk(_start, clean, ok):
            keep["clean"], keep["ok"] = clean, ok

        sv = survey(net, tok, m.layout, MeanRule.CORRECTED, chunk=CHUNK, on_chunk=on_chunk)
        clean, ok = keep["clean"], keep["ok"]
        every, kept = torch.arange(rows, device=tok.device), torch.nonzero(ok).squeeze(1)

        def sums(ts, sel):
            return np.stack([t[sel].double().sum(0).cpu().numpy() for t in ts])

        def padded(a: np.ndarray, dtype) -> np.ndarray:
            out = np.zeros((CHUNK, *a.shape[1:]), dtype=dtype)
            out[: len(a)] = a
            return out

        out = {
            "n_rows": np.int64(rows),
            "correct": padded(sv.correct.astype(np.uint8), np.uint8),
            "pred": padded(sv.pred, np.uint8),
            "n_kept": np.int64(len(kept)),
            "attn_sum": np.stack([p[kept].double().sum(0).cpu().numpy() for p in clean.pattern]),
            "resid": padded(torch.stack(clean.resid_post, dim=1).float().cpu().numpy(), np.float32),
            "head_z": padded(torch.stack(clean.z, dim=1).float().cpu().numpy(), np.float32),
        }
        for name, ts in (("z", clean.z), ("mlp", clean.mlp_post), ("resid", clean.resid_post)):
            out[f"sum_{name}_all"] = sums(ts, every)
            out[f"sum_{name}_kept"] = sums(ts, kept)
        if g.save_mlp:
            out["mlp"] = padded(torch.stack(clean.mlp_post, dim=1).float().cpu().numpy(), np.float32)
        g.write_rows(k, out)
        return k, {"questions": rows, "answered": len(kept)}


@dataclass(frozen=True)
class PositionWork:
    model: Model
    questions: st.QuestionsGroup
    survey: st.SurveyGroup
    means: st.MeansGroup
    group: st.PositionsGroup
    token: str = ""
    device: str = "auto"

    def key(self, k: int) -> str:
        return f"ablate-positions-{self.model.sha256[:12]}-{self.group.location}-{k}"

    def __call__(self, k: int) -> tuple[int, dict[str, int]]:
        m = self.model
        net = worker_model(m.weights, m.sha256, m.shape, self.device)
        tok = _kept_tokens(self.survey, self.questions, k, self.token).to(next(net.parameters()).device)
        means = _means(self.means, self.token)
        fails = position_failures(net, tok, m.layout, means) if len(tok) else np.zeros(m.layout.n_ctx)
        self.group.write_rows(k, {"failures": np.asarray(fails, dtype=np.int64)})
        return k, {"questions": len(tok)}


@dataclass(frozen=True)
class NodeWork:
    model: Model
    questions: st.QuestionsGroup
    survey: st.SurveyGroup
    means: st.MeansGroup
    group: st.NodesGroup
    nodes: tuple[Node, ...]
    token: str = ""
    device: str = "auto"

    def key(self, k: int) -> str:
        return f"ablate-nodes-{self.model.sha256[:12]}-{self.group.location}-{k}"

    def __call__(self, k: int) -> tuple[int, dict[str, int]]:
        m, g = self.model, self.group
        c, b = g.block(k)
        net = worker_model(m.weights, m.sha256, m.shape, self.device)
        tok = _kept_tokens(self.survey, self.questions, c, self.token).to(next(net.parameters()).device)
        nodes = list(self.nodes[b * g.nodes_per_block : (b + 1) * g.nodes_per_block])
        failed = np.zeros((g.nodes_per_block, CHUNK), np.uint8)
        pred = np.zeros((g.nodes_per_block, CHUNK, m.n_digits + 2), np.uint8)
        if nodes and len(tok):
            f, p = node_failures(net, tok, m.layout, _means(self.means, self.token), nodes)
            failed[: len(nodes), : len(tok)] = f
            pred[: len(nodes), : len(tok)] = p
        g.write_rows(k, {"failed": failed, "pred": pred})
        return k, {"evaluations": len(nodes) * len(tok), "failures": int(failed.sum())}


# ------------------------------------------------------------------------------------------------ the driver


@dataclass(frozen=True)
class Job:
    model: Model
    x: np.ndarray
    y: np.ndarray
    op: np.ndarray
    store: Path
    out: Path  # the behaviour json
    source: str  # "varied (N random rows)" or the question file

    @property
    def fingerprint(self) -> dict:
        return {
            "layout": st.LAYOUT_VERSION,
            "weights_sha256": self.model.sha256,
            "questions_sha256": questions_sha256(self.x, self.y, self.op),
            "chunk": CHUNK,
        }


def _mode_fp(job: Job, settings: Settings) -> dict:
    return job.fingerprint | {"mode": settings.rule.value}


def _path(settings: Settings, stage: str) -> str:
    """`ablate/<mode>/<stage>`: the two modes keep their results side by side."""
    return f"{st.GROUP}/{settings.rule.value}/{stage}"


def _nodes_group(job: Job, settings: Settings, n_questions_blocks: int, n_nodes: int, n_kept: tuple[int, ...]):
    npb = (job.model.shape.n_heads + 1) * st.NODE_GROUPS_PER_BLOCK
    n_nb = max(1, -(-n_nodes // npb))
    root = str(Path(job.store).resolve())
    path = _path(settings, "nodes")
    return st.NodesGroup(root, path, n_questions_blocks * n_nb, job.model.n_digits, n_nb, npb, n_kept)


def _groups(job: Job, settings: Settings):
    m, s = job.model, job.model.shape
    root = str(Path(job.store).resolve())
    q = len(job.op)
    nq = st.n_chunks(q)
    questions = st.QuestionsGroup(root, _path(settings, "questions"), 1, q, m.n_digits)
    survey_group = st.SurveyGroup(root, _path(settings, "survey"), nq, q, m.n_digits, s, settings.save_mlp)
    means = st.MeansGroup(root, _path(settings, "means"), 1, m.n_digits, s)
    return questions, survey_group, means


def _stage(client, work, reduce, settings: Settings, desc: str, resources: dict | None):
    return run_checked(
        client, work, reduce, retries=settings.retries, resources=resources, progress=settings.progress, desc=desc
    )


def _reduce_means(survey_group: st.SurveyGroup, rule: MeanRule) -> dict[str, np.ndarray]:
    data = survey_group.read_checked()
    n_all, n_kept = int(data["n_rows"].sum()), int(data["n_kept"].sum())
    which, n = ("kept", n_kept) if rule is MeanRule.CORRECTED and n_kept else ("all", n_all)
    means = {
        name: (data[f"sum_{name}_{which}"].sum(0) / max(n, 1)).astype(np.float32) for name in ("z", "mlp", "resid")
    }
    if rule is MeanRule.COMPAT:  # layer 0's means reused for every layer (docs/reference_facts.md F10 item 3)
        means = {k: np.broadcast_to(v[:1], v.shape).copy() for k, v in means.items()}
    means["attention"] = (data["attn_sum"].sum(0) / max(n_kept, 1)).astype(np.float32)
    means["n_kept"] = np.int64(n_kept)
    return means


def analyse(client, job: Job, settings: Settings, resources: dict | None = None) -> list[dict]:
    """Every stage of one model (resuming what the store has), then the reduction. Returns the records.
    `client`: a Dask client, or None to run the blocks in this process. Holds `ablate/<mode>` of the store
    meanwhile (one writer per group, hpc.store.group_lock: another run's is waited for, or refused)."""
    with group_lock(job.store, f"{st.GROUP}/{settings.rule.value}", wait=settings.wait):
        return _analyse(client, job, settings, resources)


def _analyse(client, job: Job, settings: Settings, resources: dict | None = None) -> list[dict]:
    m = job.model
    fp = _mode_fp(job, settings)
    token = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]
    questions, survey_group, means = _groups(job, settings)
    prepare_group(questions, questions.specs(), job.fingerprint, settings.fresh)
    if questions.pending():
        questions.write_rows(0, {"x": job.x, "y": job.y, "op": job.op})
    prepare_group(survey_group, survey_group.specs(), job.fingerprint | {"save_mlp": settings.save_mlp}, settings.fresh)
    work = SurveyWork(m, questions, survey_group, settings.device)
    _stage(client, work, survey_group.read_checked, settings, f"{m.name} survey", resources)
    prepare_group(means, means.specs(), fp, settings.fresh)
    if means.pending():
        means.write_rows(0, _reduce_means(survey_group, settings.rule))
    n_kept = tuple(int(v) for v in survey_group.read_checked()["n_kept"])
    if sum(n_kept) == 0:
        return []
    positions = st.PositionsGroup(
        questions.root, _path(settings, "positions"), survey_group.n_blocks, m.layout.n_ctx, n_kept
    )
    prepare_group(positions, positions.specs(), fp, settings.fresh)
    work = PositionWork(m, questions, survey_group, means, positions, token, settings.device)
    reduce = lambda: positions.read_checked()["failures"].sum(0)  # noqa: E731
    fails = _stage(client, work, reduce, settings, f"{m.name} positions", resources)
    useful = [int(p) for p in np.flatnonzero(fails)]
    nodes = candidate_nodes(useful, m.shape.n_layers, m.shape.n_heads)
    table = [[n.position, n.layer, int(n.is_head), n.num] for n in nodes]
    nodes_group = _nodes_group(job, settings, survey_group.n_blocks, len(nodes), n_kept)
    prepare_group(nodes_group, nodes_group.specs(), fp | {"nodes": table}, settings.fresh)
    _write_node_table(nodes_group, table)
    work = NodeWork(m, questions, survey_group, means, nodes_group, tuple(nodes), token, settings.device)
    _stage(client, work, nodes_group.read_checked, settings, f"{m.name} nodes", resources)
    if settings.pca:
        heads = [r for r in reduce_store(job, replace(settings, pca=False)) if r["is_head"]]
        group = _pca_group(job, settings, len(heads))
        prepare_group(group, group.specs(), fp | {"pca_heads": _head_table(heads)}, settings.fresh)
        if group.pending():
            group.write_rows(0, {"metrics": _pca_metrics(job, heads)})
    consolidate(questions.root)
    return reduce_store(job, settings)


def _head_table(heads: list[dict]) -> list[list[int]]:
    return [[r["position"], r["layer"], r["num"]] for r in heads]


def _pca_group(job: Job, settings: Settings, n_heads: int) -> st.PcaGroup:
    return st.PcaGroup(str(Path(job.store).resolve()), _path(settings, "pca"), 1, n_heads, job.model.n_digits)


def _pca_metrics(job: Job, heads: list[dict]) -> np.ndarray:
    """PCA metrics [heads, digits, 2 ops, 4] of each useful head's output over the tricase questions (the ops
    the model was not trained on stay zero, so they never tag)."""
    from analysis.ablate import clean_run
    from analysis.pca import metrics
    from arith.suites import tricase
    from arith.weights import load_model

    m = job.model
    model = load_model(m.weights, m.shape)
    out = np.zeros((max(1, len(heads)), m.n_digits, 2, 4))
    for (d, op), (x, y, ops, cases) in tricase(m.n_digits).items():
        if op not in m.ops or not heads:
            continue
        clean = clean_run(model, _tokens(x, y, ops), m.layout)
        for i, r in enumerate(heads):
            z = clean.z[r["layer"]][:, r["position"], r["num"]]  # [N, d_head]
            with torch.inference_mode():
                result = (z @ model.blocks[r["layer"]].attn.W_O[r["num"]]).numpy()
            out[i, d, op] = metrics(result, cases)
    return out


def _write_node_table(group: st.NodesGroup, table: list) -> None:
    import zarr

    g = zarr.open_group(store=group.root, path=group.path, mode="r+", zarr_format=3)
    if g.attrs.get("nodes") != table:
        g.attrs["nodes"] = table


def reduce_store(job: Job, settings: Settings) -> list[dict]:
    """The behaviour records from the store alone (every group read with its checks)."""
    import zarr

    m = job.model
    questions, survey_group, means = _groups(job, settings)
    for group, fp in ((questions, job.fingerprint), (means, _mode_fp(job, settings))):
        open_checked(
            group,
            fp,
            f"no {settings.rule.value} ablation results there",
            "run varith ablate without --reduce-only",
        )
    x, y, op = questions.read()
    sv = survey_group.read_checked()
    mdata = means.read_checked()
    n_kept = tuple(int(v) for v in sv["n_kept"])
    if sum(n_kept) == 0:
        return []
    try:
        node_meta = zarr.open_group(store=questions.root, path=_path(settings, "nodes"), mode="r").attrs
    except FileNotFoundError:
        raise InputError(
            f"store {job.store}: the node ablations of the {settings.rule.value} mode are not there yet; "
            "run varith ablate without --reduce-only"
        ) from None
    table = node_meta.get("nodes") or []
    nodes = [Node(p, layer, not bool(h), num) for p, layer, h, num in table]
    nodes_group = _nodes_group(job, settings, survey_group.n_blocks, len(nodes), n_kept)
    npb, n_nb = nodes_group.nodes_per_block, nodes_group.n_node_blocks
    nd = nodes_group.read_checked()
    # the answered questions, in order, and each node's results over them
    correct = np.concatenate([sv["correct"][c, : st.chunk_rows(len(op), c)] for c in range(survey_group.n_blocks)])
    kept = np.flatnonzero(correct.astype(bool))
    failed = np.zeros((len(nodes), len(kept)), dtype=bool)
    pred = np.zeros((len(nodes), len(kept), m.n_digits + 2), dtype=np.uint8)
    start = 0
    for c, rows in enumerate(n_kept):
        for b in range(n_nb):
            lo, hi = b * npb, min(len(nodes), (b + 1) * npb)
            if hi > lo:
                failed[lo:hi, start : start + rows] = nd["failed"][c * n_nb + b, : hi - lo, :rows].astype(bool)
                pred[lo:hi, start : start + rows] = nd["pred"][c * n_nb + b, : hi - lo, :rows]
        start += rows
    answers = encode(x[kept], y[kept], op[kept])[:, m.layout.answer_start :]
    wrong = pred != answers[None]
    codes = complexity.classify(x[kept], y[kept], op[kept])
    records = behavior_records(
        nodes,
        failed,
        wrong,
        codes,
        mdata["attention"][0],
        m.layout,
        m.pure_add,
        compat=settings.rule is MeanRule.COMPAT,
    )
    if settings.pca:
        from analysis.pca import tag

        heads = [r for r in records if r["is_head"]]
        try:
            values = _pca_group(job, settings, len(heads)).read_checked()["metrics"][0]
        except FileNotFoundError:
            raise InputError(f"store {job.store}: no PCA results yet; run with --pca without --reduce-only") from None
        for i, r in enumerate(heads):
            for d in range(m.n_digits):
                for op in (0, 1):
                    if (t := tag(values[i, d, op], d, op)) is not None:
                        r["tags"].append(t)
    return records


class NoUsefulNodes(InputError):
    """The ablation found no useful node (nothing written: an empty list would replace a behaviour file)."""


def _answered(job: Job, settings: Settings) -> int:
    """How many of the job's questions the model answers, from the store's survey."""
    _questions, survey_group, _means = _groups(job, settings)
    try:
        return int(np.asarray(survey_group.read_checked()["n_kept"]).sum())
    except (FileNotFoundError, InputError):  # InputError: StoreDamage too (a hole is not read as zeros)
        return 0


def mode_of(behavior: str | Path) -> str | None:
    """The ablation mode (corrected, compat) its sidecar says a behaviour file was made by; None if unknown."""
    made = read_sidecar(behavior).get("mode")
    return made if isinstance(made, str) else None


def ablate_command(behavior: str | Path, weights: str | Path) -> str:
    """The `varith ablate` command that made a behaviour file, as its sidecar tells (`--compat`, `--question-file
    F`): `varith ablate WEIGHTS --compat`; plain `varith ablate WEIGHTS` when the sidecar names neither."""
    meta = read_sidecar(behavior)
    words = ["varith ablate", str(weights)]
    if meta.get("mode") == MeanRule.COMPAT.value:
        words.append("--compat")
    questions = meta.get("questions")
    if isinstance(questions, str) and questions.startswith("file "):
        words += ["--question-file", questions.removeprefix("file ")]
    return " ".join(words)


def check_outputs(job: Job, pictures: bool = True) -> None:
    """Before any work (one InputError line, every path left as it is): each file `write_outputs` may write can
    be written: the behaviour file (absent or a behaviour file), its sidecar and, with `pictures`, every view's
    quanta maps (absent or files: not a folder, device, ...)."""
    from analysis.behavior import require_output_file
    from analysis.quanta import behavior_map_paths

    out = Path(job.out)
    require_output_file(out, "behaviour file", records=True)
    require_output_file(sidecar_path(out), "behaviour sidecar")
    if pictures:
        for p in behavior_map_paths(out.parent, job.model.name):
            require_output_file(p, "quanta map")
    store = Path(job.store)
    if store.exists() and not store.is_dir():
        raise InputError(
            f"store {store}: exists and is not a folder; it is left as it is: move it away or pass --store"
        )


def write_outputs(
    job: Job, settings: Settings, records: list[dict], pictures: bool = True, allow_empty: bool = False
) -> list[Path]:
    """`<name>_behavior.json` (the reference's format: a plain JSON array), its sidecar
    `<name>_behavior.meta.json` (mode, question set, weights) and the quanta maps beside them.

    No records: NoUsefulNodes, and nothing is written (a behaviour file already there stays as it was), unless
    `allow_empty` (the tiny regeneration, whose few-step models learn nothing: it tests the plumbing)."""
    m = job.model
    out = Path(job.out)
    if not records and not allow_empty:
        answered = _answered(job, settings)
        kept = f"{out} left as it was" if out.exists() else "no behaviour file written"
        why = (
            f"the model answers none of the {len(job.op)} questions"
            if answered == 0
            else f"no single node's ablation fails any of the {answered} questions it answers (of {len(job.op)})"
        )
        raise NoUsefulNodes(f"{m.name}: {why}; {kept}")
    out.parent.mkdir(parents=True, exist_ok=True)
    from arith.files import atomic_write_bytes

    data = json.dumps(records).encode()
    if not (out.is_file() and out.read_bytes() == data):  # unchanged: its maths file and maps stay current
        atomic_write_bytes(out, data)
    meta = {
        "model": m.name,
        "mode": settings.rule.value,
        "weights_sha256": m.sha256,
        "questions": job.source,
        "questions_sha256": questions_sha256(job.x, job.y, job.op),
        "n_questions": int(len(job.op)),
        "useful_nodes": len(records),
    }
    written = [out, write_sidecar(out, meta)]
    if pictures and records:
        from analysis.quanta import draw_all

        written += draw_all(records, m.layout, m.shape.n_layers, m.shape.n_heads, out.parent, m.name, m.pure_add)
    return written


def job_for(
    weights: str | Path,
    question_file: str | None = None,
    random_rows: int | None = None,
    compat: bool = False,
    store: str | Path | None = None,
) -> Job:
    """The ablation of one model: its questions (a file, or the varied questions: `random_rows` random rows,
    by default the analysis batch, or with `compat` the training batch, then the hand-picked pairs), its store
    and its behaviour file beside the weights."""
    from arith.names import name_of_weights, parse_name
    from arith.questions import OpMix
    from arith.varied import analysis_batch_size, varied_questions
    from arith.varied import question_file as read_question_file
    from arith.weights import model_info, trained_ops
    from jobs.runs.rundir import RunDir

    shape, n_digits, config = model_info(weights)
    name = name_of_weights(weights)
    model = Model(str(Path(weights).resolve()), sha256_file(weights), name, shape, n_digits, trained_ops(config, name))
    if question_file:
        x, y, op = read_question_file(question_file, n_digits)
        source = f"file {question_file}"
    else:
        if "perc_add" in config:
            mix = OpMix(int(config["perc_add"]), int(config.get("perc_sub", 0)), int(config.get("perc_mult", 0)))
        else:
            mn = parse_name(name)
            mix = OpMix(mn.perc_add, mn.perc_sub, mn.perc_mult)
        if random_rows is None:
            random_rows = int(config.get("batch_size", 64)) if compat else analysis_batch_size(*_lh(shape))
        x, y, op = varied_questions(n_digits, mix, random_rows)
        source = f"varied ({random_rows} random rows + hand-picked)"
    run = RunDir.beside(weights)
    return Job(model, x, y, op, Path(store).resolve() if store else run.store.resolve(), run.behavior_json, source)


def question_warnings(job: Job) -> list[str]:
    """A warning per operation among the job's questions that the model was not trained on."""
    from arith.vocab import untrained_op_warnings

    return [w for _op, w in untrained_op_warnings(job.x, job.y, job.op, job.model.ops, job.model.name)]


def _lh(shape: ModelShape) -> tuple[int, int]:
    return shape.n_layers, shape.n_heads


class AblateStage(FunctionStage):
    """The ablation as a stage of the template (jobs.stages.template): survey, positions and nodes blocks into
    `ablate/<mode>/` of the store, reduced to the behaviour records."""

    name = "ablate"
    work = (SurveyWork, PositionWork, NodeWork)
    MAX_TASKS = 64  # sizes a SLURM cluster: the node stage's blocks rarely exceed it

    analyse = staticmethod(analyse)
    reduce_store = staticmethod(reduce_store)


def run_many(jobs: list[Job], settings: Settings, spec: ClusterSpec) -> list[tuple[Job, list[dict]]]:
    """Every job's analysis on one cluster (`spec`, any kind: `none` runs the blocks in this process)."""
    return run_stage(AblateStage(settings), jobs, spec)
