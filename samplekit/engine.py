"""The decoding loop: prompts in, new tokens (and text) out, one chain step per token.

    results = generate(model, [[1, 2, 3], [4, 5]], chain="balanced", max_new_tokens=50, seed=0,
                       tokenizer=enc, stop=["\\n\\n"])
    for event in generate_stream(model, prompt_ids, tokenizer=enc):
        print(event.text, end="", flush=True)

Two forward paths, same tokens:

- **Cached** (the model implements the KV-cache protocol: ``model.new_cache(B)`` and
  ``model(ids, cache=, position_ids=, attention_mask=)``): the prompts are prefilled once, then
  each step feeds one position. Ragged prompts are left-padded; padding is masked out and each
  row's positions count from 0 (``cumsum(mask) - 1``), so a row computes what it would alone.
  Once a row's history outgrows the context window, the plain loop re-feeds the last ``window``
  tokens from 0 each step; with learned absolute positions every position then shifts by one per
  step, so no cache can be reused: from that step on the engine runs the plain loop (correctness
  over speed).
- **Plain** (any ``nn.Module`` mapping ``[B, T]`` ids to ``[B, T, V]`` logits): the usage
  guide's loop: crop the context, forward it all, take the last position, run the chain, append.
  A model that takes no ``attention_mask`` gets each group of equal-length rows unpadded.

Finished rows leave the batch (the cache and the chain's state drop them), so they cost nothing
further; a processor may end a row itself (``ctx.finish``: a completed constraint). Padding ids
are 0; processors must read ``ctx.attention_mask`` to skip them. Without seeds, the rows' seeds
are drawn once from torch's global generator, so ``torch.manual_seed(n)`` reproduces a run.

The model runs under ``torch.inference_mode`` in eval mode (its training mode is restored
afterwards). ``model.prepare_for_inference()`` (GPTModel: fuse the q/k/v projections) is called
when present, and again whenever a parameter was replaced, moved or changed in place since the
last call, so fused copies of the weights are never stale.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import os
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from samplekit.chain import Chain
from samplekit.padding import positions
from samplekit.errors import ConfigError
from samplekit.stopping import Deadline, StopStrings, TextStream, resolve_eos_ids

HISTORY_CHUNK = 256  # the token history grows by this many columns at a time, never all up front


@dataclass
class GenerationResult:
    """One prompt's generation.

    ``tokens``: the new token ids only (not the prompt). An end-of-text id that ended the row is
    not included. When a stop string matched, the tokens that begin at or after the start of the
    stop string are removed; a token straddling its start is kept (so ``decode(tokens)`` starts
    with ``text``, and equals it when the stop string starts on a token boundary).
    ``text``: the decoded new text, cut where the stop string began (None without a tokenizer).
    ``finish_reason``: "length" | "eos" | "stop" | "time", or the reason a processor gave when
    it ended the row (``ctx.finish``, e.g. "constraint"). ``prompt_length``: the prompt's tokens.
    """

    tokens: list[int]
    text: str | None
    finish_reason: str
    prompt_length: int
    trace: list | None = None  # with trace: one samplekit.trace.StepTrace per new token


@dataclass
class TokenEvent:
    """One token of one row, as it is chosen.

    ``text`` is the printable text this token adds ("" while text is held back: an incomplete
    character, or a tail that might begin a stop string); the event that ends a row (``finished``
    set to its finish reason) also carries everything still held back, so joining a row's
    ``text`` gives its final ``GenerationResult.text``. ``step`` is the token's index among the
    row's new tokens. A row ending on end-of-text reports that id as ``token``.
    """

    row: int
    token: int
    step: int
    text: str
    finished: str | None = None
    trace: Any = None  # with trace: this step's samplekit.trace.StepTrace


def generate(model, prompts, *, chain=None, max_new_tokens: int = 200, seed=None, generator=None,
             stop=(), stop_on_eos: bool = True, eos_token_ids=None, tokenizer=None,
             max_time: float | None = None, use_cache: bool | None = None,
             context_length: int | None = None, batch_invariant: bool = False,
             trace: bool | int = False) -> list[GenerationResult]:
    """Generate from each prompt; one ``GenerationResult`` per prompt, in order.

    ``prompts``: a list of token-id lists (lengths may differ), one list of ints, or a LongTensor
    ``[B, T]``. ``chain``: a Chain, a ChainConfig, a config dict, a YAML path or preset name, or
    None (temperature 0.8, top-k 50, multinomial); only the chain is taken from a config, the run
    settings come from these arguments. ``seed``: an int (row i uses ``seed + i``) or one int per
    prompt; with per-prompt seeds a prompt gives the same output alone or in any batch.
    ``generator``: one ``torch.Generator`` shared by the batch (instead of ``seed``).
    ``stop``: stop strings (need ``tokenizer``). ``eos_token_ids``: default the tokenizer's
    ``<|endoftext|>``. ``max_time``: seconds. ``use_cache``: None uses the KV cache when the model
    has one, False never. ``context_length``: default the model's (``model.context_length`` or
    ``model.config.context_length``), else unbounded; a ``context_window`` processor may lower it.
    ``batch_invariant``: run the model in its batch-invariant mode (``GPTModel``: every row's
    logits bit-identical whatever else is in the batch), so that with per-prompt seeds each
    prompt's tokens are exactly those it gets alone; without it a row's logits may differ in the
    last bits with the batch, which changes a sampled token about once in thousands of steps.
    ``trace``: record what each processor did at each step (``True``: the 8 most probable
    candidates per stage, or that many); each result's ``trace`` lists a ``StepTrace`` per token.
    """
    decoding = _Decoding(model, prompts, chain=chain, max_new_tokens=max_new_tokens, seed=seed,
                         generator=generator, stop=stop, stop_on_eos=stop_on_eos,
                         eos_token_ids=eos_token_ids, tokenizer=tokenizer, max_time=max_time,
                         use_cache=use_cache, context_length=context_length, batch_invariant=batch_invariant,
                         trace=trace)
    with torch.inference_mode():  # one guard for the whole loop: nothing runs between steps
        for _ in decoding.steps(guard_each_step=False):
            pass
    return decoding.results()


def generate_stream(model, prompts, *, chain=None, max_new_tokens: int = 200, seed=None,
                    generator=None, stop=(), stop_on_eos: bool = True, eos_token_ids=None,
                    tokenizer=None, max_time: float | None = None, use_cache: bool | None = None,
                    context_length: int | None = None, batch_invariant: bool = False,
                    trace: bool | int = False) -> Iterator[TokenEvent]:
    """Like ``generate``, but yield a ``TokenEvent`` per row per token as it is chosen (rows in
    batch order within a step). Each row's last event has ``finished`` set."""
    decoding = _Decoding(model, prompts, chain=chain, max_new_tokens=max_new_tokens, seed=seed,
                         generator=generator, stop=stop, stop_on_eos=stop_on_eos,
                         eos_token_ids=eos_token_ids, tokenizer=tokenizer, max_time=max_time,
                         use_cache=use_cache, context_length=context_length, batch_invariant=batch_invariant,
                         trace=trace)
    for step, rows, tokens, texts, finished in decoding.steps():
        traces = decoding.run.last_trace or [None] * len(rows)
        for row, token, text, reason, traced in zip(rows, tokens, texts, finished, traces):
            yield TokenEvent(row, token, step, text, reason, traced)


