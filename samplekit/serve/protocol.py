"""A request body -> a ``Job``: the scheduler requests to submit and how to answer.

Fields are OpenAI's (``/v1/completions``, ``/v1/chat/completions``), the sampling extras of
vLLM and llama.cpp's server (``samplekit.serve.mapping``), structured outputs and tools
(``samplekit.serve.structured``), and ``samplekit`` (a whole chain config, a trace, the
logprobs mode). A field that is null counts as absent; a field the server does not know is a
400 naming it, except ``user``, ``store``, ``metadata`` and llama.cpp's ``cache_prompt``, which
clients send routinely and which change nothing here. Every refusal is an ``APIError`` naming
the field and what is allowed.

Decisions for what other servers accept (docs/serving.md, "Compatibility decisions"):
- ``samplekit`` beside flat fields: the flat fields override the chain's (or preset's) values,
  as ``--set`` does on the command line; a field whose processor the chain lacks adds it in the
  table's slot; ``samplers`` (an order of the table's slots) cannot reorder a samplekit chain.
- ``logprobs: 0`` (completions): the sampled token's own log-probability (vLLM's and OpenAI's);
  every ``top_logprobs`` entry holds the sampled token beside the top candidates (vLLM's).
- ``echo`` with ``logprobs``, and vLLM's ``prompt_logprobs``: the prompt tokens' log-probabilities
  (the first null); ``max_tokens: 0`` scores the prompt without generating.
- ``samplekit.logprobs`` ("raw", the default, or "processed") and vLLM's ``logprobs_mode``
  (``raw_logprobs``, ``processed_logprobs``): the log-probabilities before or after the chain.
- ``n_probs`` (llama.cpp): the same as ``logprobs`` (completions) or ``logprobs: true,
  top_logprobs: n`` (chat). ``best_of`` (vLLM, legacy OpenAI): only equal to ``n``.
- ``include_stop_str_in_output`` (vLLM): the matched stop string is kept at the end of the text.

Prompts that do not fit: a completion prompt longer than the room the context window leaves
beside ``max_tokens`` is cut from the left (the model keeps its last tokens, as the engine's
context window would), unless its log-probabilities were asked for (a 413 then); a chat prompt
is never cut (its head holds the template and the system message) and gets a 413, as does any
prompt beyond ``limits.MAX_PROMPT_TOKENS``.
"""

from __future__ import annotations

import json
import time
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any

from samplekit.config import SEED_LIMIT
from samplekit.errors import ParameterError, SampleKitError
from samplekit.messages import not_utf8, short_repr
from samplekit.params import Param
from samplekit.requests import Request
from samplekit.serve import chat, limits, mapping, structured
from samplekit.serve.errors import APIError, bad

COMMON = ("model", "n", "best_of", "max_tokens", "stop", "seed", "stream", "stream_options", "samplekit",
          "logprobs_mode", "include_stop_str_in_output", "n_probs", *structured.FIELDS)
COMPLETION = ("prompt", "logprobs", "echo", "prompt_logprobs")
CHAT = ("messages", "logprobs", "top_logprobs", "max_completion_tokens", "add_generation_prompt")
IGNORED = ("user", "cache_prompt", "store", "metadata")
HINTS = {"suffix": "inserting text (fill-in-the-middle) is not supported",
         "functions": "the legacy functions field is not supported; send tools with tool_choice",
         "function_call": "the legacy function_call field is not supported; send tools with tool_choice"}
LOGPROBS_MODES = {"raw": "raw", "processed": "processed", "raw_logprobs": "raw", "processed_logprobs": "processed"}
# The processors the table writes -> the field that writes them (a chain error names the field).
WRITTEN_BY = {"logit_bias": "logit_bias", "banned_strings": "bad_words", "min_new_tokens": "min_tokens"}


