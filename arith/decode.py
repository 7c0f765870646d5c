"""Greedy autoregressive decoding of the n+2 answer tokens (batched over questions)."""

from __future__ import annotations

import numpy as np
import torch

from arith.model import Transformer
from arith.vocab import Layout


@torch.inference_mode()
def greedy_answers(model: Transformer, prompts: torch.Tensor, layout: Layout, batch_size: int = 4096) -> np.ndarray:
    """Answer tokens [N, n+2] predicted one position at a time from the question prompts [N, 2n+2]."""
    device = next(model.parameters()).device
    out = np.empty((prompts.shape[0], layout.n_answer), dtype=np.int64)
    for start in range(0, prompts.shape[0], batch_size):
        seq = prompts[start : start + batch_size].to(device)
        for _ in range(layout.n_answer):  # loop over answer positions, batched over questions
            nxt = model(seq, logit_positions=slice(seq.shape[1] - 1, seq.shape[1])).argmax(dim=-1)
            seq = torch.cat([seq, nxt], dim=1)
        out[start : start + len(seq)] = seq[:, layout.n_question :].cpu().numpy()
    return out