def generate_text(model, input_ids, maximum_new_tokens: int, temperature: float = 0.0,
                  top_k_tokens: int | None = None, context_length: int | None = None,
                  eos_id: int | None = None, seed: int | None = None,
                  generator: torch.Generator | None = None) -> list[int]:
    """The usage guide's ``generate_text``: prompt ids in, prompt + new ids out.

    ``temperature`` 0 is greedy (argmax; never divides by zero), otherwise sample from
    softmax(logits / temperature) restricted to the ``top_k_tokens`` largest logits (if given).
    Stops early, without appending it, when ``eos_id`` is chosen.
    """
    if isinstance(input_ids, torch.Tensor):
        if input_ids.dim() == 2 and input_ids.shape[0] != 1:
            raise ValueError(f"generate_text takes one prompt; got a batch of {input_ids.shape[0]}")
        input_ids = input_ids.reshape(-1).tolist()
    prompt = [int(t) for t in input_ids]
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        chain = Chain.from_names("greedy")
    else:
        specs: list = [("temperature", {"value": float(temperature)})]
        if top_k_tokens is not None:
            specs.append(("top_k", {"k": int(top_k_tokens)}))
        chain = Chain.from_names(*specs, "multinomial")
    (result,) = generate(model, [prompt], chain=chain, max_new_tokens=maximum_new_tokens, seed=seed,
                         generator=generator, eos_token_ids=() if eos_id is None else (eos_id,),
                         stop_on_eos=eos_id is not None, context_length=context_length)
    return prompt + result.tokens


