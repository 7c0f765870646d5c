"""Intervention studies (issue 22): circuit sufficiency and matched-pair patching, batched over row groups.

Nodes are the ablation's (`analysis.ablate.Node`): a head is its output `hook_z` at one (layer, position, head),
an MLP its output at one (layer, position), replaced through its hidden activations `mlp.hook_post` (the output
is linear in them, so replacing the hidden vector by a mean or another question's vector replaces the output by
the same). Every function here takes explicit question arrays (`x`, `y`, `op` as `arith.vocab.encode` takes
them) and explicit node lists, and returns integer counts that add up over blocks of questions, so a stage can
fan blocks out and sum (`Counts.__add__`, `Flips.__add__`).

One engine (`_edited_logits`) runs G row groups over the B questions of a block in one forward: rows are
group-major (row g*B + b is question b under intervention g). Attention is causal, so an intervention whose
earliest edited node is at layer L and position p cannot change layers below L nor positions before p: the
engine starts from the clean run's residual stream there (`analysis.ablate.clean_run`) and reads earlier
positions' keys and values from it, exactly as `analysis.ablate.ablated_logits` does for one node; a group that
edits nothing keeps the clean logits bit for bit. When that earliest layer is edited at one position only (a
patched node, a path into one MLP), the layer is computed at that position alone; when one answer token is asked
for (patching), positions after the one predicting it are never computed, and a last-layer node elsewhere costs
nothing. (Sufficiency edits every layer and position, so its forwards are whole: its gain over one keep-set per
forward is the batching alone.)

Stage API (all pure; counts sum over blocks of questions):
  study_means(model, x, y, op) once over the study's questions -> Means (also for the twin: untrained_twin)
  Sufficiency.plan(shape, circuit, n_random, seed).keep  (+ restoration_groups(...)[1]) -> keep [G, n_universe]
  keep_counts(model, x, y, op, keep, means, replace, seed, block) -> Counts per block; sum; completeness(),
    class_report() per seed, seeds_report() over seeds; greedy_restoration(evaluate, circuit_keep, k) drives
    keep_counts (or a stage's sum of it over blocks) one step at a time.
  matched_pairs / null_pairs(x, y, op, ..., seed, block) -> (clean, corrupt); flip_counts(model, clean, corrupt,
    nodes, k) and path_flip_counts(...) -> Flips per block; sum; flip_map(test, null, nodes) for the records.

Sufficiency. A keep-set is a bool mask over `node_universe(shape)` (every head and MLP at every position and
layer); every node outside it is replaced, by the ablation's per-layer mean over the questions the model answers
(`Replace.MEAN`, `analysis.ablation.survey` with the corrected rule) or by the same node's clean activation on
another question of the block (`Replace.RESAMPLE`; donors drawn per question and node from
`arith.questions.rng_for(seed, "study/resample", block)`). Scored with verification's failure rule
(`arith.scoring.verdicts`: reference rule, non-finite logits fail), per class (ADD, SUB, NEG, MUL of
`arith.vocab.question_class`) and per answer token.

Completeness (per class c, and per answer token): with acc(S) the accuracy when only S is kept,
  completeness = acc(circuit) / acc(nothing replaced)                 (share of baseline accuracy recovered)
  normalised   = (acc(circuit) - acc(all replaced)) / (acc(nothing replaced) - acc(all replaced))
NaN where the denominator is 0.

Patching. For answer token k (`A{k}`, k = 0 the units digit, n+1 the sign) and pairs (clean, corrupt) that
differ in one controlled way (`Change`), one node's activation is copied from the corrupt question's clean run
into the clean question's forward; a flip is a change of the argmax at the position predicting A{k} from the
clean question's own argmax there. The matched null (`null_pairs`) changes an operand digit above column k
(which cannot change A{k} while the question's class is kept, so rows whose class changes are dropped). Path
patching copies one head's corrupt output into the input of one MLP at the head's position only: the MLP sees
`ln2(resid_mid + delta)` with delta the head's output change through W_O; the residual stream itself stays
clean, and the MLP's changed output flows on as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch
import torch.nn.functional as F

from analysis.ablate import CleanRun, Means, Node, clean_run
from analysis.ablation import MeanRule, candidate_nodes, survey
from analysis.intervals import mean_interval, wilson
from arith.model import ModelShape, Transformer, attn_out, mlp_out, mlp_post, qkv, unembed
from arith.questions import rng_for
from arith.scoring import answer_nll, finite_positions, verdicts
from arith.vocab import ADD, QCLASS_NAMES, SUB, Layout, encode, question_class

MAX_ROWS = 2048  # rows (groups x questions) per forward: bounds the [rows, P, d_mlp] activations
N_CLASSES = len(QCLASS_NAMES)


class Replace(Enum):
    MEAN = "mean"
    RESAMPLE = "resample"


# ------------------------------------------------------------------------------------------------ nodes


def node_universe(shape: ModelShape) -> list[Node]:
    """Every head and MLP at every position and layer, in the ablation's node order (`candidate_nodes`)."""
    return candidate_nodes(list(range(shape.n_ctx)), shape.n_layers, shape.n_heads)


