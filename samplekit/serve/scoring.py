"""The log-probabilities of a prompt's own tokens: one forward pass over the whole prompt.

``prompt_logprobs(model, prompt, top)`` gives, for each prompt token, its log-probability under
the model given the tokens before it (None for the first, which has no context, as OpenAI's
legacy API and vLLM report it), its rank (1: the most probable) and the ``top`` most probable
candidates. These are the model's raw log-probabilities (log-softmax of the logits in float32),
what ``lm-eval`` sums for a log-likelihood. The engine runs it on its own thread, between two
scheduler steps, so the model is never used by two threads at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PromptToken:
    """One prompt token: its id, log-probability (None for the first), rank and top candidates."""

    token: int
    logprob: float | None
    rank: int | None
    top: list[tuple[int, float]]


def _device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError, TypeError):
        return torch.device("cpu")


@torch.inference_mode()
def prompt_logprobs(model, prompt: list[int], top: int) -> list[PromptToken]:
    """Each token of ``prompt`` with its log-probability given the ones before it."""
    ids = torch.tensor([prompt], dtype=torch.long, device=_device(model))
    out = model(ids)
    logits = out if isinstance(out, torch.Tensor) else out.logits  # (1, T, V)
    logp = torch.log_softmax(logits[0, :-1].float(), dim=-1)  # (T - 1, V): position i predicts token i + 1
    chosen = logp.gather(-1, ids[0, 1:, None])  # (T - 1, 1)
    ranks = ((logp > chosen).sum(dim=-1) + 1).tolist()
    values, index = logp.topk(min(top, logp.shape[-1]), dim=-1) if top else (None, None)
    out_tokens = [PromptToken(prompt[0], None, None, [])]
    chosen_list = chosen[:, 0].tolist()
    tops = list(zip(index.tolist(), values.tolist())) if top else None
    for i, token in enumerate(prompt[1:]):
        candidates = [(int(t), float(v)) for t, v in zip(*tops[i])] if tops else []
        out_tokens.append(PromptToken(token, float(chosen_list[i]), int(ranks[i]), candidates))
    return out_tokens
