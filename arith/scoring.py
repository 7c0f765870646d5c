"""Teacher-forced scoring: one forward per batch over question + answer, argmax at the n+2 answer positions.

Failure rule (reference): mean answer-token NLL > 0.01 AND at least one wrong argmax token.
Exact mode: any wrong token. Everything is batched; there is no per-question Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from arith.device import autocast
from arith.errors import InputError
from arith.model import Hook, Transformer
from arith.vocab import Layout

FAIL_THRESHOLD = 0.01
MODES = ("reference", "exact")


@dataclass
class Scores:
    failed: np.ndarray  # bool [N]
    pred: np.ndarray  # uint8 [N, n+2] predicted answer tokens
    wrong: np.ndarray  # bool [N, n+2] predicted token != correct token
    nll: np.ndarray  # float32 [N] mean answer-token negative log-likelihood


def answer_logits(model: Transformer, tokens: torch.Tensor, layout: Layout, hooks: dict[str, Hook] | None = None):
    """Logits at the n+2 answer-predicting positions only: [N, n+2, d_vocab]."""
    return model(tokens, hooks=hooks, logit_positions=layout.predict_slice)


def answer_nll(logits: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """Per-token NLL of the correct answers, log-softmax in float64 like the reference: [N, n+2]."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    return -logp.gather(-1, answers.unsqueeze(-1)).squeeze(-1)


@torch.inference_mode()
def score(
    model: Transformer,
    tokens: np.ndarray | torch.Tensor,
    n_digits: int,
    mode: str = "reference",
    hooks: dict[str, Hook] | None = None,
    precision: str = "fp32",
    batch_size: int = 1024,
) -> Scores:
    """Score full question+answer sequences [N, 3n+4] in batches of `batch_size` rows."""
    if mode not in MODES:
        raise InputError(f"unknown scoring mode {mode!r} (expected {' or '.join(MODES)})")
    layout = Layout(n_digits)
    device = next(model.parameters()).device
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    if tokens.ndim != 2 or tokens.shape[1] != layout.n_ctx:
        raise InputError(f"token array must be [N, {layout.n_ctx}], got {list(tokens.shape)}")
    N = tokens.shape[0]
    ans_slice = slice(layout.answer_start, layout.n_ctx)
    pred = np.empty((N, layout.n_answer), dtype=np.uint8)
    nll = np.empty(N, dtype=np.float32)
    for start in range(0, N, batch_size):  # loop over batches, not questions
        chunk = tokens[start : start + batch_size].to(device, non_blocking=True)
        with autocast(device, precision):
            logits = answer_logits(model, chunk, layout, hooks)
        answers = chunk[:, ans_slice]
        nll[start : start + len(chunk)] = answer_nll(logits, answers).mean(dim=1).float().cpu().numpy()
        pred[start : start + len(chunk)] = logits.argmax(dim=-1).to(torch.uint8).cpu().numpy()
    wrong = pred != tokens[:, ans_slice].numpy()
    return Scores(failed=failure_mask(nll, wrong, mode), pred=pred, wrong=wrong, nll=nll)


def failure_mask(nll: np.ndarray, wrong: np.ndarray, mode: str = "reference") -> np.ndarray:
    """reference: mean answer NLL > 0.01 and at least one wrong token; exact: at least one wrong token."""
    failed = wrong.any(axis=1)
    if mode == "reference":
        failed &= nll > FAIL_THRESHOLD
    return failed
