"""Teacher-forced scoring: one forward per batch over question + answer, argmax at the n+2 answer positions.

Failure rule (reference): mean answer-token NLL > 0.01 AND at least one wrong argmax token.
Exact mode: any wrong token. Everything is batched; there is no per-question Python loop.

Fast scoring with fp32 verdicts (`score(..., fast=True)`, implied by `precision="bf16"` or `prefix=True`): every
question is scored by the fast forward (arith.prefix: layer 0 from a table, the last layer only at the answer
positions, and with `prefix` shared prefixes computed once), in bf16 autocast or fp32; then a calibration sample
of the block (`CALIBRATION_ROWS` rows spread over it) is scored again by the plain fp32 forward, and the largest logit
difference seen, times `SAFETY`, is the bound on the fast path's logit error. A question whose verdict could
differ in fp32 is re-scored by the plain fp32 forward: an answer token whose top logit leads the runner-up by
less than twice the bound, or (reference mode, a wrong token) a mean answer loss within twice the bound of the
0.01 threshold (log-softmax moves by at most twice the largest logit change). The predicted tokens and verdicts
then equal the fp32 path's; `Scores.rechecked` and `Scores.bound` say how many were re-scored and the bound.

Non-finite logits never pass (`failure_mask`, the one rule every path uses): an answer position whose logits are
not all finite counts as wrong and its question fails, in either mode. The fast path never measures its error on
non-finite logits (the bound stays finite); it re-scores every question with a non-finite fast logit by the plain
fp32 forward, whose logits then decide.

`probe_precision` decides what `--precision auto` takes on a device with native bf16: bf16 only where its forward
plus the re-checks it would need is expected to cost less than fp32 (near-tied logits send most questions to
the re-check).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from arith.device import PRECISIONS, autocast
from arith.errors import InputError
from arith.model import Hook, Transformer
from arith.prefix import prefix_answer_logits
from arith.vocab import Layout

FAIL_THRESHOLD = 0.01
MODES = ("reference", "exact")
CALIBRATION_ROWS = 256  # per scored block: rows scored both ways to measure the fast path's logit error
CPU_BATCH_BYTES = 32 * 2**20  # a CPU batch's widest activation stays under glibc's largest mmap threshold ...
GPU_BATCH_BYTES = 2**30  # ... while a GPU (a caching allocator, thousands of cores) takes large batches
SAFETY = 4.0  # the bound is SAFETY x the largest error measured on the calibration rows ...
MIN_BOUND = 1e-4  # ... and never below this (fp32 rounding differences between the fast and plain paths)


@dataclass
class Scores:
    failed: np.ndarray  # bool [N]
    pred: np.ndarray  # uint8 [N, n+2] predicted answer tokens
    wrong: np.ndarray  # bool [N, n+2] predicted token != correct token
    nll: np.ndarray  # float32 [N] mean answer-token NLL (the fast path's where a question was not re-scored)
    rechecked: int = 0  # questions re-scored in fp32 because their verdict could differ (fast scoring only)
    bound: float = 0.0  # the logit error bound used (0.0: plain fp32 scoring)


def answer_logits(model: Transformer, tokens: torch.Tensor, layout: Layout, hooks: dict[str, Hook] | None = None):
    """Logits at the n+2 answer-predicting positions only: [N, n+2, d_vocab]."""
    return model(tokens, hooks=hooks, logit_positions=layout.predict_slice)


def answer_nll(logits: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """Per-token NLL of the correct answers, log-softmax in float64 like the reference: [N, n+2]."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    return -logp.gather(-1, answers.unsqueeze(-1)).squeeze(-1)


def _check(tokens: torch.Tensor, n_digits: int, mode: str, precision: str) -> Layout:
    if mode not in MODES:
        raise InputError(f"unknown scoring mode {mode!r} (expected {' or '.join(MODES)})")
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r} (expected {' or '.join(PRECISIONS)})")
    layout = Layout(n_digits)
    if tokens.ndim != 2 or tokens.shape[1] != layout.n_ctx:
        raise InputError(f"token array must be [N, {layout.n_ctx}], got {list(tokens.shape)}")
    return layout


