"""A request body -> a ``Job``: the scheduler requests to submit and how to answer.

Fields are OpenAI's (``/v1/completions``, ``/v1/chat/completions``), the sampling extras of
vLLM and llama.cpp's server (``samplekit.serve.mapping``), and ``samplekit`` (a whole chain
config, a trace). A field that is null counts as absent; a field the server does not know is a
400 naming it, except ``user`` and llama.cpp's ``cache_prompt``, which clients send routinely and
which change nothing here. Every refusal is an ``APIError`` naming the field and what is allowed.

Prompts that do not fit: a completion prompt longer than the room the context window leaves
beside ``max_tokens`` is cut from the left (the model keeps its last tokens, as the engine's
context window would); a chat prompt is never cut (its head holds the template and the system
message) and gets a 413, as does any prompt beyond ``limits.MAX_PROMPT_TOKENS``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from samplekit.config import SEED_LIMIT
from samplekit.errors import ParameterError, SampleKitError
from samplekit.messages import short_repr
from samplekit.params import Param
from samplekit.requests import Request
from samplekit.serve import chat, limits, mapping
from samplekit.serve.errors import APIError, bad

COMMON = ("model", "n", "best_of", "max_tokens", "stop", "seed", "stream", "stream_options", "samplekit")
COMPLETION = ("prompt", "logprobs", "echo")
CHAT = ("messages", "logprobs", "top_logprobs", "max_completion_tokens", "add_generation_prompt")
IGNORED = ("user", "cache_prompt")
HINTS = {"suffix": "inserting text (fill-in-the-middle) is not supported",
         "tools": "tool calls are not supported", "tool_choice": "tool calls are not supported",
         "functions": "function calls are not supported", "function_call": "function calls are not supported",
         "response_format": "structured output is not mapped; use samplekit.chain with the grammar plugin's "
                            "json_schema or regex processors when it is installed",
         "n_probs": "use logprobs (completions) or top_logprobs (chat)"}


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

    @property
    def choices(self) -> int:
        return len(self.requests) * self.n


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
        hint = HINTS.get(name, "not supported by this server (the README lists the fields)")
        raise bad(name, f"{short_repr(name)[1:-1]}: {hint}", code="unsupported_field")
    _check_model(body, served)
    sk = mapping.parse_samplekit(body.get("samplekit"), served.registry)
    n = _check(Param("n", "int", 1, low=1, high=limits.MAX_N), body.get("n", 1), "n")
    if body.get("best_of") is not None and body["best_of"] != n:
        raise bad("best_of", f"best_of: {short_repr(body['best_of'])} is not supported; only best_of = n ({n})")
    stream = _check(Param("stream", "bool", False), body.get("stream", False), "stream")
    include_usage = _stream_options(body.get("stream_options"), stream)
    stop = _stops(body["stop"]) if "stop" in body else tuple(sk.run.get("stop", ()))
    seed = _seed(body["seed"]) if "seed" in body else sk.run.get("seed")
    explicit = mapping.given(body)
    fields = mapping.validate(explicit, vocab_size=served.vocab_size, context_length=served.context_length)
    stop_on_eos = not fields.get("ignore_eos", not sk.run.get("stop_on_eos", True))
    chain = _chain(fields, sk, served)
    logprobs = _logprobs(kind, body)
    trace = max(sk.trace, logprobs or 0, 1 if logprobs is not None else 0)

    if kind == "completion":
        if "prompt" not in body:
            raise bad("prompt", "prompt: missing; expected a string, a list of strings, a list of token ids or a "
                                "list of lists of token ids")
        echo = _check(Param("echo", "bool", False), body.get("echo", False), "echo")
        if echo and logprobs is not None:
            raise bad("echo", "echo with logprobs would need the prompt's log-probabilities, which are not "
                              "supported: drop one of them")
        raw = _prompts(body["prompt"], served)
        max_tokens = _max_tokens(body, sk, served, "max_tokens", limits.DEFAULT_MAX_TOKENS)
        prompts, truncated = zip(*(_fit(p, max_tokens, served) for p in raw))
        echo_texts = [served.decode(p) for p in raw] if echo else None
    else:
        messages = chat.messages_of(body.get("messages"))
        generation = _check(Param("add_generation_prompt", "bool", True), body.get("add_generation_prompt", True),
                            "add_generation_prompt")
        text = chat.render(served.tokenizer, messages, add_generation_prompt=generation, model=served.model_id)
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

    job_id = ("cmpl-" if kind == "completion" else "chatcmpl-") + uuid.uuid4().hex
    requests = [Request(prompt=list(p), id=(job_id, i), chain=chain, max_new_tokens=max_tokens, seed=seed,
                        stop=stop, n=n, stop_on_eos=stop_on_eos, max_time=sk.run.get("max_time"),
                        trace=trace or None)
                for i, p in enumerate(prompts)]
    if len(requests) * n > limits.MAX_CHOICES:
        raise bad("n", f"n: {len(requests)} prompts x n {n} = {len(requests) * n} choices; at most "
                       f"{limits.MAX_CHOICES}")
    return Job(kind, job_id, requests, n, stream, include_usage, logprobs, sk.trace > 0, echo_texts,
               list(truncated))


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


def _chain(fields: dict[str, Any], sk: mapping.SamplekitSpec, served: Served):
    """The Chain for the request: the samplekit field's, or the table's from the fields."""
    stop_ids = list(fields.get("stop_token_ids", ()))
    if sk.chain is not None:
        base = mapping.entries({})[0]
        clash = [name for name, value in fields.items() if name not in ("ignore_eos", "stop_token_ids", "samplers")
                 and mapping.entries({name: value})[0] != base]
        if clash:
            raise bad(clash[0], f"{clash[0]}: samplekit.chain replaces the sampling fields; put it into the chain "
                                "or drop it")
        chain = sk.chain
    else:
        chain, _ = mapping.entries({**served.defaults, **fields}, set(fields))
        mapping.check_plugins(chain, set(fields), served.registry)
    try:
        return served.chains.get(chain, stop_ids)
    except SampleKitError as exc:
        raise bad("samplekit" if sk.chain is not None else None, str(exc)) from None


def _logprobs(kind: str, body: dict) -> int | None:
    """Candidates per token for logprobs, or None when not asked for."""
    if kind == "completion":
        if "logprobs" not in body:
            return None
        return _check(Param("logprobs", "int", 0, low=0, high=limits.MAX_LOGPROBS), body["logprobs"], "logprobs")
    wanted = _check(Param("logprobs", "bool", False), body.get("logprobs", False), "logprobs")
    top = _check(Param("top_logprobs", "int", 0, low=0, high=limits.MAX_LOGPROBS), body.get("top_logprobs", 0),
                 "top_logprobs")
    if "top_logprobs" in body and not wanted:
        raise bad("top_logprobs", "top_logprobs: allowed only with logprobs: true")
    return top if wanted else None


def _max_tokens(body: dict, sk: mapping.SamplekitSpec, served: Served, name: str, default: int) -> int:
    high = limits.MAX_TOKENS if served.context_length is None else min(limits.MAX_TOKENS, served.context_length)
    value = body.get(name, sk.run.get("max_new_tokens", default))
    if name not in body and "max_new_tokens" in sk.run:
        name = "samplekit.max_new_tokens"
    return _check(Param(name, "int", default, low=1, high=high), value, name)


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