def resolve_chain(chain) -> Chain:
    """A Chain from a Chain, ChainConfig, config dict/list, YAML path or preset name, or None
    (the default: temperature 0.8, top-k 50, multinomial)."""
    from samplekit.config import ChainConfig, chain_from_config, default_config, load_config

    if chain is None:
        return default_config().build_chain()
    if isinstance(chain, Chain):
        return chain
    if isinstance(chain, ChainConfig):
        return chain.build_chain()
    if isinstance(chain, (dict, list)):
        return chain_from_config(chain)
    if isinstance(chain, (str, os.PathLike)):
        return load_config(Path(chain) if not isinstance(chain, str) else chain).build_chain()
    raise TypeError(f"chain must be a Chain, ChainConfig, dict, path or preset name, not {type(chain).__name__}")


def model_context_length(model) -> int | None:
    """``model.context_length`` or ``model.config.context_length``, else None."""
    for owner in (model, getattr(model, "config", None)):
        value = getattr(owner, "context_length", None)
        if isinstance(value, int) and value > 0:
            return value
    return None


# -- the loop --------------------------------------------------------------------------------------

class _Decoding:
    """One generation: the batch's token history, the chain run, the cache and each row's stops."""

    def __init__(self, model, prompts, *, chain, max_new_tokens, seed, generator, stop, stop_on_eos,
                 eos_token_ids, tokenizer, max_time, use_cache, context_length, batch_invariant=False,
                 trace=False):
        _check_run_settings(max_new_tokens, max_time, context_length)
        self.model = model
        self.max_new_tokens = int(max_new_tokens)
        self.device = _model_device(model)
        prompt_rows = _prompt_rows(prompts, _vocab_size(model))
        B = len(prompt_rows)
        self.prompt_lengths = [len(p) for p in prompt_rows]
        self.stops = StopStrings(stop)
        if self.stops and tokenizer is None:
            raise ValueError("stop strings are matched on decoded text: pass tokenizer=")
        self.eos_ids = resolve_eos_ids(eos_token_ids, tokenizer)
        self.stop_ids = frozenset(self.eos_ids) if stop_on_eos else frozenset()
        self.streams = [TextStream(tokenizer, self.stops) for _ in range(B)] if tokenizer is not None else None
        self.new_tokens: list[list[int]] = [[] for _ in range(B)]
        self.reasons: list[str | None] = [None] * B
        self.rows = list(range(B))  # original index of each row still in the batch
        self.deadline = Deadline(max_time)
        self.chain = resolve_chain(chain)
        self.context_length = context_length if context_length is not None else model_context_length(model)
        self.takes_mask = _accepts(model, "attention_mask") and _accepts(model, "position_ids")
        # Optional in the protocol: logits for the last position only (no [B, T, V] at prefill),
        # and a batch-invariant forward.
        self.last_only = {"last_only": True} if _accepts(model, "last_only") else {}
        if batch_invariant and not _accepts(model, "batch_invariant"):
            raise ConfigError(f"batch_invariant=True, but {type(model).__name__} has no batch-invariant mode "
                             "(its forward takes no batch_invariant argument)")
        self.invariant = {"batch_invariant": True} if batch_invariant else {}
        if self.chain.selector is None:
            raise ValueError(f"{self.chain!r} is logits-only: generation needs a chain that ends in a selector")
        has_cache = callable(getattr(model, "new_cache", None))
        crop_is_window = all(p.keeps_last_window for p in self.chain.context)
        if use_cache and not (has_cache and crop_is_window):
            why = ("the model has no new_cache()" if not has_cache else
                   "a context processor of the chain crops in its own way (not the last window tokens)")
            raise ConfigError(f"use_cache=True, but {why}")
        self.cached = has_cache and use_cache is not False and crop_is_window
        self.trace = (8 if trace is True else int(trace)) if trace else None
        self.traces: list[list] | None = [[] for _ in range(B)] if self.trace else None
        seeds = _row_seeds(seed, B)
        if seeds is not None and generator is not None:
            raise ValueError("pass seed or generator, not both")
        self.was_training = model.training if isinstance(model, torch.nn.Module) else None
        self._setup(prompt_rows, seeds, generator, tokenizer)

    @torch.inference_mode()
    def _setup(self, prompt_rows, seeds, generator, tokenizer):
        B, P = len(prompt_rows), max(self.prompt_lengths, default=0)
        self.hist = torch.zeros(B, P + min(self.max_new_tokens, HISTORY_CHUNK), dtype=torch.long, device=self.device)
        ragged = len(set(self.prompt_lengths)) > 1
        self.mask = torch.ones_like(self.hist, dtype=torch.bool) if ragged else None
        for i, p in enumerate(prompt_rows):
            if len(p):
                self.hist[i, P - len(p):P] = p if isinstance(p, torch.Tensor) else torch.tensor(p)
            if ragged:
                self.mask[i, :P - len(p)] = False
        self.T = P  # columns of hist filled
        lengths = torch.tensor(self.prompt_lengths, dtype=torch.long, device=self.device)
        self.run = self.chain.start(B, seeds=seeds, generator=generator, prompt_lengths=lengths, trace=self.trace,
                                    attention_mask=None if self.mask is None else self.mask[:, :P],
                                    context_length=self.context_length, eos_token_ids=self.eos_ids,
                                    tokenizer=tokenizer)
        self.window = self.run.window()
        self.vocab_limit = _undecodable_ids(_vocab_size(self.model), tokenizer, self.device)
        if B and self.max_new_tokens:
            _prepare(self.model)
            if self.was_training:
                self.model.eval()
        self.cache = self.model.new_cache(B) if self.cached and B and self.max_new_tokens else None

    def steps(self, guard_each_step: bool = True):
        """Decode; yield ``(step, rows, tokens, texts, finished)`` per step for the rows decoded.
        Each step runs under inference_mode, which is off again while the caller has the report."""
        guard = torch.inference_mode if guard_each_step else contextlib.nullcontext
        try:
            for step in range(self.max_new_tokens if self.rows else 0):
                with guard():
                    tokens = self._step(step)                # forward, chain, append: list[int]
                    report = self._check_stops(step, tokens)  # eos, stop strings, length, time
                yield report
                if not self.rows:
                    break
            for i, reason in enumerate(self.reasons):  # max_new_tokens == 0
                self.reasons[i] = reason or "length"
        finally:
            if self.was_training:
                self.model.train()

    def _step(self, step: int) -> list[int]:
        logits = self._next_logits(step)                   # [B, V], the last position's
        if self.vocab_limit is not None:                   # ids the tokenizer cannot decode: never sampled
            logits = logits.index_fill(-1, self.vocab_limit, float("-inf"))
        if self.mask is not None:
            self.run.ctx.attention_mask = self.mask[:, :self.T]
        tokens = self.run.select(self.hist[:, :self.T], logits)  # [B]
        if self.traces is not None:
            for row, traced in zip(self.rows, self.run.last_trace):
                self.traces[row].append(traced)
        if self.T == self.hist.shape[1]:
            self._grow()
        self.hist[:, self.T] = tokens
        self.T += 1
        return tokens.tolist()

    def _grow(self) -> None:
        """More history columns: a chunk at a time, up to what max_new_tokens can fill."""
        room = max(self.prompt_lengths) + self.max_new_tokens - self.hist.shape[1]
        extra = min(max(HISTORY_CHUNK, self.hist.shape[1]), room)
        self.hist = torch.cat([self.hist, self.hist.new_zeros(self.hist.shape[0], extra)], dim=1)
        if self.mask is not None:
            self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], extra)], dim=1)

    def _check_stops(self, step: int, tokens: list[int]):
        last_step = step + 1 == self.max_new_tokens
        out_of_time = not last_step and self.deadline.passed()
        ended = self.run.ctx.finished  # rows a processor ended (ctx.finish): their token is kept
        if self.streams is None and not (last_step or out_of_time or ended) and self.stop_ids.isdisjoint(tokens):
            for row, token in zip(self.rows, tokens):  # the common step: no row ends, no text
                self.new_tokens[row].append(token)
            return step, list(self.rows), tokens, [""] * len(tokens), [None] * len(tokens)
        texts, finished, done = [], [], []
        for i, (row, token) in enumerate(zip(self.rows, tokens)):
            text, reason = "", None
            stream = self.streams[row] if self.streams is not None else None
            if token in self.stop_ids:
                reason = "eos"
            else:
                self.new_tokens[row].append(token)
                if stream is not None:
                    text = stream.push(token)
                    if stream.stopped:
                        reason = "stop"
                        del self.new_tokens[row][stream.kept_tokens:]
                if reason is None and i in ended:
                    reason = ended[i]
                if reason is None and (last_step or out_of_time):
                    reason = "length" if last_step else "time"
            if reason is not None:
                if stream is not None:
                    text += stream.flush()
                self.reasons[row] = reason
                done.append(i)
            texts.append(text)
            finished.append(reason)
        report = (step, list(self.rows), tokens, texts, finished)
        if done:
            self._drop_rows(done)
        return report

    def _drop_rows(self, done: list[int]) -> None:
        gone = set(done)
        keep = [i for i in range(len(self.rows)) if i not in gone]
        self.rows = [self.rows[i] for i in keep]
        if not keep or self.T - max(self.prompt_lengths) >= self.max_new_tokens:
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.hist = self.hist.index_select(0, index)
        if self.mask is not None:
            self.mask = self.mask.index_select(0, index)
            self.positions = self.positions.index_select(0, index) if self.positions is not None else None
        if self.cache is not None:
            self.cache.select_rows(index)
        self.run.keep_rows(index)

    # -- forward passes: [B, V] logits of the last position ------------------------------------------
    positions: torch.Tensor | None = None  # cached path, ragged: position ids from cache_start on
    cache_start: int = 0  # the history column the cache's first position holds

    def _next_logits(self, step: int) -> torch.Tensor:
        if self.cache is not None:
            if step == 0:
                return self._prefill()
            if self.window is None or self.T - self.cache_start <= self.window:
                return self._decode_one()
            self.cache = None  # past the window: positions shift every step, re-feed (see top)
        return self._plain()

    def _prefill(self) -> torch.Tensor:
        T, w = self.T, self.window
        self.cache_start = start = T - w if w is not None and T > w else 0
        if self.mask is None:
            return _last(self.model(self.hist[:, start:T], cache=self.cache, **self.last_only, **self.invariant))
        self.positions = positions(self.mask[:, start:])
        n = T - start
        return _last(self.model(self.hist[:, start:T], cache=self.cache, attention_mask=self.mask[:, start:T],
                                position_ids=self.positions[:, :n], **self.last_only, **self.invariant))

    def _decode_one(self) -> torch.Tensor:
        T, start = self.T, self.cache_start
        if self.mask is None:
            return _last(self.model(self.hist[:, T - 1:T], cache=self.cache, **self.invariant))
        return _last(self.model(self.hist[:, T - 1:T], cache=self.cache, attention_mask=self.mask[:, start:T],
                                position_ids=self.positions[:, T - 1 - start:T - start], **self.invariant))

    def _plain(self) -> torch.Tensor:
        T, w = self.T, self.window
        ids = self.run.crop(self.hist[:, :T])
        if w is not None and ids.shape[1] > w:
            ids = ids[:, -w:]
        if self.mask is None:
            return _last(self.model(ids, **self.last_only, **self.invariant))
        mask = self.mask[:, T - ids.shape[1]:T]  # context processors keep the last columns
        if bool(mask.all()):
            return _last(self.model(ids, **self.last_only, **self.invariant))
        if self.takes_mask:
            return _last(self.model(ids, attention_mask=mask, position_ids=positions(mask), **self.last_only,
                                    **self.invariant))
        pads = (~mask).sum(1).tolist()  # no attention_mask: feed each equal-padding group unpadded
        logits = None
        for pad in sorted(set(pads)):
            group = torch.tensor([i for i, p in enumerate(pads) if p == pad], device=ids.device)
            part = _last(self.model(ids.index_select(0, group)[:, pad:], **self.last_only, **self.invariant))
            if logits is None:
                logits = part.new_empty(ids.shape[0], part.shape[-1])
            logits.index_copy_(0, group, part)
        return logits

    def results(self) -> list[GenerationResult]:
        return [GenerationResult(tokens=self.new_tokens[i],
                                 text=None if self.streams is None else self.streams[i].text,
                                 finish_reason=self.reasons[i] or "length",
                                 prompt_length=self.prompt_lengths[i],
                                 trace=None if self.traces is None else self.traces[i])
                for i in range(len(self.new_tokens))]