@dataclass
class Served:
    """What every request is checked against: the model's name, tokenizer and sizes, the
    processor registry, the built chains and the server's default field values."""

    model_id: str
    tokenizer: Any
    vocab_size: int
    context_length: int | None
    registry: Any
    chains: mapping.ChainCache
    defaults: dict[str, Any] = field(default_factory=dict)
    created: int = field(default_factory=lambda: int(time.time()))
    _texts: dict[int, str] = field(default_factory=dict)
    _bytes: dict[int, bytes] = field(default_factory=dict)
    eos_ids: tuple[int, ...] = ()
    _started: Any = field(default_factory=weakref.WeakSet)  # chains whose processors started once here

    def token_bytes(self, token: int) -> bytes:
        value = self._bytes.get(token)
        if value is None:
            try:
                value = bytes(self.tokenizer.decode_single_token_bytes(token))
            except (KeyError, ValueError, TypeError):
                value = b""
            if len(self._bytes) < 1 << 18:
                self._bytes[token] = value
        return value

    def token_text(self, token: int) -> str:
        """A token as text; bytes that are not whole UTF-8 characters as ``bytes:\\xNN`` (OpenAI's)."""
        text = self._texts.get(token)
        if text is None:
            raw = self.token_bytes(token)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
            if len(self._texts) < 1 << 18:
                self._texts[token] = text
        return text

    def decode(self, tokens: list[int]) -> str:
        return b"".join(self.token_bytes(t) for t in tokens).decode("utf-8", "replace")


@dataclass
class Job:
    """One API request, parsed: its scheduler requests (one per prompt) and how to answer."""

    kind: str  # "completion" or "chat"
    id: str
    requests: list[Request]
    n: int
    stream: bool
    include_usage: bool
    logprobs: int | None  # candidates per token; None: no logprobs
    trace: bool  # send samplekit_trace (samplekit.trace was asked for)
    echo_texts: list[str] | None  # completions with echo: each prompt's text
    truncated: list[int]  # tokens cut from each prompt's left
    prompts: list[list[int]] = field(default_factory=list)  # each prompt's ids (as the model sees them)
    prompt_logprobs: int | None = None  # vLLM's prompt_logprobs: candidates per prompt token; None: not asked
    echo_logprobs: bool = False  # completions: echo with logprobs (prompt tokens lead the logprobs)
    processed: bool = False  # logprobs after the chain (samplekit.logprobs: processed)
    tool: structured.Tool | None = None  # answer with tool_calls
    include_stop: bool = False  # keep the matched stop string in the text
    stops: tuple[str, ...] = ()

    @property
    def choices(self) -> int:
        return len(self.prompts) * self.n

    @property
    def scoring(self) -> int | None:
        """Candidates per prompt token to score the prompts with, or None: no scoring."""
        if self.prompt_logprobs is None and not self.echo_logprobs:
            return None
        return max(self.prompt_logprobs or 0, self.logprobs if self.echo_logprobs else 0)

    @property
    def score_only(self) -> bool:
        """max_tokens 0: the prompt is scored, nothing is generated."""
        return not self.requests


def _check(param: Param, value: Any, name: str) -> Any:
    try:
        return param.validate(value, name)
    except ParameterError as exc:
        raise bad(name, str(exc)) from None


