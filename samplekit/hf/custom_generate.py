"""A whole samplekit chain, selector included, as transformers' ``generate(custom_generate=...)``.

    model.generate(ids, attention_mask=mask, max_new_tokens=50,
                   custom_generate=chain.as_hf_custom_generate(seed=0))

``generate`` prepares everything as usual (the generation config, its own logits processors,
the stopping criteria, left-padded ids and their attention mask, the cache) and then hands the
decoding loop to this callable (transformers 5). The loop feeds the model one position per step
through transformers' own cache, runs ``generate``'s logits processors, then the chain: its
logits processors with their state across steps and its selector (mirostat, greedy, any
plugin's), with one random stream per row. ``generate``'s stopping criteria (max length,
end-of-text ids, stop strings) end rows; an ended row is filled with the pad id, as ``generate``
does. It returns the sequences (prompt and new tokens), as ``generate`` does.

Avoid applying a warper twice: ``generate`` adds its own temperature, top-k, top-p, min-p warpers
when ``do_sample=True`` (and the model's generation config may set them), so pass
``do_sample=False``: the chain's selector chooses, and ``generate`` adds no warper.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from samplekit.chain import Chain
from samplekit.padding import positions


class ChainGenerate:
    """``custom_generate(model, input_ids, logits_processor, stopping_criteria,
    generation_config, **model_kwargs) -> sequences [B, T + new]``."""

    def __init__(self, chain: Chain, *, seed: int | Sequence[int] | None = None, tokenizer=None):
        if chain.selector is None:
            raise ValueError(f"{chain!r} has no selector: a custom_generate loop needs one to choose "
                             "tokens (as_hf_logits_processor() gives a logits-only chain to generate)")
        self.chain, self.seed, self.tokenizer = chain, seed, tokenizer
        self.last_run = None  # the ChainRun of the last call (its processors' state, its steps)

    def _seeds(self, batch: int) -> list[int] | None:
        if self.seed is None:
            return None
        seeds = [self.seed + i for i in range(batch)] if isinstance(self.seed, int) else list(self.seed)
        if len(seeds) != batch:
            raise ValueError(f"{len(seeds)} seeds for a batch of {batch} rows")
        return seeds

    @torch.no_grad()
    def __call__(self, model, input_ids: torch.Tensor, logits_processor=None, stopping_criteria=None,
                 generation_config=None, **model_kwargs) -> torch.Tensor:
        from samplekit.hf.model import HFCache, HFModel

        config = generation_config if generation_config is not None else model.generation_config
        if stopping_criteria is None or not len(stopping_criteria):
            raise ValueError("custom_generate runs inside model.generate(...), which gives it stopping "
                             "criteria (max_new_tokens or max_length)")
        net = HFModel(model)
        batch = input_ids.shape[0]
        mask = model_kwargs.get("attention_mask")
        mask = torch.ones_like(input_ids, dtype=torch.bool) if mask is None else mask.bool()
        eos = getattr(config, "_eos_token_tensor", None)
        eos_ids = tuple(int(i) for i in eos.flatten().tolist()) if eos is not None else net.eos_token_ids
        pad = getattr(config, "_pad_token_tensor", None)
        pad = int(pad) if pad is not None else (eos_ids[0] if eos_ids else 0)
        run = self.chain.start(batch, seeds=self._seeds(batch), prompt_lengths=mask.sum(1),
                               attention_mask=mask, tokenizer=self.tokenizer, eos_token_ids=eos_ids,
                               context_length=net.context_length)
        self.last_run = run
        cached = model_kwargs.get("use_cache", True) and net.new_cache is not None
        cache = None
        if cached:
            given = model_kwargs.get("cache", model_kwargs.get("past_key_values"))
            cache = HFCache(given) if given is not None else net.new_cache(batch)
        position = positions(mask)
        logits = net(input_ids, cache=cache, position_ids=position, attention_mask=mask, last_only=True)[:, -1]
        unfinished = torch.ones(batch, dtype=torch.bool, device=input_ids.device)
        while True:
            scores = logits if logits_processor is None else logits_processor(input_ids, logits)
            run.ctx.attention_mask = mask
            tokens = run.select(input_ids, scores)
            tokens = torch.where(unfinished, tokens, torch.full_like(tokens, pad))
            input_ids = torch.cat([input_ids, tokens[:, None]], dim=1)
            mask = torch.cat([mask, unfinished[:, None]], dim=1)
            unfinished &= ~stopping_criteria(input_ids, scores)
            if not unfinished.any():
                return input_ids
            position = position[:, -1:] + 1
            if cached:
                logits = net(tokens[:, None], cache=cache, position_ids=position, attention_mask=mask, last_only=True)
            else:
                logits = net(input_ids, attention_mask=mask, position_ids=positions(mask), last_only=True)
            logits = logits[:, -1]