# -- helpers -----------------------------------------------------------------------------------------

def _last(out) -> torch.Tensor:
    logits = out if isinstance(out, torch.Tensor) else out.logits  # Hugging Face-style outputs too
    return logits[:, -1, :]


def _prompt_rows(prompts, vocab_size: int | None) -> list:
    """Each prompt as a list of ints or a 1-d LongTensor; refuses what cannot be token ids."""
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() == 1:
            prompts = prompts.unsqueeze(0)
        if prompts.dim() != 2:
            raise ValueError(f"prompts tensor must be [B, T], got shape {list(prompts.shape)}")
        if prompts.is_floating_point() or prompts.is_complex() or prompts.dtype == torch.bool:
            raise ValueError(f"prompts must hold integer token ids, not {prompts.dtype}")
        rows = list(prompts.long().cpu())
    elif isinstance(prompts, Sequence) and not isinstance(prompts, (str, bytes)) and prompts \
            and all(_is_id(t) for t in prompts):
        rows = [list(prompts)]
    elif isinstance(prompts, Sequence) and not isinstance(prompts, (str, bytes)):
        rows = [_prompt_row(p, i) for i, p in enumerate(prompts)]
    else:
        raise TypeError(f"prompts must be token-id lists or a LongTensor, not {type(prompts).__name__}")
    if not rows:
        raise ValueError("prompts is empty; pass at least one prompt")
    for i, p in enumerate(rows):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty; every prompt needs at least one token")
        low, high = (int(p.min()), int(p.max())) if isinstance(p, torch.Tensor) else (min(p), max(p))
        if low < 0 or (vocab_size is not None and high >= vocab_size):
            bad = low if low < 0 else high
            raise ValueError(f"prompt {i} holds token id {bad}, outside the model's vocabulary [0, {vocab_size})"
                             if vocab_size is not None else f"prompt {i} holds a negative token id {bad}")
    return rows


