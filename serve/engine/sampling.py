"""Choosing each row's next token: penalties, temperature, top-k, top-p, seeded sampling, log-probabilities."""

from __future__ import annotations

import torch

from serve.engine.types import SamplingParams


def process_logits(logits: torch.Tensor, params: SamplingParams, context_ids: torch.Tensor, generated: list[int]):
    """Apply penalties and temperature to one row's logits [V] (fp32); returns new logits."""
    if params.repetition_penalty and params.repetition_penalty != 1.0:
        ids = context_ids.unique()
        picked = logits[ids]
        logits = logits.clone()
        logits[ids] = torch.where(picked > 0, picked / params.repetition_penalty, picked * params.repetition_penalty)
    if generated and (params.frequency_penalty or params.presence_penalty):
        ids, counts = torch.tensor(generated, device=logits.device).unique(return_counts=True)
        logits = logits.clone()
        logits[ids] -= (params.frequency_penalty or 0.0) * counts.to(logits.dtype) + (params.presence_penalty or 0.0)
    if params.sampling and params.temperature and params.temperature != 1.0:
        logits = logits / params.temperature
    return logits


def choose(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """Greedy (argmax) unless sampling; top-k and top-p filter before sampling."""
    if not params.sampling:
        return int(logits.argmax())
    if params.top_k:
        kth = torch.topk(logits, min(params.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p is not None and params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= params.top_p  # keep the smallest set reaching top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    probs = logits.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))
