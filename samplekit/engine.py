"""Generation from Python: prompts in, new tokens (and text) out, one chain step per token.

    results = generate(model, [[1, 2, 3], [4, 5]], chain="balanced", max_new_tokens=50, seed=0,
                       tokenizer=enc, stop=["\\n\\n"])
    for event in generate_stream(model, prompt_ids, tokenizer=enc):
        print(event.text, end="", flush=True)

``generate`` admits every prompt into one ``samplekit.decoding.Decoding`` (the loop every entry
point shares: prefill, KV cache or plain re-feeding, stops, finished rows) and steps it until
every row is done: a static batch. Ragged prompts are left-padded; padding is masked out and each
row's positions count from 0, so a row computes what it would alone. Without seeds, the rows'
seeds are drawn once from torch's global generator, so ``torch.manual_seed(n)`` reproduces a run.

The model runs under ``torch.inference_mode`` in eval mode (its training mode is restored
afterwards). ``model.prepare_for_inference()`` (GPTModel: fuse the q/k/v projections) is called
when present, and again whenever a parameter was replaced, moved or changed in place since the
last call, so fused copies of the weights are never stale (``samplekit.protocol.prepare``).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from samplekit.chain import Chain
from samplekit.decoding import Decoding, Group, Row, TokenEvent, crops_last_window, new_row
from samplekit.errors import ConfigError
from samplekit.protocol import model_context_length, prepare, support, vocab_size
from samplekit.requests import Request
from samplekit.stopping import Deadline, StopStrings, resolve_eos_ids

__all__ = ["GenerationResult", "TokenEvent", "generate", "generate_stream", "generate_text", "model_context_length",
           "resolve_chain"]


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
    with torch.inference_mode(), _eval_mode(model):  # one guard for the whole loop: nothing runs between steps
        decoding, rows = _start(model, prompts, chain=chain, max_new_tokens=max_new_tokens, seed=seed,
                                generator=generator, stop=stop, stop_on_eos=stop_on_eos, eos_token_ids=eos_token_ids,
                                tokenizer=tokenizer, max_time=max_time, use_cache=use_cache,
                                context_length=context_length, batch_invariant=batch_invariant, trace=trace)
        while not decoding.idle:
            decoding.step(events=False)
    return [_result(row) for row in rows]


def generate_stream(model, prompts, *, chain=None, max_new_tokens: int = 200, seed=None,
                    generator=None, stop=(), stop_on_eos: bool = True, eos_token_ids=None,
                    tokenizer=None, max_time: float | None = None, use_cache: bool | None = None,
                    context_length: int | None = None, batch_invariant: bool = False,
                    trace: bool | int = False) -> Iterator[TokenEvent]:
    """Like ``generate``, but yield a ``TokenEvent`` per row per token as it is chosen (rows in
    batch order within a step). Each row's last event has ``finished`` set."""
    with _eval_mode(model):
        with torch.inference_mode():
            decoding, _ = _start(model, prompts, chain=chain, max_new_tokens=max_new_tokens, seed=seed,
                                 generator=generator, stop=stop, stop_on_eos=stop_on_eos, eos_token_ids=eos_token_ids,
                                 tokenizer=tokenizer, max_time=max_time, use_cache=use_cache,
                                 context_length=context_length, batch_invariant=batch_invariant, trace=trace)
        while not decoding.idle:
            with torch.inference_mode():  # off again while the caller has the events
                events, _ = decoding.step()
            yield from events


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


# -- the static batch ------------------------------------------------------------------------------

def _start(model, prompts, *, chain, max_new_tokens, seed, generator, stop, stop_on_eos, eos_token_ids, tokenizer,
           max_time, use_cache, context_length, batch_invariant, trace) -> tuple[Decoding, list[Row]]:
    """Check the arguments; a Decoding holding one row per prompt, and those rows in order."""
    _check_run_settings(max_new_tokens, max_time, context_length)
    prompt_rows = _prompt_rows(prompts, vocab_size(model))
    if StopStrings(stop) and tokenizer is None:
        raise ValueError("stop strings are matched on decoded text: pass tokenizer=")
    chain = resolve_chain(chain)
    if chain.selector is None:
        raise ValueError(f"{chain!r} is logits-only: generation needs a chain that ends in a selector")
    if use_cache and not crops_last_window(chain) and support(model).cache:
        raise ConfigError("use_cache=True, but a context processor of the chain crops in its own way (not the last "
                          "window tokens)")
    seeds = _row_seeds(seed, len(prompt_rows))
    if seeds is not None and generator is not None:
        raise ValueError("pass seed or generator, not both")
    eos_ids = resolve_eos_ids(eos_token_ids, tokenizer)
    context_length = context_length if context_length is not None else model_context_length(model)
    decoding = Decoding(model, tokenizer=tokenizer, eos_ids=eos_ids, context_length=context_length,
                        batch_invariant=batch_invariant, cached=use_cache if use_cache or crops_last_window(chain) else False)
    group = Group(chain, (8 if trace is True else int(trace)) if trace else None)
    deadline = Deadline(max_time)
    stop = (stop,) if isinstance(stop, str) else tuple(stop)
    rows = [new_row(Request(prompt=p, max_new_tokens=max_new_tokens, stop=stop, stop_on_eos=stop_on_eos), i, chain,
                    group, seed=None if seeds is None else seeds[i], tokenizer=tokenizer, eos_ids=eos_ids,
                    context_length=context_length, deadline=deadline, traces=bool(trace))
            for i, p in enumerate(prompt_rows)]
    if max_new_tokens:
        prepare(model)
    decoding.admit(rows, generator=generator)
    return decoding, rows


def _result(row: Row) -> GenerationResult:
    return GenerationResult(tokens=row.tokens, text=None if row.stream is None else row.stream.text,
                            finish_reason=row.reason or "length", prompt_length=len(row.prompt), trace=row.traces)


@contextlib.contextmanager
def _eval_mode(model):
    """The model in eval mode, its training mode restored afterwards."""
    training = isinstance(model, torch.nn.Module) and model.training
    if training:
        model.eval()
    try:
        yield
    finally:
        if training:
            model.train()


# -- helpers -----------------------------------------------------------------------------------------

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