def _is_id(t) -> bool:
    return isinstance(t, int) and not isinstance(t, bool)


def _prompt_row(p, i: int):
    if isinstance(p, torch.Tensor):
        if p.is_floating_point() or p.is_complex() or p.dtype == torch.bool:
            raise ValueError(f"prompt {i} must hold integer token ids, not {p.dtype}")
        return p.reshape(-1).long().cpu()
    if isinstance(p, (str, bytes)) or not isinstance(p, Sequence) or not all(_is_id(t) for t in p):
        raise ValueError(f"prompt {i} must be a list of integer token ids (encode text with the tokenizer first)")
    return list(p)


MAX_SEED = 2**63 - 1  # torch.manual_seed's range for non-negative seeds


def _row_seeds(seed, batch_size: int) -> list[int] | None:
    if seed is None:
        return None
    seeds = [seed + i for i in range(batch_size)] if _is_id(seed) else list(seed) if isinstance(seed, Sequence) else None
    if seeds is None or not all(_is_id(s) for s in seeds):
        raise ValueError(f"seed must be an int or one int per prompt, not {seed!r:.80}")
    if seeds and not (0 <= min(seeds) and max(seeds) <= MAX_SEED):
        raise ValueError(f"seeds must lie in [0, 2**63 - 1]; got {min(seeds) if min(seeds) < 0 else max(seeds)}")
    if len(seeds) != batch_size:
        raise ValueError(f"{len(seeds)} seeds for {batch_size} prompts")
    return seeds