def keep_mask(universe: Sequence[Node], kept: Sequence[Node]) -> np.ndarray:
    """bool [len(universe)]: True for the nodes of `kept` (a node not in the universe is an error)."""
    index = {n: i for i, n in enumerate(universe)}
    mask = np.zeros(len(universe), dtype=bool)
    missing = [n.name() for n in kept if n not in index]
    if missing:
        raise ValueError(f"nodes not in this model: {', '.join(missing[:5])}")
    mask[[index[n] for n in kept]] = True
    return mask


def untrained_twin(shape: ModelShape, seed: int) -> Transformer:
    """The control: a model of the same shape with TransformerLens's init drawn from (seed, "study/twin")."""
    model = Transformer(shape)
    gen_seed = int(rng_for(seed, "study/twin").integers(0, 2**62))
    model.reset_parameters(torch.Generator().manual_seed(gen_seed))
    return model.eval()


def study_means(model: Transformer, x, y, op, answers=None, chunk: int = 512) -> Means:
    """The ablation's means (`MeanRule.CORRECTED`: each layer's own, over the questions the model answers; over
    all questions when it answers none, as for an untrained twin). A stage sums nothing here: it passes every
    question of the study (or a fixed sample) once and hands the result to each block."""
    tokens, layout = _tokens(model, x, y, op, answers)
    return survey(model, tokens, layout, MeanRule.CORRECTED, chunk=chunk).means


# ------------------------------------------------------------------------------------------------ the engine


@dataclass
class _Edits:
    """What G row groups change. Per layer: `z_mask` bool [G, P, H] (True: replace that head output by
    `z_value` [B or 1, P, H, dh]); `mlp_mask` bool [G, P] with `mlp_value` [B or 1, P, d_mlp]; `mlp_in` adds
    [G, B, d] to the MLP input (not the residual stream) at one position: (position, delta)."""

    G: int
    z_mask: dict[int, torch.Tensor]
    z_value: dict[int, torch.Tensor]
    mlp_mask: dict[int, torch.Tensor]
    mlp_value: dict[int, torch.Tensor]
    mlp_in: dict[int, tuple[int, torch.Tensor]]

    def start(self) -> tuple[int, int] | None:
        """(earliest edited layer, earliest edited position over all layers), None when nothing is edited."""
        layers, positions = [], []
        for masks in (self.z_mask, self.mlp_mask):
            for lyr, m in masks.items():
                hit = m.reshape(m.shape[0], m.shape[1], -1).any(dim=(0, 2))
                if hit.any():
                    layers.append(lyr)
                    positions.append(int(torch.nonzero(hit)[0, 0]))
        for lyr, (p, _) in self.mlp_in.items():
            layers.append(lyr)
            positions.append(p)
        return (min(layers), min(positions)) if layers else None

    def group_edited(self) -> torch.Tensor:
        """bool [G]: which groups edit anything."""
        out = None
        for masks in (self.z_mask, self.mlp_mask):
            for m in masks.values():
                g = m.reshape(m.shape[0], -1).any(dim=1)
                out = g if out is None else out | g
        if self.mlp_in:
            out = torch.ones(self.G, dtype=torch.bool) if out is None else torch.ones_like(out)
        return torch.zeros(self.G, dtype=torch.bool) if out is None else out

    def only_at(self, layer: int, position: int) -> bool:
        """Whether every edit of `layer` is at `position` (layer `layer`'s other positions stay clean)."""
        for masks in (self.z_mask, self.mlp_mask):
            m = masks.get(layer)
            if m is not None and (m[:, :position].any() or m[:, position + 1 :].any()):
                return False
        return layer not in self.mlp_in or self.mlp_in[layer][0] == position


def _where(mask: torch.Tensor, value: torch.Tensor, t: torch.Tensor, G: int) -> torch.Tensor:
    """t [G*B, ...] with the rows of group g replaced by `value` [B|1, ...] where mask [G, ...] (broadcast over
    the trailing feature axis) is True."""
    B = t.shape[0] // G
    out = torch.where(mask.unsqueeze(1).unsqueeze(-1), value.unsqueeze(0).to(t.dtype), t.reshape(G, B, *t.shape[1:]))
    return out.reshape(t.shape)


