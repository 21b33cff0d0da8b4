"""Tracing: what each processor of a chain did to the distribution, step by step.

With tracing on (``generate(..., trace=True)``, ``Chain.start(..., trace=8)``), every step
records for each row: the model's raw distribution and, after each logits processor, the number
of tokens still possible (``support``), the entropy in nats, the probability mass the processor
removed (of the distribution it was given: tokens it set to -inf), and the ``top`` most probable
candidates with their probabilities; then the chosen token with its raw probability and its rank
in the raw distribution (0: the most probable). Memory is bounded: ``top`` candidates per stage
(default 8), so a step costs ``(processors + 1) * top`` numbers per row.

Off by default and free when off: a run without tracing never reaches this module. A traced
step runs densely (every processor on the whole vocabulary, whatever step strategy the chain
would use), so the figures are exact.

Traces are plain dataclasses that round-trip through JSON (``to_dict`` / ``StepTrace.from_dict``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

DEFAULT_TOP = 8


@dataclass
class StageTrace:
    """The distribution after one stage (``name``: "model" for the raw logits, else the
    processor's name): tokens still possible, entropy (nats), the mass this stage removed from the
    distribution it was given, and the ``top`` candidates as ``[token, probability]`` pairs."""

    name: str
    support: int
    entropy: float
    removed: float
    top: list[list[float]] = field(default_factory=list)


@dataclass
class StepTrace:
    """One row's step: the chosen token, its raw probability and rank, and every stage."""

    step: int
    token: int
    token_prob: float
    token_rank: int
    stages: list[StageTrace]
    final_prob: float | None = None  # the chosen token's probability after the last stage (the chain's)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StepTrace":
        return cls(**{**data, "stages": [StageTrace(**s) for s in data["stages"]]})


class Tracer:
    """Records the stages of one step for every row of a run; ``finish`` adds the tokens."""

    def __init__(self, top: int = DEFAULT_TOP):
        if not isinstance(top, int) or top < 1:
            raise ValueError(f"trace top must be an int >= 1, got {top!r}")
        self.top = top
        self._stages: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._raw: torch.Tensor | None = None
        self._before: torch.Tensor | None = None

    def begin(self, scores: torch.Tensor) -> None:
        """The model's logits ``[B, V]`` for this step."""
        self._stages = []
        self._raw = torch.softmax(scores.float(), dim=-1)
        self._before = self._raw
        self.stage("model", scores, removed=torch.zeros(scores.shape[0]))

    def stage(self, name: str, scores: torch.Tensor, removed: torch.Tensor | None = None) -> None:
        """The scores after processor ``name``."""
        probs = torch.softmax(scores.float(), dim=-1).nan_to_num(0.0)  # an all -inf row: no mass
        alive = torch.isfinite(scores)
        if removed is None:  # the mass, under the distribution given, of tokens now -inf
            removed = (self._before * ~alive).sum(dim=-1)
        logp = torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))
        entropy = -(probs * logp).sum(dim=-1)
        k = min(self.top, scores.shape[-1])
        values, ids = probs.topk(k, dim=-1)
        self._stages.append((name, alive.sum(dim=-1), entropy, removed, torch.stack([ids.float(), values], -1)))
        self._before = probs

    def finish(self, tokens: torch.Tensor, steps: list[int]) -> list[StepTrace]:
        """Each row's trace for this step, given the tokens chosen ``[B]`` and each row's step."""
        raw = self._raw
        chosen = raw.gather(-1, tokens[:, None].to(raw.device))  # (B, 1)
        final = self._before.gather(-1, tokens[:, None].to(raw.device))[:, 0].tolist()  # (B,)
        ranks = (raw > chosen).sum(dim=-1).tolist()
        stages = [(name, support.tolist(), entropy.tolist(), removed.tolist(), top.tolist())
                  for name, support, entropy, removed, top in self._stages]
        out = []
        for r, token in enumerate(tokens.tolist()):
            out.append(StepTrace(
                step=steps[r], token=int(token), token_prob=float(chosen[r, 0]), token_rank=int(ranks[r]),
                stages=[StageTrace(name, int(support[r]), float(entropy[r]), float(removed[r]),
                                   [[int(t), float(p)] for t, p in top[r]])
                        for name, support, entropy, removed, top in stages], final_prob=float(final[r])))
        self._stages, self._raw, self._before = [], None, None
        return out