def _check_run_settings(max_new_tokens, max_time, context_length) -> None:
    if not _is_id(max_new_tokens) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if max_time is not None and not (isinstance(max_time, (int, float)) and not isinstance(max_time, bool)
                                     and max_time > 0 and not math.isnan(max_time)):
        raise ValueError(f"max_time must be a number of seconds > 0 (or None), got {max_time!r}")
    if context_length is not None and (not _is_id(context_length) or context_length < 1):
        raise ValueError(f"context_length must be an int >= 1 (or None), got {context_length!r}")


def _vocab_size(model) -> int | None:
    """The model's vocabulary size, when it says (``config.vocab_size``)."""
    value = getattr(getattr(model, "config", None), "vocab_size", None)
    return value if _is_id(value) and value > 0 else None


def _undecodable_ids(model_vocab: int | None, tokenizer, device) -> torch.Tensor | None:
    """The ids of the model's vocabulary that ``tokenizer`` cannot decode (a padded vocabulary's
    extra rows, gaps in the tokenizer's ids), never sampled; a tokenizer the model cannot serve
    is refused (``check_compatible``)."""
    if model_vocab is None or tokenizer is None:
        return None
    from samplekit.model.tokenizer import check_compatible, undecodable_ids

    check_compatible(model_vocab, tokenizer, "the tokenizer")
    ids = undecodable_ids(tokenizer, model_vocab)
    return torch.tensor(ids, dtype=torch.long, device=device) if ids else None