@torch.inference_mode()
def _edited_logits(
    model: Transformer, clean: CleanRun, layout: Layout, edits: _Edits, answer: int | None = None
) -> torch.Tensor:
    """Logits at the answer-predicting positions [G, B, n+2, V] of every row group, recomputing only layers from
    the earliest edited one and positions from the earliest edited one. With `answer` (an index into the n+2
    answer tokens) only that token's logits are recomputed (the others are the clean ones) and positions after
    the one predicting it are never computed. When the earliest edited layer is edited at one position only (a
    patched node), that layer is computed at that position alone, the rest of it read from the clean run."""
    G, B = edits.G, clean.n_rows
    out = clean.logits.unsqueeze(0).repeat(G, 1, 1, 1)
    start = edits.start()
    P = clean.resid_pre[0].shape[1]
    first = layout.predict_slice.start
    end = P - 2 if answer is None else first + answer  # the last position whose logits are wanted
    if start is None or start[1] > end:
        return out
    L, p = start
    lo = max(first, p) if answer is None else end  # the first position whose logits are wanted and can change
    last = len(model.blocks) - 1
    if edits.only_at(L, p):  # layer L changes at position p only
        blk = model.blocks[L]
        z = clean.z[L][:, p].repeat(G, 1, 1)  # [GB, H, dh]: layer L's attention at p reads clean keys
        if L in edits.z_mask:
            z = _where(edits.z_mask[L][:, p], edits.z_value[L][:, p], z, G)
        mid = clean.resid_pre[L][:, p : p + 1].repeat(G, 1, 1) + attn_out(blk.attn, z.unsqueeze(1))
        mlp_in = blk.ln2(mid)
        if L in edits.mlp_in:
            mlp_in = blk.ln2(mid + edits.mlp_in[L][1].reshape(G * B, 1, -1))
        post = mlp_post(blk.mlp, mlp_in)
        if L in edits.mlp_mask:
            post = _where(edits.mlp_mask[L][:, p : p + 1], edits.mlp_value[L][:, p : p + 1], post, G)
        x = clean.resid_post[L][:, p : end + 1].repeat(G, 1, 1)
        x[:, :1] = mid + mlp_out(blk.mlp, post)
        layers = range(L + 1, last + 1)
    else:
        x = clean.resid_pre[L][:, p : end + 1].repeat(G, 1, 1)  # [G*B, S, d], group-major
        layers = range(L, last + 1)
    cur = p  # absolute position of x[:, 0]
    keys = torch.arange(end + 1, device=x.device)
    allowed = keys[None, :] <= torch.arange(p, end + 1, device=x.device)[:, None]
    for lyr in layers:
        blk = model.blocks[lyr]
        q, k_new, v_new = qkv(blk.attn, blk.ln1(x))
        if p:
            k_all = torch.cat([clean.k[lyr][:, :, :p].repeat(G, 1, 1, 1), k_new], dim=2)
            v_all = torch.cat([clean.v[lyr][:, :, :p].repeat(G, 1, 1, 1), v_new], dim=2)
        else:
            k_all, v_all = k_new, v_new
        if lyr == last and lo > cur:  # nothing reads the last layer's earlier positions
            x, q, allowed = x[:, lo - cur :], q[:, :, lo - cur :], allowed[lo - cur :]
            cur = lo
        z = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=allowed).transpose(1, 2)  # [GB, S, H, dh]
        if lyr in edits.z_mask:
            z = _where(edits.z_mask[lyr][:, cur : end + 1], edits.z_value[lyr][:, cur : end + 1], z, G)
        x = x + attn_out(blk.attn, z.contiguous())
        mlp_in = blk.ln2(x)
        if lyr in edits.mlp_in:
            pos, delta = edits.mlp_in[lyr]
            if cur <= pos <= end:
                mlp_in = mlp_in.clone()
                mlp_in[:, pos - cur] = blk.ln2(x[:, pos - cur] + delta.reshape(G * B, -1))
        post = mlp_post(blk.mlp, mlp_in)
        if lyr in edits.mlp_mask:
            post = _where(edits.mlp_mask[lyr][:, cur : end + 1], edits.mlp_value[lyr][:, cur : end + 1], post, G)
        x = x + mlp_out(blk.mlp, post)
    if lo <= end:
        new = unembed(model, x[:, lo - cur : end + 1 - cur]).view(G, B, -1, out.shape[-1])
        edited = edits.group_edited().to(out.device)
        out[edited, :, lo - first : end + 1 - first] = new[edited]  # a group editing nothing keeps clean logits
    return out


# ------------------------------------------------------------------------------------------------ scoring