def parse(kind: str, body: Any, served: Served) -> Job:
    """The Job for a ``/v1/completions`` (kind "completion") or ``/v1/chat/completions`` ("chat") body."""
    if not isinstance(body, dict):
        raise bad(None, f"the request body must be a JSON object, not {short_repr(body)}")
    body = {k: v for k, v in body.items() if v is not None}
    allowed = (*COMMON, *(COMPLETION if kind == "completion" else CHAT), *mapping.BY_NAME, *IGNORED)
    unknown = [k for k in body if k not in allowed]
    if unknown:
        name = unknown[0]
        hint = HINTS.get(name, "not supported by this server (docs/serving.md lists the fields)")
        raise bad(name, f"{short_repr(name)[1:-1]}: {hint}", code="unsupported_field")
    _check_model(body, served)
    sk_value, mode = _samplekit_logprobs(body.get("samplekit"), body.get("logprobs_mode"))
    sk = mapping.parse_samplekit(sk_value, served.registry)
    constraint = structured.parse(body, kind)
    structured.check_plugin(constraint, served.registry)
    n = _check(Param("n", "int", 1, low=1, high=limits.MAX_N), body.get("n", 1), "n")
    if body.get("best_of") is not None and body["best_of"] != n:
        raise bad("best_of", f"best_of: {short_repr(body['best_of'])} is not supported; only best_of = n ({n}). "
                             "To pick the best of several, send n with logprobs and compare the summed token "
                             "log-probabilities")
    stream = _check(Param("stream", "bool", False), body.get("stream", False), "stream")
    include_usage = _stream_options(body.get("stream_options"), stream)
    include_stop = _check(Param("include_stop_str_in_output", "bool", False),
                          body.get("include_stop_str_in_output", False), "include_stop_str_in_output")
    stop = _stops(body["stop"]) if "stop" in body else tuple(sk.run.get("stop", ()))
    seed = _seed(body["seed"]) if "seed" in body else sk.run.get("seed")
    explicit = mapping.given(body)
    _bound_fields(explicit)
    fields = mapping.validate(explicit, vocab_size=served.vocab_size, context_length=served.context_length)
    stop_on_eos = not fields.get("ignore_eos", not sk.run.get("stop_on_eos", True))
    chain = _chain(fields, sk, served, constraint)
    logprobs = _logprobs(kind, body)
    prompt_top = _prompt_logprobs(kind, body, logprobs)
    trace = max(sk.trace, logprobs or 0, 1 if logprobs is not None else 0)
    echo_logprobs = False
    tools = None

    if kind == "completion":
        if "prompt" not in body:
            raise bad("prompt", "prompt: missing; expected a string, a list of strings, a list of token ids or a "
                                "list of lists of token ids")
        echo = _check(Param("echo", "bool", False), body.get("echo", False), "echo")
        echo_logprobs = echo and logprobs is not None
        scored = prompt_top is not None or echo_logprobs
        raw = _prompts(body["prompt"], served)
        max_tokens = _max_tokens(body, sk, served, "max_tokens", limits.DEFAULT_MAX_TOKENS, low=0 if scored else 1)
        prompts, truncated = zip(*(_fit(p, max_tokens, served) for p in raw))
        if scored and any(truncated):
            raise APIError(413, f"prompt: {len(raw[truncated.index(max(truncated))])} tokens with max_tokens "
                                f"{max_tokens} pass the model's context window of {served.context_length} "
                                "tokens, and the prompt's log-probabilities need it whole; shorten it or lower "
                                "max_tokens", param="prompt", code="context_length_exceeded")
        echo_texts = [served.decode(p) for p in raw] if echo else None
    else:
        messages = chat.messages_of(body.get("messages"))
        generation = _check(Param("add_generation_prompt", "bool", True), body.get("add_generation_prompt", True),
                            "add_generation_prompt")
        text = chat.render(served.tokenizer, messages, add_generation_prompt=generation, model=served.model_id,
                           tools=constraint.tool_specs or None)
        ids = served.tokenizer.encode(text, allowed_special="all")
        if not ids:
            raise bad("messages", "messages: the chat template gave an empty prompt")
        _bound(ids, "messages")
        room = None if served.context_length is None else served.context_length - len(ids)
        if room is not None and room < 1:
            raise APIError(413, f"messages: the conversation is {len(ids)} tokens, and the model's context window "
                                f"is {served.context_length}: no room to generate; shorten it", param="messages",
                           code="context_length_exceeded")
        name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        default = min(limits.MAX_TOKENS, room) if room is not None else limits.MAX_TOKENS
        max_tokens = _max_tokens(body, sk, served, name, default)
        if room is not None and max_tokens > room:
            raise APIError(413, f"messages: the conversation ({len(ids)} tokens) plus {name} ({max_tokens}) pass the "
                                f"model's context window of {served.context_length} tokens; lower {name} to at "
                                f"most {room} or shorten the conversation", param=name,
                           code="context_length_exceeded")
        prompts, truncated, echo_texts = [ids], [0], None
        tools = constraint.tools
        if tools is not None and stream and n > 1:
            raise bad("n", "n: streamed tool calls are sent for one choice; with tools and stream, n must be 1")

    job_id = ("cmpl-" if kind == "completion" else "chatcmpl-") + uuid.uuid4().hex
    if len(prompts) * n > limits.MAX_CHOICES:
        raise bad("n", f"n: {len(prompts)} prompts x n {n} = {len(prompts) * n} choices; at most "
                       f"{limits.MAX_CHOICES}")
    requests = [] if max_tokens == 0 else [
        Request(prompt=list(p), id=(job_id, i), chain=chain, max_new_tokens=max_tokens, seed=seed, stop=stop, n=n,
                stop_on_eos=stop_on_eos, max_time=sk.run.get("max_time"), trace=trace or None,
                stop_token_ids=tuple(fields.get("stop_token_ids", ())))
        for i, p in enumerate(prompts)]
    return Job(kind, job_id, requests, n, stream, include_usage, logprobs, sk.trace > 0, echo_texts,
               list(truncated), prompts=[list(p) for p in prompts], prompt_logprobs=prompt_top,
               echo_logprobs=echo_logprobs, processed=mode == "processed", tool=tools, include_stop=include_stop,
               stops=stop)


