"""A chain's logits stage inside a decoding loop samplekit does not own (transformers' ``generate``).

    processor = samplekit.hf.logits_processor(chain)  # a LogitsAdapter
    model.generate(ids, logits_processor=LogitsProcessorList([processor]), do_sample=False)

Such a loop calls each logits processor as ``processor(input_ids, scores)`` once per step and
never says which token it chose, nor when a new generation starts. ``LogitsAdapter`` keeps one
``ChainRun`` across those calls, so stateful processors behave as in samplekit's own engine:
``min_new_tokens`` lifts its ban after n tokens, the penalties count the tokens generated so far,
DRY and random processors keep their per-row state and streams. Each call after the first, the
last column of ``input_ids`` is the token the loop chose at the step before: it is passed to the
processors' ``accept``. A call whose ``input_ids`` is not the previous one plus one column (a new
prompt, another batch size) starts a new run; ``reset()`` forces one. Without ``seed``, random
processors draw from torch's global generator only when they need numbers, as transformers' own
do (so adding a deterministic processor leaves ``generate``'s sampling unchanged).

What it cannot know: the loop's padding (transformers left-pads with its pad token and passes no
attention mask to processors, so processors that read the history see the pad tokens, as
transformers' own processors do), and rows the loop reorders (beam search): use it with greedy
decoding or sampling. Selection is the loop's own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from samplekit.chain import Chain, ChainRun


class LogitsAdapter:
    """``(input_ids [B, T], scores [B, V]) -> scores``: a logits-only chain run kept across calls."""

    def __init__(self, chain: Chain, *, seed: int | Sequence[int] | None = None, tokenizer=None,
                 eos_token_ids: Sequence[int] = ()):
        self.chain = chain if chain.logits_only else chain.logits_stage()
        self.seed, self.tokenizer, self.eos_token_ids = seed, tokenizer, tuple(eos_token_ids)
        self.run: ChainRun | None = None
        self._shape: tuple[int, int] | None = None  # (B, T) of the last call

    def reset(self) -> None:
        """The next call starts a new generation."""
        self.run, self._shape = None, None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        b, t = input_ids.shape
        if self.run is not None and self._shape == (b, t - 1):
            self.run.accept(input_ids[:, -1])  # the token the loop chose after the last call
        else:
            if self.seed is None:  # like transformers' own processors: torch's global stream, as needed
                random = {"generator": torch.default_generator}
            else:
                random = {"seeds": [self.seed + i for i in range(b)] if isinstance(self.seed, int) else list(self.seed)}
            self.run = self.chain.start(b, prompt_lengths=torch.full((b,), t, dtype=torch.long),
                                        tokenizer=self.tokenizer, eos_token_ids=self.eos_token_ids, **random)
        self._shape = (b, t)
        return self.run.process(input_ids, scores)

    def __repr__(self) -> str:
        return f"LogitsAdapter({' -> '.join(self.chain.names)})"