@dataclass(frozen=True)
class Counts:
    """Per intervention g and question class c (`QCLASS_NAMES`): `failed` [G, C] questions failed by
    verification's rule, `wrong` [G, C, n+2] questions with answer token i wrong; `tested` [C]. Sums over
    blocks with `+`."""

    tested: np.ndarray
    failed: np.ndarray
    wrong: np.ndarray

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tested + other.tested, self.failed + other.failed, self.wrong + other.wrong)

    def __getitem__(self, g) -> Counts:
        """The counts of interventions `g` (an int keeps a leading axis of 1)."""
        g = [g] if isinstance(g, int) else g
        return Counts(self.tested, self.failed[g], self.wrong[g])

    def accuracy(self) -> np.ndarray:
        """[G, C] share of questions not failed (NaN for a class with no questions)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return 1.0 - self.failed / self.tested

    def token_accuracy(self) -> np.ndarray:
        """[G, C, n+2] share of questions with answer token i right."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return 1.0 - self.wrong / self.tested[:, None]

    @staticmethod
    def concat(parts: Sequence[Counts]) -> Counts:
        return Counts(
            parts[0].tested, np.concatenate([c.failed for c in parts]), np.concatenate([c.wrong for c in parts])
        )


def _onehot(qclass: np.ndarray) -> np.ndarray:
    return np.eye(N_CLASSES, dtype=np.int64)[qclass]