def _samplekit_logprobs(value: Any, mode: Any) -> tuple[Any, str]:
    """The samplekit field without its ``logprobs`` key, and the logprobs mode (raw or processed)."""
    chosen = "raw"
    if mode is not None:
        if not isinstance(mode, str) or mode not in LOGPROBS_MODES:
            raise bad("logprobs_mode", f"logprobs_mode: {short_repr(mode)} is not allowed; expected raw_logprobs "
                                       "or processed_logprobs (logits are not reported)")
        chosen = LOGPROBS_MODES[mode]
    if isinstance(value, dict) and "logprobs" in value:
        value = dict(value)
        given = value.pop("logprobs")
        if given not in ("raw", "processed"):
            raise bad("samplekit", f"samplekit.logprobs: {short_repr(given)} is not allowed; expected raw (the "
                                   "model's) or processed (after the chain)")
        if mode is not None and LOGPROBS_MODES[mode] != given:
            raise bad("logprobs_mode", "logprobs_mode and samplekit.logprobs disagree: give one")
        chosen = given
    if isinstance(value, dict):
        size = len(json.dumps(value, ensure_ascii=False, default=str).encode("utf-8", "replace"))
        if size > limits.MAX_CHAIN_BYTES:
            raise bad("samplekit", f"samplekit: {size} bytes of JSON; at most {limits.MAX_CHAIN_BYTES}",
                      code="too_large")
    return value, chosen


def _bound_fields(fields: dict[str, Any]) -> None:
    """The fields whose cost grows with their size, bounded before anything is built."""
    words = fields.get("bad_words")
    if isinstance(words, list) and _too_many_words(words):
        raise bad("bad_words", f"bad_words: at most {limits.MAX_BAD_WORDS} strings of at most "
                               f"{limits.MAX_BAD_WORDS_CHARS} characters together")
    bias = fields.get("logit_bias")
    if isinstance(bias, dict) and len(bias) > limits.MAX_LOGIT_BIAS:
        raise bad("logit_bias", f"logit_bias: {len(bias)} entries; at most {limits.MAX_LOGIT_BIAS}")


def _too_many_words(words) -> bool:
    return len(words) > limits.MAX_BAD_WORDS or \
        sum(len(w) for w in words if isinstance(w, str)) > limits.MAX_BAD_WORDS_CHARS