def batch_rows(model: Transformer) -> int:
    """Questions per forward by default. On a CPU the widest activation of a batch (n_ctx positions times the MLP,
    QKV or residual width, float32) is kept under 32 MiB: glibc serves such buffers again from its heap, where a
    larger one is mapped afresh each time and its page faults cost about a quarter of the forward (add_d6_l2_h3
    widths: 1,024 rows scored 726 questions/s, 186 rows 957). On a GPU the limit is 1 GiB (about 6,000 rows there)."""
    on_gpu = next(model.parameters()).device.type == "cuda"
    s = model.shape
    widest = max(s.d_mlp, 3 * s.n_heads * s.d_head, s.d_model)
    return max(16, (GPU_BATCH_BYTES if on_gpu else CPU_BATCH_BYTES) // (s.n_ctx * widest * 4))


def _plain_logits(model, tokens, layout, precision, batch_size, hooks=None) -> torch.Tensor:
    """Answer logits [N, n+2, V] as float32 on the model's device, batch by batch through the model."""
    device = next(model.parameters()).device
    out = torch.empty((tokens.shape[0], layout.n_answer, model.shape.d_vocab), dtype=torch.float32, device=device)
    for start in range(0, tokens.shape[0], batch_size):  # loop over batches, not questions
        chunk = tokens[start : start + batch_size].to(device, non_blocking=True)
        with autocast(device, precision):
            out[start : start + len(chunk)] = answer_logits(model, chunk, layout, hooks).float()
    return out


@torch.inference_mode()
def score(
    model: Transformer,
    tokens: np.ndarray | torch.Tensor,
    n_digits: int,
    mode: str = "reference",
    hooks: dict[str, Hook] | None = None,
    precision: str = "fp32",
    batch_size: int | None = None,
    fast: bool = False,
    prefix: bool = False,
) -> Scores:
    """Score full question+answer sequences [N, 3n+4] in batches of `batch_size` rows (default `batch_rows`).

    precision "fp32" without `fast` or `prefix`: the plain path (hooks allowed). `fast`, "bf16" or `prefix`
    (shared prefixes, for questions in exhaustive order): the fast forward with fp32 verdicts (module docstring);
    not with hooks. A model with non-finite or huge weights (`fast_safe`) is always scored by the plain path."""
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    layout = _check(tokens, n_digits, mode, precision)
    batch_size = batch_size or batch_rows(model)
    if (precision == "fp32" and not (fast or prefix)) or not fast_safe(model):
        return _plain_score(model, tokens, layout, mode, hooks, batch_size)
    if hooks:
        raise ValueError("hooks need the plain fp32 path")
    return _fast_score(model, tokens, layout, mode, precision, batch_size, prefix)


FAST_MAX_WEIGHT = 1e3  # weights up to this magnitude keep every activation far below float32's overflow


def fast_safe(model: Transformer) -> bool:
    """Whether the fast forward may score this model: every weight finite and at most FAST_MAX_WEIGHT in magnitude.

    LayerNorm normalises each layer's input, so with weights of at most 1e3 no residual value nears 1e19, where
    its square (LayerNorm's variance) overflows float32. Beyond that, overflow decides NaN or not, and the
    outcome depends on the order of summation, which differs between the fast and the plain forward: such a
    model is scored by the plain forward alone, whose verdicts are the reference (a NaN question fails)."""
    with torch.no_grad():
        return all(bool(p.abs().max() <= FAST_MAX_WEIGHT) for p in model.parameters() if p.numel())


def _plain_score(model, tokens, layout, mode, hooks, batch_size) -> Scores:
    device = next(model.parameters()).device
    N = tokens.shape[0]
    ans_slice = slice(layout.answer_start, layout.n_ctx)
    pred = np.empty((N, layout.n_answer), dtype=np.uint8)
    nll = np.empty(N, dtype=np.float32)
    finite = np.empty((N, layout.n_answer), dtype=bool)
    for start in range(0, N, batch_size):  # loop over batches, not questions
        chunk = tokens[start : start + batch_size].to(device, non_blocking=True)
        logits = answer_logits(model, chunk, layout, hooks)
        answers = chunk[:, ans_slice]
        rows = slice(start, start + len(chunk))
        nll[rows] = answer_nll(logits, answers).mean(dim=1).float().cpu().numpy()
        pred[rows] = logits.argmax(dim=-1).to(torch.uint8).cpu().numpy()
        finite[rows] = finite_positions(logits).cpu().numpy()
    return verdicts(pred, tokens[:, ans_slice].numpy(), nll, finite, mode)


def finite_positions(logits: torch.Tensor) -> torch.Tensor:
    """bool [N, n+2]: the answer positions whose logits are all finite (no NaN, no +-inf)."""
    return torch.isfinite(logits).all(dim=-1)


def verdicts(pred, answers, nll, finite, mode, rechecked: int = 0, bound: float = 0.0) -> Scores:
    """Scores from predicted tokens, correct answers, mean answer NLL and the finite-logit mask [N, n+2]: what every
    scoring path (plain, fast, prefix; any precision) returns. An answer position whose logits are not all finite
    predicts nothing: it counts as wrong, and its question fails (`failure_mask`)."""
    wrong = (pred != answers) | ~finite
    return Scores(failure_mask(nll, wrong, mode, finite), pred, wrong, nll, rechecked=rechecked, bound=bound)


def calibration_rows(n: int, k: int = CALIBRATION_ROWS) -> np.ndarray:
    """`k` row indices spread evenly over n rows (all of them when n <= k)."""
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(np.int64))