def _model_device(model) -> torch.device:
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def _accepts(model, name: str) -> bool:
    """Whether calling ``model`` takes the keyword ``name`` (per class for modules)."""
    if isinstance(model, torch.nn.Module):
        return _forward_accepts(type(model), name)
    return _callable_accepts(model, name)


@functools.lru_cache(maxsize=256)
def _forward_accepts(cls: type, name: str) -> bool:
    return _callable_accepts(cls.forward, name)


def _callable_accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


_PREPARED: "weakref.WeakKeyDictionary[Any, list]" = weakref.WeakKeyDictionary()


def _prepare(model) -> None:
    """Call ``model.prepare_for_inference()`` unless it ran since the parameters last changed:
    replaced (a new ``nn.Parameter`` object), changed in place (an optimizer step,
    ``load_state_dict``) or moved (``.to()``)."""
    prepare = getattr(model, "prepare_for_inference", None)
    if not callable(prepare):
        return
    if _PREPARED.get(model) == _fingerprint(model):
        return
    prepare()
    _PREPARED[model] = _fingerprint(model)


def _fingerprint(model) -> list:
    """Each parameter's identity, storage and version counter."""
    params = model.parameters() if isinstance(model, torch.nn.Module) else ()
    return [(id(p), p.data_ptr(), p._version) for p in params]