def _bound_chain(chain: list[tuple[str, dict]]) -> None:
    """The samplekit chain's expensive parameters, bounded as the flat fields are."""
    for i, (name, values) in enumerate(chain):
        where = f"samplekit: chain[{i}].{name}"
        if name == "banned_strings":
            if _too_many_words(values.get("strings") or ()):
                raise bad("samplekit", f"{where}.strings: at most {limits.MAX_BAD_WORDS} strings of at most "
                                       f"{limits.MAX_BAD_WORDS_CHARS} characters together")
        if name == "logit_bias" and len(values.get("bias") or ()) > limits.MAX_LOGIT_BIAS:
            raise bad("samplekit", f"{where}.bias: at most {limits.MAX_LOGIT_BIAS} entries")
        if name in ("json_schema", "regex", "grammar"):
            size = len(json.dumps(values, ensure_ascii=False, default=str).encode("utf-8", "replace"))
            if size > limits.MAX_CONSTRAINT_BYTES:
                raise bad("samplekit", f"{where}: {size} bytes; a schema, pattern or grammar has at most "
                                       f"{limits.MAX_CONSTRAINT_BYTES}", code="constraint_too_large")


def _check_model(body: dict, served: Served) -> None:
    model = body.get("model")
    if model is None:
        return
    if not isinstance(model, str):
        raise bad("model", f"model: {short_repr(model)} is not a string")
    if model != served.model_id:
        raise APIError(404, f"model {short_repr(model)} does not exist; this server serves "
                            f"{served.model_id!r} (GET /v1/models)", param="model", code="model_not_found")


def _stream_options(value: Any, stream: bool) -> bool:
    if value is None:
        return False
    if not stream:
        raise bad("stream_options", "stream_options: allowed only with stream: true")
    if not isinstance(value, dict) or any(k != "include_usage" for k in value):
        raise bad("stream_options", f"stream_options: {short_repr(value)} is not allowed; expected "
                                    "{include_usage: boolean}")
    return _check(Param("include_usage", "bool", False), value.get("include_usage", False),
                  "stream_options.include_usage")


def _stops(value: Any) -> tuple[str, ...]:
    stops = [value] if isinstance(value, str) else value
    stops = _check(Param("stop", "str_list", (), nonempty=True), stops, "stop")
    if len(stops) > limits.MAX_STOPS or any(len(s) > limits.MAX_STOP_CHARS for s in stops):
        raise bad("stop", f"stop: at most {limits.MAX_STOPS} strings of at most {limits.MAX_STOP_CHARS} characters")
    return tuple(stops)


def _seed(value: Any) -> int | None:
    if value == -1 and not isinstance(value, bool):  # llama.cpp: -1 draws a seed
        return None
    try:
        return Param("seed", "int", None, low=0, high=SEED_LIMIT - 1).validate(value, "seed")
    except ParameterError as exc:
        raise bad("seed", f"{exc} (or -1: a fresh seed)") from None


def _chain(fields: dict[str, Any], sk: mapping.SamplekitSpec, served: Served, constraint: structured.Structured):
    """The Chain for the request: the samplekit field's (with the flat fields' values over it), or
    the table's from the fields; the structured-output constraint first."""
    if sk.chain is not None:
        if "samplers" in fields:
            raise bad("samplers", "samplers: orders the table's chain; a samplekit chain runs in its own order "
                                  "(write the order there)")
        chain = _merge(sk.chain, fields, served.registry)
        _bound_chain(chain)
    else:
        chain, _ = mapping.entries({**served.defaults, **fields}, set(fields))
        mapping.check_plugins(chain, set(fields), served.registry)
    if constraint.entry is not None:
        chain = [constraint.entry, *chain]
    try:
        built = served.chains.get(chain)
    except SampleKitError as exc:
        raise bad(constraint.source if constraint.source and constraint.entry[0] in str(exc)
                  else "samplekit" if sk.chain is not None else None, str(exc)) from None
    _preflight(built, served, sk.chain is not None, constraint)
    return built


