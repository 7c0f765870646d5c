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
    not with hooks."""
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    layout = _check(tokens, n_digits, mode, precision)
    batch_size = batch_size or batch_rows(model)
    if precision == "fp32" and not (fast or prefix):
        return _plain_score(model, tokens, layout, mode, hooks, batch_size)
    if hooks:
        raise ValueError("hooks need the plain fp32 path")
    return _fast_score(model, tokens, layout, mode, precision, batch_size, prefix)


def _plain_score(model, tokens, layout, mode, hooks, batch_size) -> Scores:
    device = next(model.parameters()).device
    N = tokens.shape[0]
    ans_slice = slice(layout.answer_start, layout.n_ctx)
    pred = np.empty((N, layout.n_answer), dtype=np.uint8)
    nll = np.empty(N, dtype=np.float32)
    for start in range(0, N, batch_size):  # loop over batches, not questions
        chunk = tokens[start : start + batch_size].to(device, non_blocking=True)
        logits = answer_logits(model, chunk, layout, hooks)
        answers = chunk[:, ans_slice]
        nll[start : start + len(chunk)] = answer_nll(logits, answers).mean(dim=1).float().cpu().numpy()
        pred[start : start + len(chunk)] = logits.argmax(dim=-1).to(torch.uint8).cpu().numpy()
    wrong = pred != tokens[:, ans_slice].numpy()
    return Scores(failed=failure_mask(nll, wrong, mode), pred=pred, wrong=wrong, nll=nll)


def calibration_rows(n: int, k: int = CALIBRATION_ROWS) -> np.ndarray:
    """`k` row indices spread evenly over n rows (all of them when n <= k)."""
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(np.int64))


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
    measured = float((logits[cal_dev] - exact).abs().max()) if len(cal) else 0.0
    bound = max(SAFETY * measured, MIN_BOUND)
    logits[cal_dev] = exact
    # questions whose verdict could differ in fp32
    top2 = logits.topk(2, dim=-1).values
    close = ((top2[..., 0] - top2[..., 1]) < 2 * bound).any(dim=1)
    nll = answer_nll(logits, answers).mean(dim=1)
    if mode == "reference":
        wrong_any = (logits.argmax(dim=-1) != answers).any(dim=1)
        close |= wrong_any & ((nll - FAIL_THRESHOLD).abs() <= 2 * bound)
    close[cal_dev] = False  # already exact
    redo = torch.nonzero(close).flatten()
    if len(redo):
        logits[redo] = _plain_logits(model, tokens[redo.cpu()], layout, "fp32", batch_size)
        nll[redo] = answer_nll(logits[redo], answers[redo]).mean(dim=1)
    pred = logits.argmax(dim=-1).to(torch.uint8).cpu().numpy()
    nll_np = nll.float().cpu().numpy()
    wrong = pred != answers.cpu().numpy()
    return Scores(failure_mask(nll_np, wrong, mode), pred, wrong, nll_np, rechecked=int(len(redo)), bound=float(bound))


def failure_mask(nll: np.ndarray, wrong: np.ndarray, mode: str = "reference") -> np.ndarray:
    """reference: mean answer NLL > 0.01 and at least one wrong token; exact: at least one wrong token."""
    failed = wrong.any(axis=1)
    if mode == "reference":
        failed &= nll > FAIL_THRESHOLD
    return failed