def logit_error(fast: torch.Tensor, exact: torch.Tensor) -> float:
    """The largest |fast - exact| over the logits both paths computed as finite numbers (float64, so it never
    overflows); 0.0 when there are none. Non-finite logits are never measured: a question with one is re-scored by
    the plain forward (`recheck_mask`) and fails there when its plain logits are not finite either."""
    both = torch.isfinite(fast) & torch.isfinite(exact)
    if not bool(both.any()):
        return 0.0
    return float((fast.double() - exact.double()).abs()[both].max())


def error_bound(measured: float) -> float:
    """The logit error bound from the largest error measured on the calibration rows (finite, >= MIN_BOUND)."""
    return max(SAFETY * measured, MIN_BOUND)


def recheck_mask(logits: torch.Tensor, answers: torch.Tensor, bound: float, mode: str) -> torch.Tensor:
    """bool [N]: the questions whose verdict could differ in the plain fp32 forward, given fast logits within
    `bound` of it: a top-two lead under twice the bound, (reference mode, a wrong token) a mean answer loss within
    twice the bound of the threshold, or any non-finite fast logit."""
    top2 = logits.topk(2, dim=-1).values
    close = ((top2[..., 0] - top2[..., 1]) < 2 * bound).any(dim=1)
    if mode == "reference":
        nll = answer_nll(logits, answers).mean(dim=1)
        wrong_any = (logits.argmax(dim=-1) != answers).any(dim=1)
        close |= wrong_any & ((nll - FAIL_THRESHOLD).abs() <= 2 * bound)
    return close | ~finite_positions(logits).all(dim=1)


def _fast_score(model, tokens, layout, mode, precision, batch_size, prefix) -> Scores:
    device = next(model.parameters()).device
    N = tokens.shape[0]
    answers = tokens[:, layout.answer_start :].to(device)
    with autocast(device, precision):
        logits = prefix_answer_logits(model, tokens.to(device), layout, batch_size, share=prefix)
    # calibration: the largest logit error of the fast path on rows spread over the block
    cal = calibration_rows(N)
    exact = _plain_logits(model, tokens[cal], layout, "fp32", batch_size)
    cal_dev = torch.as_tensor(cal, device=device)
    bound = error_bound(logit_error(logits[cal_dev], exact))
    logits[cal_dev] = exact
    # questions whose verdict could differ in fp32
    close = recheck_mask(logits, answers, bound, mode)
    close[cal_dev] = False  # already exact
    redo = torch.nonzero(close).flatten()
    if len(redo):
        logits[redo] = _plain_logits(model, tokens[redo.cpu()], layout, "fp32", batch_size)
    nll = answer_nll(logits, answers).mean(dim=1).float().cpu().numpy()
    pred = logits.argmax(dim=-1).to(torch.uint8).cpu().numpy()
    finite = finite_positions(logits).cpu().numpy()
    return verdicts(pred, answers.cpu().numpy(), nll, finite, mode, rechecked=int(len(redo)), bound=float(bound))