def _merge(chain: list[tuple[str, dict]], fields: dict[str, Any], registry) -> list[tuple[str, dict]]:
    """``chain`` with the flat fields' processors over it: a processor it has gets the fields'
    values (as ``--set``), one it lacks is inserted in the table's slot; temperature 0 makes the
    selector greedy."""
    given = {k: v for k, v in fields.items() if k not in ("ignore_eos", "stop_token_ids")}
    if not given:
        return chain
    table, _ = mapping.entries(given, set(given))
    slot_of = _slots()
    canon = [registry.get(name).name if _known(registry, name) else name for name, _ in chain]
    out = [(name, dict(values)) for name, values in chain]
    for name, values in table:
        if name in ("multinomial", "greedy"):
            if name == "greedy" and out and _is_selector(registry, out[-1][0]):
                out[-1], canon[-1] = ("greedy", {}), "greedy"
            continue
        if name in canon:
            i = canon.index(name)
            out[i] = (out[i][0], {**out[i][1], **values})
            continue
        rank = slot_of.get(name, 0)
        position = 0
        for i, other in enumerate(canon):
            if other in slot_of and slot_of[other] <= rank:
                position = i + 1
        if position == len(out) and out and _is_selector(registry, out[-1][0]):
            position -= 1
        out.insert(position, (name, values))
        canon.insert(position, name)
    return out


def _slots() -> dict[str, int]:
    """Processor name -> the rank of the table's slot that writes it."""
    names = {"logit_bias": "logit_bias", "banned_strings": "bad_words", "min_new_tokens": "min_tokens",
             "repetition_penalty": "penalties", "frequency_penalty": "penalties", "presence_penalty": "penalties",
             "no_repeat_ngram": "no_repeat_ngram", "dry": "dry", "temperature": "temperature",
             "dynamic_temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p",
             "typical_p": "typical_p", "top_n_sigma": "top_n_sigma", "xtc": "xtc", "sequence_bias": "sequence_bias",
             "banned_sequences": "bad_words", "smoothing": "smoothing", "top_h": "top_h", "adaptive_p": "adaptive_p"}
    return {name: mapping.ORDER.index(slot) for name, slot in names.items()}


def _known(registry, name: str) -> bool:
    try:
        registry.get(name)
    except SampleKitError:
        return False
    return True


def _is_selector(registry, name: str) -> bool:
    return _known(registry, name) and registry.get(name).cls.stage.value == "selector"


def _preflight(chain, served: Served, from_samplekit: bool, constraint: structured.Structured) -> None:
    """Start each processor once with the server's tokenizer (once per built chain), so what can
    only fail then (a logit_bias string that is not one token, a constraint the tokenizer cannot
    serve) is the client's 400, not a failed generation."""
    from samplekit.processor import default_context

    if chain in served._started:
        return
    for p in chain.processors:
        try:
            p.start(1, default_context(1, tokenizer=served.tokenizer, eos_token_ids=tuple(served.eos_ids)))
        except SampleKitError as exc:
            name = (constraint.source if constraint.entry is not None and p.name == constraint.entry[0]
                    else "samplekit" if from_samplekit else WRITTEN_BY.get(p.name))
            raise bad(name, str(exc)) from None
        except Exception:  # noqa: BLE001 - a start that needs a real run: it is checked when the run starts
            continue
    served._started.add(chain)


def _logprobs(kind: str, body: dict) -> int | None:
    """Candidates per token for logprobs, or None when not asked for."""
    n_probs = _check(Param("n_probs", "int", 0, low=0, high=limits.MAX_LOGPROBS), body.get("n_probs", 0), "n_probs")
    if "n_probs" in body and ("logprobs" in body or "top_logprobs" in body):
        raise bad("n_probs", "n_probs: llama.cpp's name for logprobs" + (" (top_logprobs here)" if kind == "chat"
                  else "") + "; give one of them")
    if kind == "completion":
        if "logprobs" not in body:
            return n_probs or None
        return _check(Param("logprobs", "int", 0, low=0, high=limits.MAX_LOGPROBS), body["logprobs"], "logprobs")
    if n_probs:
        return n_probs
    wanted = _check(Param("logprobs", "bool", False), body.get("logprobs", False), "logprobs")
    top = _check(Param("top_logprobs", "int", 0, low=0, high=limits.MAX_LOGPROBS), body.get("top_logprobs", 0),
                 "top_logprobs")
    if "top_logprobs" in body and not wanted:
        raise bad("top_logprobs", "top_logprobs: allowed only with logprobs: true")
    return top if wanted else None


