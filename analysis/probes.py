"""Linear probes (issue 22): capture activations at sites, label named variables of the questions, fit logistic
probes with cross-validated balanced accuracy against a permutation null, and a transfer matrix across sites.

A site is the residual stream before (`resid_pre`) or after (`resid_post`) a layer at one position, or one head's
output `hook_z` at a layer and position (`z`). Activations come from one clean forward per chunk of questions
(`analysis.ablate.clean_run`), every site at once.

Variables (column c counts from the units, c = 0, as in the answer names A{c}):
  x{c}, y{c}      the operand digit in column c (10 classes)
  carry_in{c}     the carry into column c of x + y (2 classes; 0 for c = 0)
  carry_out{c}    the carry out of column c of x + y
  borrow{c}       the borrow out of column c of |x - y| (big minus small, as the answer's magnitude is computed)
  sign            the answer is negative (SUB with x < y)
  sum9_{c}        x{c} + y{c} == 9 (the cascade case of addition)
Carries are those of the addition and borrows those of the subtraction whatever the question's operator: probe the
questions whose operator the variable is about.

Determinism: folds from (seed, "probe/folds/<variable>", site index), permutations from (seed, "probe/permute/
<variable>", site index * n_perm + i), the transfer split from (seed, "probe/transfer/<variable>").
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from analysis.ablate import clean_run
from arith.model import ModelShape, Transformer
from arith.questions import rng_for
from arith.vocab import SUB, Layout, encode, x_less_than_y

SITE_KINDS = ("resid_pre", "resid_post", "z")
CHUNK = 512


@dataclass(frozen=True, order=True)
class Site:
    """Where activations are read: `kind` in SITE_KINDS at `layer`, `position` (and `head` for `z`)."""

    kind: str
    layer: int
    position: int
    head: int = -1

    def __post_init__(self):
        if self.kind not in SITE_KINDS:
            raise ValueError(f"unknown site kind {self.kind!r} (expected one of {', '.join(SITE_KINDS)})")
        if (self.kind == "z") != (self.head >= 0):
            raise ValueError("a z site names a head; a residual site does not")

    def name(self) -> str:
        """`P03L0.resid_post`, `P03L1H2.z`."""
        head = f"H{self.head}" if self.kind == "z" else ""
        return f"P{self.position:02d}L{self.layer}{head}.{self.kind}"


def sites(shape: ModelShape, kinds: Sequence[str] = SITE_KINDS, positions: Sequence[int] | None = None) -> list[Site]:
    """Every site of the given kinds at the given positions (all by default), position-major."""
    out = []
    for p in range(shape.n_ctx) if positions is None else positions:
        for layer in range(shape.n_layers):
            for kind in kinds:
                if kind == "z":
                    out += [Site("z", layer, p, h) for h in range(shape.n_heads)]
                else:
                    out.append(Site(kind, layer, p))
    return out


@torch.inference_mode()
def capture(model: Transformer, x, y, op, where: Sequence[Site], chunk: int = CHUNK, answers=None) -> list[np.ndarray]:
    """Activations float32 [Q, dim] at each site of `where` (dim = d_model for residual sites, d_head for heads),
    over the teacher-forced questions (`answers` in place of the correct answers when given), chunk by chunk."""
    layout = Layout(np.asarray(x).shape[1])
    device = next(model.parameters()).device
    tokens = encode(x, y, op)
    if answers is not None:
        tokens[:, layout.answer_start :] = np.asarray(answers, dtype=np.int64)
    tokens = torch.from_numpy(tokens)
    parts: list[list[np.ndarray]] = [[] for _ in where]
    for start in range(0, len(tokens), chunk):
        clean = clean_run(model, tokens[start : start + chunk].to(device), layout)
        for i, s in enumerate(where):
            if s.kind == "z":
                a = clean.z[s.layer][:, s.position, s.head]
            else:
                a = getattr(clean, s.kind)[s.layer][:, s.position]
            parts[i].append(a.float().cpu().numpy())
    return [np.concatenate(p) for p in parts]


# ------------------------------------------------------------------------------------------------ variables


def _column(grid: np.ndarray, c: int) -> np.ndarray:
    n = grid.shape[1]
    if not 0 <= c < n:
        raise ValueError(f"column {c} does not exist for {n} digits")
    return grid[:, n - 1 - c].astype(np.int64)


def _carries(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """int [Q, n+1]: carry into column c of x + y at [:, c] (column 0 gets 0)."""
    n = x.shape[1]
    out = np.zeros((len(x), n + 1), dtype=np.int64)
    for c in range(n):  # over columns, not questions
        out[:, c + 1] = (_column(x, c) + _column(y, c) + out[:, c]) >= 10
    return out


def _borrows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """int [Q, n]: borrow out of column c of big - small."""
    neg = x_less_than_y(x, y)
    big = np.where(neg[:, None], y, x)
    small = np.where(neg[:, None], x, y)
    n = x.shape[1]
    out = np.zeros((len(x), n), dtype=np.int64)
    borrow = np.zeros(len(x), dtype=np.int64)
    for c in range(n):
        borrow = (_column(big, c) - _column(small, c) - borrow < 0).astype(np.int64)
        out[:, c] = borrow
    return out


_VARIABLE = re.compile(r"(x|y|carry_in|carry_out|borrow|sum9_)(\d+)|sign")


def labels(x, y, op, variable: str) -> np.ndarray:
    """int64 [Q]: the value of `variable` (see the module docstring) for each question."""
    x, y, op = (np.asarray(a) for a in (x, y, op))
    m = _VARIABLE.fullmatch(variable)
    if m is None:
        raise ValueError(
            f"unknown variable {variable!r} (x<c>, y<c>, carry_in<c>, carry_out<c>, borrow<c>, sign, sum9_<c>)"
        )
    if variable == "sign":
        return ((op == SUB) & x_less_than_y(x, y)).astype(np.int64)
    kind, c = m.group(1), int(m.group(2))
    _column(x, c)  # checks the column
    if kind == "x":
        return _column(x, c)
    if kind == "y":
        return _column(y, c)
    if kind == "carry_in":
        return _carries(x, y)[:, c]
    if kind == "carry_out":
        return _carries(x, y)[:, c + 1]
    if kind == "borrow":
        return _borrows(x, y)[:, c]
    return (_column(x, c) + _column(y, c) == 9).astype(np.int64)


# ------------------------------------------------------------------------------------------------ probes


@dataclass(frozen=True)
class ProbeScore:
    """Cross-validated balanced accuracy of one probe (`accuracy`, mean over `folds`), its permutation null (mean
    and 95th percentile over `n_perm` shuffles of the labels) and the permutation p-value. NaN when the labels
    have fewer than two classes with two members each."""

    accuracy: float
    folds: int
    null_mean: float
    null_hi: float
    n_perm: int
    p_value: float
    chance: float

    def record(self) -> dict:
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in self.__dict__.items()}


def _probe(seed: int):
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, random_state=seed))


def _cv_accuracy(features: np.ndarray, y: np.ndarray, folds: int, rng: np.random.Generator) -> float:
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=int(rng.integers(0, 2**31 - 1)))
    scores = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for train, test in cv.split(features, y):
            probe = _probe(0).fit(features[train], y[train])
            scores.append(balanced_accuracy_score(y[test], probe.predict(features[test])))
    return float(np.mean(scores))


def probe_score(
    features: np.ndarray, y: np.ndarray, seed: int, variable: str = "", site: int = 0, folds: int = 5, n_perm: int = 5
) -> ProbeScore:
    """Fit and score one probe of labels `y` [Q] on `features` [Q, dim] (see ProbeScore)."""
    y = np.asarray(y)
    values, counts = np.unique(y, return_counts=True)
    present = values[counts >= 2]
    if len(present) < 2:
        return ProbeScore(float("nan"), 0, float("nan"), float("nan"), 0, float("nan"), float("nan"))
    rows = np.isin(y, present)  # a class seen once cannot be both trained on and tested
    f, y = np.asarray(features, dtype=np.float32)[rows], y[rows]
    k = int(min(folds, np.unique(y, return_counts=True)[1].min()))
    acc = _cv_accuracy(f, y, k, rng_for(seed, f"probe/folds/{variable}", site))
    null = np.array(
        [
            _cv_accuracy(
                f,
                rng_for(seed, f"probe/permute/{variable}", site * n_perm + i).permutation(y),
                k,
                rng_for(seed, f"probe/folds/{variable}", site),
            )
            for i in range(n_perm)
        ]
    )
    p = float((1 + (null >= acc).sum()) / (1 + n_perm))
    mean = float(null.mean()) if n_perm else float("nan")
    hi = float(np.quantile(null, 0.95)) if n_perm else float("nan")
    return ProbeScore(acc, k, mean, hi, n_perm, p, 1.0 / len(present))


def probe_sites(
    features: Sequence[np.ndarray],
    y: np.ndarray,
    seed: int,
    variable: str = "",
    folds: int = 5,
    n_perm: int = 5,
    first_site: int = 0,
) -> list[ProbeScore]:
    """`probe_score` at each site (features[i] from `capture`); `first_site` offsets the site index that keys the
    random streams, so a stage that fans sites out in groups draws what one call over all sites would."""
    return [probe_score(f, y, seed, variable, first_site + i, folds, n_perm) for i, f in enumerate(features)]


def transfer_matrix(
    features: Sequence[np.ndarray], y: np.ndarray, seed: int, variable: str = "", test_share: float = 0.3
) -> np.ndarray:
    """float [S, S]: balanced accuracy on held-out questions at site j of the probe trained at site i (sites of
    one width, e.g. the residual stream across positions and layers). One stratified split from (seed,
    "probe/transfer/<variable>") for every pair, so the diagonal is the plain held-out accuracy."""
    y = np.asarray(y)
    rng = rng_for(seed, f"probe/transfer/{variable}")
    test = np.zeros(len(y), dtype=bool)
    for v in np.unique(y):  # stratified: the same share of every class held out
        idx = np.flatnonzero(y == v)
        test[rng.choice(idx, size=int(round(test_share * len(idx))), replace=False)] = True
    out = np.full((len(features), len(features)), np.nan)
    if len(np.unique(y[~test])) < 2:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probes = [_probe(0).fit(np.asarray(f)[~test], y[~test]) for f in features]
    for i, probe in enumerate(probes):
        for j, f in enumerate(features):
            out[i, j] = balanced_accuracy_score(y[test], probe.predict(np.asarray(f)[test]))
    return out