AUTO_MIN_QUESTIONS = 100_000  # auto probes bf16 only for runs this long (below, the probe costs more than bf16 saves)
AUTO_MARGIN = 0.9  # auto takes bf16 only when its expected cost (forward + re-checks) is under 90% of fp32's


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a verification scores in, and why (the accuracy report's `scoring` field)."""

    precision: str  # "fp32" or "bf16"
    reason: str
    requested: str = "auto"

    def as_dict(self) -> dict:
        return {"precision": self.precision, "requested": self.requested, "reason": self.reason}


def _seconds(fn):
    """(seconds, result) of one call after a warm-up call (oneDNN and CUDA pick their kernels on the first)."""
    import time

    fn()
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t0 = time.perf_counter()
    result = fn()
    sync()
    return time.perf_counter() - t0, result


@torch.inference_mode()
def probe_precision(
    model: Transformer,
    tokens: np.ndarray | torch.Tensor,
    n_digits: int,
    mode: str = "reference",
    prefix: bool = False,
    batch_size: int | None = None,
    speeds: tuple[float, float, float] | None = None,
) -> PrecisionChoice:
    """bf16 or fp32 for scoring questions like `tokens` (a block's, [N, 3n+4]) on a device with native bf16.

    bf16 pays only when its fast forward plus the plain fp32 re-checks it needs costs less than the fp32 fast
    forward: near-tied logits (a random or barely trained model) send most questions to the re-check. On
    CALIBRATION_ROWS rows spread over `tokens` it measures the share of questions bf16 would re-score (the bound
    and the re-check rule of `_fast_score`), and the seconds per probe of the bf16 fast, fp32 fast and plain fp32
    forwards (`speeds` gives those instead, for tests; with `prefix`, on a contiguous run of rows, which shares
    prefixes as exhaustive blocks do). bf16 when bf16 + share x plain < AUTO_MARGIN x fp32, else fp32; a share of
    AUTO_MARGIN or more decides fp32 before any timing (the plain forward is never cheaper than the fp32 fast one)."""
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    layout = _check(tokens, n_digits, mode, "fp32")
    batch_size = batch_size or batch_rows(model)
    device = next(model.parameters()).device
    spread = tokens[calibration_rows(len(tokens))]
    answers = spread[:, layout.answer_start :].to(device)

    def fast(rows, precision):
        with autocast(device, precision):
            return prefix_answer_logits(model, rows.to(device), layout, batch_size, share=prefix)

    bf16 = fast(spread, "bf16")
    exact = _plain_logits(model, spread, layout, "fp32", batch_size)
    bound = error_bound(logit_error(bf16, exact))
    share = float(recheck_mask(bf16, answers, bound, mode).float().mean()) if len(spread) else 0.0
    words = f"a probe of {len(spread)} questions: bf16 would re-score {100 * share:.0f}% of them in fp32"
    words += f" (bound {bound:.2g})"
    if speeds is None and share >= AUTO_MARGIN:
        # the plain forward costs at least the fp32 fast forward (which computes a part of it), so the re-checks
        # alone take at least `share` x fp32's time: no need to time anything
        return PrecisionChoice(
            "fp32", f"auto: native bf16 on {device.type}, but {words}: at least {share:.2f}x fp32's time in re-checks"
        )
    if speeds is None:
        timed = tokens[: len(spread)] if prefix else spread
        speeds = (
            _seconds(lambda: fast(timed, "bf16"))[0],
            _seconds(lambda: fast(timed, "fp32"))[0],
            _seconds(lambda: _plain_logits(model, timed, layout, "fp32", batch_size))[0],
        )
    b, f, p = speeds
    expected = (b + share * p) / f if f > 0 else float("inf")
    words += f", so bf16 with its re-checks is expected to take {expected:.2f}x fp32's time"
    if expected < AUTO_MARGIN:
        return PrecisionChoice("bf16", f"auto: native bf16 on {device.type}; {words}")
    return PrecisionChoice("fp32", f"auto: native bf16 on {device.type}, but {words} (bf16 needs under {AUTO_MARGIN}x)")


def failure_mask(nll: np.ndarray, wrong: np.ndarray, mode: str = "reference", finite=None) -> np.ndarray:
    """reference: mean answer NLL > 0.01 and at least one wrong token; exact: at least one wrong token.

    Whatever the mode, a question whose answer logits are not all finite fails: a non-finite mean NLL (NaN or
    inf), or, with `finite` (bool [N, n+2] or [N], as `finite_positions`), a position whose logits are not finite
    (an -inf logit of a wrong token leaves the NLL finite). NaN compares false, so without this rule NaN logits
    would pass as correct."""
    nll = np.asarray(nll)
    failed = wrong.any(axis=1)
    if mode == "reference":
        failed &= nll > FAIL_THRESHOLD
    failed |= ~np.isfinite(nll)
    if finite is not None:
        failed |= ~np.asarray(finite).reshape(len(nll), -1).all(axis=1)
    return failed