def _prompt_logprobs(kind: str, body: dict, logprobs: int | None) -> int | None:
    """vLLM's prompt_logprobs: candidates per prompt token, or None."""
    if "prompt_logprobs" not in body:
        return None
    return _check(Param("prompt_logprobs", "int", 0, low=0, high=limits.MAX_LOGPROBS), body["prompt_logprobs"],
                  "prompt_logprobs")


def _max_tokens(body: dict, sk: mapping.SamplekitSpec, served: Served, name: str, default: int,
                low: int = 1) -> int:
    """``max_tokens`` in [low, the bound]; 0 (``low`` 0) only where the prompt is scored."""
    high = limits.MAX_TOKENS if served.context_length is None else min(limits.MAX_TOKENS, served.context_length)
    value = body.get(name, sk.run.get("max_new_tokens", default))
    if name not in body and "max_new_tokens" in sk.run:
        name = "samplekit.max_new_tokens"
    if value == 0 and low == 1 and not isinstance(value, bool):
        raise bad(name, f"{name}: 0 generates nothing; it is for scoring a prompt (completions with echo and "
                        "logprobs, or prompt_logprobs); expected at least 1")
    return _check(Param(name, "int", default, low=low, high=high), value, name)


def _prompts(value: Any, served: Served) -> list[list[int]]:
    """OpenAI's four prompt forms: a string, strings, token ids, lists of token ids."""
    from samplekit.model.tokenizer import encode_prompt

    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, list) and value and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        items = [value]
    elif isinstance(value, list) and value:
        items = value
    else:
        raise bad("prompt", f"prompt: {short_repr(value)} is not allowed; expected a string, a list of strings, a "
                            "list of token ids or a list of lists of token ids")
    if len(items) > limits.MAX_PROMPTS:
        raise bad("prompt", f"prompt: {len(items)} prompts; at most {limits.MAX_PROMPTS} in one request")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            if len(item) > limits.MAX_PROMPT_TOKENS * 16:
                raise APIError(413, f"prompt: {len(item)} characters; at most {limits.MAX_PROMPT_TOKENS} tokens",
                               param="prompt", code="context_length_exceeded")
            problem = not_utf8(item)
            if problem:
                raise bad("prompt", f"prompt[{i}]: not valid Unicode text ({problem})")
            ids = encode_prompt(served.tokenizer, item, served.vocab_size)
        elif isinstance(item, list) and item and all(isinstance(t, int) and not isinstance(t, bool) for t in item):
            bad_ids = [t for t in item if not 0 <= t < served.vocab_size]
            if bad_ids:
                raise bad("prompt", f"prompt[{i}]: token id {short_repr(bad_ids[0])} is out of range; expected token "
                                    f"ids in [0, {served.vocab_size - 1}]")
            ids = list(item)
        else:
            raise bad("prompt", f"prompt[{i}]: {short_repr(item)} is not allowed; expected a string or a non-empty "
                                "list of token ids")
        _bound(ids, "prompt")
        out.append(ids)
    return out


def _bound(ids: list[int], name: str) -> None:
    if len(ids) > limits.MAX_PROMPT_TOKENS:
        raise APIError(413, f"{name}: {len(ids)} tokens; a prompt has at most {limits.MAX_PROMPT_TOKENS}",
                       param=name, code="context_length_exceeded")


def _fit(ids: list[int], max_tokens: int, served: Served) -> tuple[list[int], int]:
    """The prompt cut from the left to leave ``max_tokens`` of room in the context window."""
    context = served.context_length
    if context is None or len(ids) + max_tokens <= context:
        return ids, 0
    keep = context - max_tokens
    if keep < 1:
        raise APIError(413, f"prompt: with max_tokens {max_tokens} the model's context window ({context} tokens) "
                            f"leaves no room for the prompt; lower max_tokens to at most {context - 1}",
                       param="max_tokens", code="context_length_exceeded")
    return ids[-keep:], len(ids) - keep
