"""A samplekit chain inside transformers' ``generate``, two ways.

    model.generate(ids, logits_processor=LogitsProcessorList([samplekit.hf.logits_processor(chain)]))
    model.generate(ids, attention_mask=mask, max_new_tokens=50, do_sample=False,
                   custom_generate=samplekit.hf.custom_generate(chain, seed=0))

``logits_processor``: the chain's logits stage as one of ``generate``'s logits processors
(``samplekit.interop.LogitsAdapter``); ``generate`` keeps its own selection.

``custom_generate``: the whole chain, selector included, as ``generate``'s decoding loop.

``generate`` prepares everything as usual (the generation config, its own logits processors,
the stopping criteria, left-padded ids and their attention mask) and then hands the decoding loop
to the ``custom_generate`` callable (transformers 5). That loop is samplekit's own
(``samplekit.decoding.Decoding``, the one every entry point decodes through): each row's real
prompt tokens prefilled into the model's cache (or re-fed each step without one), then each step
``generate``'s logits processors, then the chain: its logits processors with their state across
steps and its selector (mirostat, greedy, any plugin's), with one random stream per row.
``generate``'s processors and stopping criteria see ``generate``'s full batch, as in its own loop:
the ids it was given plus the new tokens, a row that has ended filled with the pad id. The
stopping criteria (max length, end-of-text ids, stop strings, max time) end rows; an ended row
leaves samplekit's batch (its chain state included) and is filled with the pad id, as ``generate``
does; so does a row that the chain ends (``ctx.finish``, ``max_new_tokens``). The chain's context
processors crop what the model sees, as everywhere. The cache is samplekit's own through the
model (a cache passed to ``generate`` is not read); ``use_cache=False`` re-feeds each step. It
returns the sequences (prompt and new tokens), as ``generate`` does.

Avoid applying a warper twice: ``generate`` adds its own temperature, top-k, top-p, min-p warpers
when ``do_sample=True`` (and the model's generation config may set them), so pass
``do_sample=False``: the chain's selector chooses, and ``generate`` adds no warper.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from samplekit.chain import Chain
from samplekit.decoding import HISTORY_CHUNK, Decoding, Group, Row, crops_last_window, new_row
from samplekit.interop import LogitsAdapter
from samplekit.protocol import model_context_length, prepare
from samplekit.requests import Request

__all__ = ["ChainGenerate", "custom_generate", "logits_processor"]


def logits_processor(chain: Chain, *, seed: int | Sequence[int] | None = None, tokenizer=None,
                     eos_token_ids: Sequence[int] = ()) -> LogitsAdapter:
    """``chain``'s logits stage (its processors before the selector) as a transformers logits
    processor that keeps its state across ``generate``'s steps; the selection stays
    ``generate``'s own (greedy or sampling). ``seed``: per-row streams for random processors
    (None: torch's global generator, as transformers' own processors); ``eos_token_ids``: what
    processors such as ``min_new_tokens`` ban."""
    return LogitsAdapter(chain, seed=seed, tokenizer=tokenizer, eos_token_ids=eos_token_ids)


def custom_generate(chain: Chain, *, seed: int | Sequence[int] | None = None, tokenizer=None) -> "ChainGenerate":
    """``chain``, selector included, as ``generate(custom_generate=...)``'s decoding loop (pass
    ``do_sample=False`` so that ``generate`` adds no warper of its own). ``seed``: the first
    row's seed (row i gets seed + i), or one per row; None: seeds drawn from torch's generator.
    A chain without a selector is refused (ValueError): use ``logits_processor`` for it."""
    return ChainGenerate(chain, seed=seed, tokenizer=tokenizer)


class ChainGenerate:
    """``custom_generate(model, input_ids, logits_processor, stopping_criteria,
    generation_config, **model_kwargs) -> sequences [B, T + new]``."""

    def __init__(self, chain: Chain, *, seed: int | Sequence[int] | None = None, tokenizer=None):
        if chain.selector is None:
            raise ValueError(f"{chain!r} has no selector: a custom_generate loop needs one to choose "
                             "tokens (samplekit.hf.logits_processor(chain) gives a logits-only chain to generate)")
        self.chain, self.seed, self.tokenizer = chain, seed, tokenizer
        self.last_run = None  # the ChainRun of the last call (its processors' state for the rows last decoding)

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
        from samplekit.hf.model import HFModel

        config = generation_config if generation_config is not None else model.generation_config
        if stopping_criteria is None or not len(stopping_criteria):
            raise ValueError("custom_generate runs inside model.generate(...), which gives it stopping "
                             "criteria (max_new_tokens or max_length)")
        net = HFModel(model)
        batch, width = input_ids.shape
        mask = model_kwargs.get("attention_mask")
        mask = torch.ones_like(input_ids, dtype=torch.bool) if mask is None else mask.bool()
        empty = [i for i in range(batch) if not bool(mask[i].any())]
        if empty:
            raise ValueError(f"row {empty[0]} of attention_mask is all zeros: every row needs a real prompt token")
        eos = getattr(config, "_eos_token_tensor", None)
        eos_ids = tuple(int(i) for i in eos.flatten().tolist()) if eos is not None else net.eos_token_ids
        pad = getattr(config, "_pad_token_tensor", None)
        pad = int(pad) if pad is not None else (eos_ids[0] if eos_ids else 0)
        max_length = getattr(config, "max_length", None)
        limit = max(1, max_length - width) if max_length else 2 ** 31  # generate's max length ends rows too
        out = _Batch(input_ids, pad, logits_processor)
        cached = model_kwargs.get("use_cache", True) and crops_last_window(self.chain)
        decoding = Decoding(net, tokenizer=self.tokenizer, eos_ids=eos_ids, context_length=model_context_length(net),
                            cached=None if cached else False, before_chain=out.before_chain)
        group, seeds = Group(self.chain), self._seeds(batch)
        decoding.admit([new_row(Request(prompt=input_ids[i][mask[i]].tolist(), max_new_tokens=limit, stop_on_eos=False),
                                i, self.chain, group, seed=None if seeds is None else seeds[i], tokenizer=None,
                                eos_ids=eos_ids, context_length=decoding.context_length)
                        for i in range(batch)])
        prepare(net)
        while not decoding.idle:
            events, _ = decoding.step()
            if group.run is not None:  # None once every row has ended
                self.last_run = group.run
            if events:  # generate's stopping criteria end rows, as in its loop
                stopped = out.append([e.row for e in events], [e.token for e in events], stopping_criteria)
                ending = [r for r in decoding.rows if stopped[r.index]]
                if ending:
                    decoding.drop_rows(ending)
        return out.ids


class _Batch:
    """``generate``'s view of the batch: its sequences ``[B, T + new]`` (its ids, then each step's
    tokens, the pad id in rows that have ended; room grows a chunk at a time) and each step's
    scores after its logits processors, which see every row."""

    def __init__(self, ids: torch.Tensor, pad: int, logits_processor):
        self.pad, self.T, self.processors = pad, ids.shape[1], logits_processor
        self.buffer = torch.cat([ids, ids.new_full((ids.shape[0], HISTORY_CHUNK), pad)], dim=1)
        self.scores: torch.Tensor | None = None

    @property
    def ids(self) -> torch.Tensor:
        return self.buffer[:, :self.T]

    def before_chain(self, rows: list[Row], logits: torch.Tensor) -> torch.Tensor:
        """``Decoding``'s hook: ``generate``'s processors over the full batch (the rows decoding at
        their places, ended rows' logits zero), then the rows decoding."""
        batch = self.buffer.shape[0]
        if self.processors is None or not len(self.processors):
            self.scores = logits
        elif len(rows) == batch:  # no row has ended: the batch is generate's, in its order
            self.scores = logits = self.processors(self.ids, logits)
        else:
            index = torch.tensor([r.index for r in rows], device=logits.device)
            full = logits.new_zeros(batch, logits.shape[-1]).index_copy_(0, index, logits)
            self.scores = self.processors(self.ids, full)
            logits = self.scores.index_select(0, index)
        return logits

    def append(self, rows: list[int], tokens: list[int], stopping_criteria) -> list[bool]:
        """This step's tokens of ``rows`` (the others get the pad id); which rows the stopping
        criteria end."""
        if self.T == self.buffer.shape[1]:
            grow = self.buffer.new_full((self.buffer.shape[0], max(HISTORY_CHUNK, self.T)), self.pad)
            self.buffer = torch.cat([self.buffer, grow], dim=1)
        column = self.buffer[:, self.T]
        column[torch.tensor(rows, device=column.device)] = torch.tensor(tokens, dtype=column.dtype,
                                                                        device=column.device)
        self.T += 1
        return stopping_criteria(self.ids, self.scores).tolist()