def _score(logits: torch.Tensor, answers: torch.Tensor, onehot: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(failed [G, C], wrong [G, C, n+2]) for logits [G, B, n+2, V] under verification's rule."""
    G, B, A, _ = logits.shape
    flat = logits.reshape(G * B, A, -1)
    ans = answers.repeat(G, 1)
    nll = answer_nll(flat, ans).mean(dim=1).cpu().numpy()
    pred = flat.argmax(dim=-1).cpu().numpy()
    s = verdicts(pred, ans.cpu().numpy(), nll, finite_positions(flat).cpu().numpy(), mode)
    failed = s.failed.reshape(G, B).astype(np.int64) @ onehot
    wrong = np.einsum("gba,bc->gca", s.wrong.reshape(G, B, A).astype(np.int64), onehot)
    return failed, wrong


def _tokens(model: Transformer, x, y, op, answers=None) -> tuple[torch.Tensor, Layout]:
    """Teacher-forced tokens of the questions, with `answers` (tokens [Q, n+2]) in place of the correct answers
    when given (e.g. a model's own greedy answers, to study what drives its outputs rather than its accuracy)."""
    layout = Layout(np.asarray(x).shape[1])
    device = next(model.parameters()).device
    tokens = encode(x, y, op)
    if answers is not None:
        tokens[:, layout.answer_start :] = np.asarray(answers, dtype=np.int64)
    return torch.from_numpy(tokens).to(device), layout


def class_report(counts: Counts, names: Sequence[str], confidence: float = 0.95) -> dict:
    """{figure name: {class: {tested, failed, accuracy, lo, hi}}} for one seed, with Wilson intervals; classes
    with no questions are left out."""
    acc = wilson(counts.tested[None] - counts.failed, np.broadcast_to(counts.tested, counts.failed.shape), confidence)
    out = {}
    for g, name in enumerate(names):
        out[name] = {
            QCLASS_NAMES[c]: {
                "tested": int(counts.tested[c]),
                "failed": int(counts.failed[g, c]),
                "accuracy": float(acc.value[g, c]),
                "lo": float(acc.lo[g, c]),
                "hi": float(acc.hi[g, c]),
            }
            for c in range(N_CLASSES)
            if counts.tested[c]
        }
    return out


def seeds_report(per_seed: Sequence[Counts], names: Sequence[str], confidence: float = 0.95) -> dict:
    """{figure name: {class: {accuracy (mean over seeds), lo, hi, seeds}}} with Student-t intervals over the
    seeds' accuracies (`--seeds N`)."""
    acc = mean_interval(np.stack([c.accuracy() for c in per_seed]), axis=0, confidence=confidence)
    tested = per_seed[0].tested
    return {
        name: {
            QCLASS_NAMES[c]: {
                "accuracy": float(acc.value[g, c]),
                "lo": float(acc.lo[g, c]),
                "hi": float(acc.hi[g, c]),
                "seeds": len(per_seed),
            }
            for c in range(N_CLASSES)
            if tested[c]
        }
        for g, name in enumerate(names)
    }


# ------------------------------------------------------------------------------------------------ sufficiency


def _replacement_values(clean: CleanRun, means: Means, replace: Replace, seed: int, block: int):
    """Per layer (z [B|1, P, H, dh], mlp_post [B|1, P, m]) that replaced nodes take."""
    if replace is Replace.MEAN:
        return [(means.z[lyr].unsqueeze(0), means.mlp_post[lyr].unsqueeze(0)) for lyr in range(len(clean.z))]
    B, P, H, _ = clean.z[0].shape
    if B < 2:
        raise ValueError("resampling needs at least two questions in a block")
    rng = rng_for(seed, "study/resample", block)
    out = []
    for lyr in range(len(clean.z)):
        # a donor per (question, position, head) and per (question, position) for the MLP, never the question itself
        dz = rng.integers(0, B - 1, size=(B, P, H))
        dm = rng.integers(0, B - 1, size=(B, P))
        rows = np.arange(B)
        dz += dz >= rows[:, None, None]
        dm += dm >= rows[:, None]
        dev = clean.z[lyr].device
        pz, hz = torch.meshgrid(torch.arange(P), torch.arange(H), indexing="ij")
        z = clean.z[lyr][torch.from_numpy(dz).to(dev), pz.to(dev), hz.to(dev)]  # [B, P, H, dh]
        m = clean.mlp_post[lyr][torch.from_numpy(dm).to(dev), torch.arange(P, device=dev)]  # [B, P, m]
        out.append((z, m))
    return out


def _masks(universe: Sequence[Node], replaced: np.ndarray, shape: ModelShape, device) -> tuple[dict, dict]:
    """Per layer: head mask [G, P, H] and MLP mask [G, P] of the nodes replaced ([G, len(universe)] bool)."""
    G = replaced.shape[0]
    P, H, nL = shape.n_ctx, shape.n_heads, shape.n_layers
    z = np.zeros((nL, G, P, H), dtype=bool)
    m = np.zeros((nL, G, P), dtype=bool)
    lyr = np.array([n.layer for n in universe])
    pos = np.array([n.position for n in universe])
    num = np.array([n.num for n in universe])
    is_mlp = np.array([n.is_mlp for n in universe])
    g, j = np.nonzero(replaced)
    head = ~is_mlp[j]
    z[lyr[j[head]], g[head], pos[j[head]], num[j[head]]] = True
    m[lyr[j[~head]], g[~head], pos[j[~head]]] = True
    zt = {L: torch.from_numpy(z[L]).to(device) for L in range(nL)}
    mt = {L: torch.from_numpy(m[L]).to(device) for L in range(nL)}
    return zt, mt


@torch.inference_mode()
def keep_counts(
    model: Transformer,
    x,
    y,
    op,
    keep: np.ndarray,
    means: Means,
    replace: Replace = Replace.MEAN,
    seed: int = 0,
    block: int = 0,
    mode: str = "reference",
    max_rows: int = MAX_ROWS,
    answers=None,
) -> Counts:
    """Counts for each keep-set (rows of `keep`, bool [G, len(node_universe(model.shape))]): every node outside
    it replaced. One block of questions (`block` keys its resampling donors); row groups of up to `max_rows`
    rows per forward. `answers`: as `_tokens`."""
    shape = model.shape
    universe = node_universe(shape)
    keep = np.atleast_2d(np.asarray(keep, dtype=bool))
    if keep.shape[1] != len(universe):
        raise ValueError(f"keep masks have {keep.shape[1]} nodes; this model has {len(universe)}")
    tokens, layout = _tokens(model, x, y, op, answers)
    onehot = _onehot(question_class(x, y, op))
    clean = clean_run(model, tokens, layout)
    answers = tokens[:, layout.answer_start :]
    values = _replacement_values(clean, means, replace, seed, block)
    B = len(tokens)
    per = max(1, max_rows // max(B, 1))
    failed, wrong = [], []
    for g0 in range(0, len(keep), per):
        zmask, mmask = _masks(universe, ~keep[g0 : g0 + per], shape, tokens.device)
        edits = _Edits(
            G=len(keep[g0 : g0 + per]),
            z_mask=zmask,
            z_value={L: v[0] for L, v in enumerate(values)},
            mlp_mask=mmask,
            mlp_value={L: v[1] for L, v in enumerate(values)},
            mlp_in={},
        )
        f, w = _score(_edited_logits(model, clean, layout, edits), answers, onehot, mode)
        failed.append(f)
        wrong.append(w)
    return Counts(onehot.sum(axis=0), np.concatenate(failed), np.concatenate(wrong))


def random_keep_sets(n_universe: int, size: int, n_sets: int, seed: int) -> np.ndarray:
    """bool [n_sets, n_universe]: set r holds `size` nodes drawn without replacement from (seed, "study/random", r)."""
    out = np.zeros((n_sets, n_universe), dtype=bool)
    for r in range(n_sets):
        out[r, rng_for(seed, "study/random", r).choice(n_universe, size=size, replace=False)] = True
    return out


SUFFICIENCY_ROWS = ("baseline", "circuit", "complement", "empty")


@dataclass(frozen=True)
class Sufficiency:
    """The keep-sets of one sufficiency study, as rows of one `Counts`: `baseline` (nothing replaced), `circuit`
    (the circuit kept), `complement` (the circuit replaced, everything else kept: necessity), `empty` (every node
    replaced), then `random` sets of the circuit's size."""

    names: tuple[str, ...]
    keep: np.ndarray  # bool [G, n_universe]

    @classmethod
    def plan(cls, shape: ModelShape, circuit: Sequence[Node], n_random: int, seed: int) -> Sufficiency:
        universe = node_universe(shape)
        c = keep_mask(universe, circuit)
        rand = random_keep_sets(len(universe), int(c.sum()), n_random, seed)
        keep = np.concatenate([np.stack([np.ones_like(c), c, ~c, np.zeros_like(c)]), rand])
        return cls(SUFFICIENCY_ROWS + tuple(f"random{r}" for r in range(n_random)), keep)

    def row(self, name: str) -> int:
        return self.names.index(name)


def completeness(counts: Counts, circuit: int = 1, baseline: int = 0, empty: int = 3) -> dict[str, np.ndarray]:
    """Per class [C] and per class and answer token [C, n+2] (`*_token`): `completeness` = acc(circuit) /
    acc(baseline); `normalised` = (acc(circuit) - acc(empty)) / (acc(baseline) - acc(empty)). NaN where a
    denominator is 0 or a class was not tested."""
    out = {}
    for suffix, acc in (("", counts.accuracy()), ("_token", counts.token_accuracy())):
        with np.errstate(invalid="ignore", divide="ignore"):
            base, circ, floor = acc[baseline], acc[circuit], acc[empty]
            out["completeness" + suffix] = np.where(base > 0, circ / base, np.nan)
            span = base - floor
            out["normalised" + suffix] = np.where(span != 0, (circ - floor) / span, np.nan)
    return out


def restoration_groups(
    shape: ModelShape, circuit: Sequence[Node], layout: Layout
) -> tuple[tuple[str, ...], np.ndarray]:
    """(names, keep [G, n_universe]): the circuit plus one group of left-out nodes each: every layer's
    (`layer{L}`), all heads (`heads`), all MLPs (`mlps`), the question positions (`question_positions`) and the
    answer positions (`answer_positions`)."""
    universe = node_universe(shape)
    c = keep_mask(universe, circuit)
    lyr = np.array([n.layer for n in universe])
    mlp = np.array([n.is_mlp for n in universe])
    pos = np.array([n.position for n in universe])
    groups = [(f"layer{L}", lyr == L) for L in range(shape.n_layers)]
    groups += [("heads", ~mlp), ("mlps", mlp)]
    groups += [("question_positions", pos < layout.answer_start), ("answer_positions", pos >= layout.answer_start)]
    return tuple(n for n, _ in groups), np.stack([c | g for _, g in groups])


@dataclass(frozen=True)
class Restoration:
    """The greedy curve: after step i, node `added[i]` (index into the universe) was added back and the study's
    counts were `counts[i]` (rows of one `Counts`, row 0 = the circuit alone)."""

    added: tuple[int, ...]
    counts: Counts


def greedy_restoration(
    evaluate: Callable[[np.ndarray], Counts],
    circuit_keep: np.ndarray,
    k: int,
    candidates: np.ndarray | None = None,
) -> Restoration:
    """Add back left-out nodes one at a time, each time the one whose keep-set gives the highest accuracy over all
    questions (ties: lowest index), up to `k` nodes. `evaluate(keep [G, n_universe]) -> Counts` scores keep-sets
    (`keep_counts` over one block, or a stage's sum over every block), so each step is one batched evaluation of
    every candidate. `candidates`: bool [n_universe] of the nodes that may be added (default: all left out)."""
    current = np.asarray(circuit_keep, dtype=bool).copy()
    pool = ~current if candidates is None else np.asarray(candidates, dtype=bool) & ~current
    rows = [evaluate(current[None])]
    added: list[int] = []
    for _ in range(k):
        idx = np.flatnonzero(pool)
        if not len(idx):
            break
        trial = np.repeat(current[None], len(idx), axis=0)
        trial[np.arange(len(idx)), idx] = True
        counts = evaluate(trial)
        correct = counts.tested.sum() - counts.failed.sum(axis=1)
        best = int(np.argmax(correct))
        current[idx[best]] = True
        pool[idx[best]] = False
        added.append(int(idx[best]))
        rows.append(counts[best])
    return Restoration(tuple(added), Counts.concat(rows))


# ------------------------------------------------------------------------------------------------ patching


@dataclass(frozen=True)
class Change:
    """A controlled change of a question: `x` or `y` digit at `column` (0 = units) to another digit, `op` (ADD
    <-> SUB), or `swap` (exchange the operands: for subtraction, SUB <-> NEG)."""

    kind: str
    column: int = 0

    KINDS = ("x", "y", "op", "swap")

    def __post_init__(self):
        if self.kind not in self.KINDS:
            raise ValueError(f"unknown change {self.kind!r} (expected one of {', '.join(self.KINDS)})")


def _digit_changed(grid: np.ndarray, column: int, rng: np.random.Generator) -> np.ndarray:
    out = grid.copy()
    c = grid.shape[1] - 1 - column
    out[:, c] = (grid[:, c] + rng.integers(1, 10, size=len(grid))) % 10
    return out


def matched_pairs(x, y, op, change: Change, seed: int, block: int = 0):
    """((x, y, op) clean, (x, y, op) corrupt): the questions and each changed in `change` only; rows the change
    leaves equal (a swap of equal operands) are dropped. Digits drawn from (seed, "study/pairs/<change>", block)."""
    x, y, op = (np.asarray(a, dtype=np.uint8) for a in (x, y, op))
    rng = rng_for(seed, f"study/pairs/{change.kind}{change.column}", block)
    cx, cy, cop = x, y, op
    if change.kind == "x":
        cx = _digit_changed(x, change.column, rng)
    elif change.kind == "y":
        cy = _digit_changed(y, change.column, rng)
    elif change.kind == "op":
        cop = np.where(op == ADD, SUB, ADD).astype(np.uint8)
    else:
        cx, cy = y, x
    keep = (cx != x).any(axis=1) | (cy != y).any(axis=1) | (cop != op)
    return (x[keep], y[keep], op[keep]), (cx[keep], cy[keep], cop[keep])


def null_pairs(x, y, op, k: int, seed: int, block: int = 0):
    """Matched null pairs for answer digit A{k}: one operand digit at a column above k changed (operand and column
    drawn per question from (seed, "study/null", block)), rows whose class changes dropped, so the correct A{k}
    is the same in both. Empty when k >= n - 1 (no column above k)."""
    x, y, op = (np.asarray(a, dtype=np.uint8) for a in (x, y, op))
    n = x.shape[1]
    if k >= n - 1:
        empty = (x[:0], y[:0], op[:0])
        return empty, empty
    rng = rng_for(seed, "study/null", block)
    col = rng.integers(k + 1, n, size=len(x))  # the column (0 = units) to change
    which = rng.integers(0, 2, size=len(x)).astype(bool)  # True: x
    delta = rng.integers(1, 10, size=len(x))
    rows = np.arange(len(x))
    cx, cy = x.copy(), y.copy()
    cx[rows[which], n - 1 - col[which]] = (x[rows[which], n - 1 - col[which]] + delta[which]) % 10
    cy[rows[~which], n - 1 - col[~which]] = (y[rows[~which], n - 1 - col[~which]] + delta[~which]) % 10
    keep = question_class(x, y, op) == question_class(cx, cy, op)
    return (x[keep], y[keep], op[keep]), (cx[keep], cy[keep], op[keep])


@dataclass(frozen=True)
class Flips:
    """For answer token A{k} over `tested` pairs: `flips` [N] pairs whose predicted A{k} changed when node i was
    patched; `changed`: pairs whose corrupt question's own predicted A{k} differs from the clean one's (the whole
    change's effect). Sums over blocks with `+`."""

    tested: int
    flips: np.ndarray
    changed: int

    def __add__(self, other: Flips) -> Flips:
        return Flips(self.tested + other.tested, self.flips + other.flips, self.changed + other.changed)


def flip_map(test: Flips, null: Flips, nodes: Sequence[Node], confidence: float = 0.95) -> list[dict]:
    """Per node: its name, flip rate of the test pairs and of the matched null pairs, each with a Wilson interval
    (rates NaN -> None where no pairs were tested), and `excess` = test rate - null rate."""
    t = wilson(test.flips, test.tested, confidence)
    n = wilson(null.flips, null.tested, confidence) if null.tested else None
    out = []
    for i, node in enumerate(nodes):
        rec = {"node": node.name(), "flips": int(test.flips[i]), "tested": test.tested}
        rec |= {"rate": float(t.value[i]), "lo": float(t.lo[i]), "hi": float(t.hi[i])}
        if n is not None:
            rec |= {"null_flips": int(null.flips[i]), "null_tested": null.tested, "null_rate": float(n.value[i])}
            rec |= {"null_lo": float(n.lo[i]), "null_hi": float(n.hi[i]), "excess": float(t.value[i] - n.value[i])}
        out.append({k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in rec.items()})
    return out


def answer_index(layout: Layout, k: int) -> int:
    """Index of answer token A{k} in the n+2 answer tokens (A{n+1}, the sign, first; A0 last)."""
    if not 0 <= k <= layout.n_digits + 1:
        raise ValueError(f"answer token A{k} does not exist for {layout.n_digits} digits")
    return layout.n_digits + 1 - k


def _grouped(nodes: Sequence[Node]) -> dict[tuple[int, int], list[int]]:
    out: dict[tuple[int, int], list[int]] = {}
    for i, n in enumerate(nodes):
        out.setdefault((n.layer, n.position), []).append(i)
    return out


@torch.inference_mode()
def flip_counts(
    model: Transformer, clean_q, corrupt_q, nodes: Sequence[Node], k: int, max_rows: int = MAX_ROWS
) -> Flips:
    """Patch each node's activation from the corrupt question into the clean one (`clean_q`, `corrupt_q`: (x, y,
    op) of equal length, as `matched_pairs` gives) and count flips of A{k}. The nodes of one (layer, position)
    share forwards as row groups; a node after A{k}'s predicting position cannot flip it and costs nothing."""
    tokens, layout = _tokens(model, *clean_q)
    ctok, _ = _tokens(model, *corrupt_q)
    a = answer_index(layout, k)
    flips = np.zeros(len(nodes), dtype=np.int64)
    if not len(tokens):
        return Flips(0, flips, 0)
    clean = clean_run(model, tokens, layout)
    corrupt = clean_run(model, ctok, layout)
    base = clean.logits[:, a].argmax(dim=-1)
    changed = int((corrupt.logits[:, a].argmax(dim=-1) != base).sum())
    B, P, H, _ = clean.z[0].shape
    reach = layout.predict_slice.start + a  # the position whose logits predict A{k}
    per = max(1, max_rows // B)
    for (L, p), idx in _grouped(nodes).items():
        if p > reach:
            continue
        for s in range(0, len(idx), per):
            part = idx[s : s + per]
            G = len(part)
            zm = torch.zeros(G, P, H, dtype=torch.bool, device=tokens.device)
            mm = torch.zeros(G, P, dtype=torch.bool, device=tokens.device)
            for g, i in enumerate(part):
                if nodes[i].is_mlp:
                    mm[g, p] = True
                else:
                    zm[g, p, nodes[i].num] = True
            edits = _Edits(G, {L: zm}, {L: corrupt.z[L]}, {L: mm}, {L: corrupt.mlp_post[L]}, {})
            pred = _edited_logits(model, clean, layout, edits, a)[:, :, a].argmax(dim=-1)  # [G, B]
            flips[part] = (pred != base).sum(dim=1).cpu().numpy()
    return Flips(len(tokens), flips, changed)


@torch.inference_mode()
def path_flip_counts(
    model: Transformer,
    clean_q,
    corrupt_q,
    heads: Sequence[Node],
    k: int,
    receiver_layers: Sequence[int] | None = None,
    max_rows: int = MAX_ROWS,
) -> tuple[list[tuple[Node, int]], Flips]:
    """Path patching: each head's corrupt output into the MLP of layer Lr >= its layer at its own position only
    (every such layer, or those in `receiver_layers`). Returns the (head, Lr) paths and their flips of A{k}."""
    tokens, layout = _tokens(model, *clean_q)
    ctok, _ = _tokens(model, *corrupt_q)
    a = answer_index(layout, k)
    nL = model.shape.n_layers
    paths = [
        (h, r)
        for h in heads
        if h.is_head
        for r in range(h.layer, nL)
        if receiver_layers is None or r in receiver_layers
    ]
    flips = np.zeros(len(paths), dtype=np.int64)
    if not len(tokens):
        return paths, Flips(0, flips, 0)
    clean = clean_run(model, tokens, layout)
    corrupt = clean_run(model, ctok, layout)
    base = clean.logits[:, a].argmax(dim=-1)
    changed = int((corrupt.logits[:, a].argmax(dim=-1) != base).sum())
    reach = layout.predict_slice.start + a
    B = len(tokens)
    per = max(1, max_rows // B)
    by_receiver: dict[tuple[int, int], list[int]] = {}
    for i, (h, r) in enumerate(paths):
        by_receiver.setdefault((r, h.position), []).append(i)
    for (r, p), idx in by_receiver.items():
        if p > reach:
            continue
        for s in range(0, len(idx), per):
            part = idx[s : s + per]
            deltas = []
            for i in part:
                h = paths[i][0]
                dz = corrupt.z[h.layer][:, p, h.num] - clean.z[h.layer][:, p, h.num]  # [B, dh]
                deltas.append(dz @ model.blocks[h.layer].attn.W_O[h.num])  # [B, d]
            edits = _Edits(len(part), {}, {}, {}, {}, {r: (p, torch.stack(deltas))})
            pred = _edited_logits(model, clean, layout, edits, a)[:, :, a].argmax(dim=-1)
            flips[part] = (pred != base).sum(dim=1).cpu().numpy()
    return paths, Flips(len(tokens), flips, changed)
