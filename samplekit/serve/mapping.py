"""Request fields -> a samplekit chain: the one table (``FIELDS``), the order (``ORDER``).

A request's sampling fields (OpenAI's, vLLM's and llama.cpp's server's) become one chain whose
processors run in this order (vLLM's and Hugging Face's: temperature before the truncations, as
OpenAI clients expect; llama.cpp's ``samplers`` field reorders the middle part):

    logit_bias, sequence_bias, bad_words (and bad_words_ids), min_tokens   what may be chosen at all
    -> penalties (repetition, frequency, presence), no_repeat_ngram, DRY
    -> temperature (or dynamic temperature), smoothing, top_h, top_k, top_p, min_p, typical_p,
       top_n_sigma, XTC
    -> adaptive_p (it reshapes the final distribution: always last, as in llama.cpp)
    -> the selector: multinomial; greedy when temperature is 0; mirostat replaces multinomial

``stop_token_ids`` and ``ignore_eos`` add no processor: they are the request's run settings
(``Request.stop_token_ids``, ``stop_on_eos``), checked by the decoding loop. A field at its
"off" value adds nothing (temperature 1, top_p 1, top_k 0 or -1, min_p 0, penalties 0 or 1, ...).
Every value is checked against a ``samplekit.params.Param`` (the config validator's own checks),
so a refused value is a 400 naming the field and what is allowed.
``python -m samplekit.serve.mapping`` prints the table in Markdown (docs/serving.md's
"Every request field" is written from it when the documentation is built).

The server's ``--config`` gives the fields' defaults (its chain must be one the table can write);
a request's own fields override them one by one. The ``samplekit`` field holds a whole chain
config instead (``parse_samplekit``): only registered processors and validated values.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from samplekit.chain_cache import ChainCache as SharedChainCache
from samplekit.config import RUN_KEYS, parse_config, preset_path
from samplekit.errors import ParameterError, SampleKitError
from samplekit.messages import short_repr
from samplekit.params import Param
from samplekit.serve import limits
from samplekit.serve.errors import bad

# The chain's slots, in the order the processors run. llama.cpp's ``samplers`` reorders MIDDLE.
FIRST = ("logit_bias", "sequence_bias", "bad_words", "min_tokens")
MIDDLE = ("penalties", "no_repeat_ngram", "dry", "temperature", "smoothing", "top_h", "top_k", "top_p", "min_p",
          "typical_p", "top_n_sigma", "xtc")
LAST = ("adaptive_p",)  # after every reorderable slot, just before the selector
ORDER = (*FIRST, *MIDDLE, *LAST, "selector")
# llama.cpp's sampler names (its ``samplers`` field) -> slots.
SAMPLERS = {"penalties": ("penalties", "no_repeat_ngram"), "dry": ("dry",), "top_n_sigma": ("top_n_sigma",),
            "top_k": ("top_k",), "typ_p": ("typical_p",), "typical_p": ("typical_p",), "top_p": ("top_p",),
            "min_p": ("min_p",), "xtc": ("xtc",), "temperature": ("temperature",),
            "smoothing": ("smoothing",), "top_h": ("top_h",)}  # the last two: samplekit's names (no llama.cpp peer)
GREEDY_SKIPS = ("temperature", "smoothing", "top_h", "top_k", "top_p", "min_p", "typical_p", "top_n_sigma", "xtc",
                "adaptive_p")


@dataclass(frozen=True)
class Field:
    """One sampling field: where it comes from, the values it takes (``param``), the chain slot it
    fills, what it becomes there, and its off value or default. ``plugin``: the processor it needs
    beyond the built-ins."""

    name: str
    origin: str
    param: Param
    slot: str
    becomes: str
    off: str
    plugin: str | None = None
    accepted: str | None = None  # what the table says is accepted, when not the param's own words

    def allowed(self) -> str:
        return self.accepted or self.param.allowed()


def _p(name, kind, default, **kw) -> Param:
    return Param(name, kind, default, **kw)


FIELDS: tuple[Field, ...] = (
    Field("logit_bias", "OpenAI", _p("logit_bias", "token_bias", None, low=-100, high=100, nullable=True),
          "logit_bias", "`logit_bias {bias}`: adds the value to the token's logit (vLLM's way; -100 all but bans)",
          "empty", accepted="mapping of token ids (OpenAI writes them as strings) to numbers in [-100, 100]"),
    Field("sequence_bias", "transformers", _p("sequence_bias", "json", None, nullable=True), "sequence_bias",
          "`sequence_bias {bias}`: adds the bias to a sequence's last token when the tokens before it end the "
          "history", "empty", accepted="list of [sequence, bias] pairs (sequence: a list of token ids, or text), "
          "or a mapping of text to a bias"),
    Field("bad_words", "vLLM", _p("bad_words", "str_list", (), nonempty=True), "bad_words",
          "`banned_strings {strings}`: bans every token that would complete a word", "empty"),
    Field("bad_words_ids", "transformers", _p("bad_words_ids", "json", None, nullable=True), "bad_words",
          "`banned_sequences {sequences}`: bans a sequence's last token when the tokens before it end the history",
          "empty", accepted="list of token sequences, each a non-empty list of token ids"),
    Field("min_tokens", "vLLM", _p("min_tokens", "int", 0, low=0, high=limits.MAX_TOKENS), "min_tokens",
          "`min_new_tokens {n}`: end-of-text suppressed for the first n tokens", "0"),
    Field("stop_token_ids", "vLLM", _p("stop_token_ids", "int_list", ()), "run",
          "the request's `stop_token_ids`: ends the sample after one of these tokens (kept in the text; "
          "a run setting, no processor)", "empty"),
    Field("ignore_eos", "vLLM", _p("ignore_eos", "bool", False), "run",
          "the request's `stop_on_eos: false` (no processor)", "false"),
    Field("repetition_penalty", "vLLM", _p("repetition_penalty", "float", 1.0, low=0, low_open=True, divisor=True),
          "penalties", "`repetition_penalty {penalty, scope: history}` (prompt and output tokens)", "1"),
    Field("repeat_penalty", "llama.cpp", _p("repeat_penalty", "float", 1.0, low=0, low_open=True, divisor=True),
          "penalties", "the same as repetition_penalty (give one, or both equal)", "1"),
    Field("repeat_last_n", "llama.cpp", _p("repeat_last_n", "int", -1, low=-1), "penalties",
          "the three penalties' `last_n`: only the last n tokens of each penalty's scope count; -1 all of them, "
          "0 turns the penalties off", "-1"),
    Field("frequency_penalty", "OpenAI", _p("frequency_penalty", "float", 0.0, low=-2, high=2), "penalties",
          "`frequency_penalty {penalty}` over the output tokens (vLLM's scope)", "0"),
    Field("presence_penalty", "OpenAI", _p("presence_penalty", "float", 0.0, low=-2, high=2), "penalties",
          "`presence_penalty {penalty}` over the output tokens", "0"),
    Field("no_repeat_ngram_size", "text-generation-webui", _p("no_repeat_ngram_size", "int", 0, low=0),
          "no_repeat_ngram", "`no_repeat_ngram {size}`", "0"),
    Field("dry_multiplier", "llama.cpp", _p("dry_multiplier", "float", 0.0, low=0), "dry",
          "`dry {multiplier, base, allowed_length, penalty_last_n, sequence_breakers}`", "0", "dry"),
    Field("dry_base", "llama.cpp", _p("dry_base", "float", 1.75, low=1, low_open=True), "dry", "`dry.base`",
          "1.75", "dry"),
    Field("dry_allowed_length", "llama.cpp", _p("dry_allowed_length", "int", 2, low=1), "dry",
          "`dry.allowed_length`", "2", "dry"),
    Field("dry_penalty_last_n", "llama.cpp", _p("dry_penalty_last_n", "int", -1, low=-1), "dry",
          "`dry.penalty_last_n` (-1 the whole history; 0 turns DRY off)", "-1", "dry"),
    Field("dry_sequence_breakers", "llama.cpp", _p("dry_sequence_breakers", "str_list", ("\n", ":", '"', "*"),
                                                   nonempty=True), "dry",
          "`dry.sequence_breakers`", '["\\n", ":", "\\"", "*"]', "dry"),
    Field("temperature", "OpenAI", _p("temperature", "float", 1.0, low=0, divisor=True), "temperature",
          "`temperature {value}`; 0 makes the selector `greedy` (and the truncations, XTC and mirostat moot)",
          "1"),
    Field("dynatemp_range", "llama.cpp", _p("dynatemp_range", "float", 0.0, low=0), "temperature",
          "> 0: `dynamic_temperature {temperature, range, exponent}` instead of temperature", "0"),
    Field("dynatemp_exponent", "llama.cpp", _p("dynatemp_exponent", "float", 1.0, low=0), "temperature",
          "`dynamic_temperature.exponent`", "1"),
    Field("smoothing_factor", "text-generation-webui", _p("smoothing_factor", "float", 0.0, low=0, high=100),
          "smoothing", "`smoothing {factor, curve}` (quadratic sampling)", "0"),
    Field("smoothing_curve", "text-generation-webui", _p("smoothing_curve", "float", 1.0, low=1, high=10),
          "smoothing", "`smoothing.curve` (1 quadratic, 3 cubic)", "1"),
    Field("top_h", "transformers", _p("top_h", "float", None, low=0, low_open=True, high=1, nullable=True), "top_h",
          "`top_h {top_h}` (entropy-bounded truncation over the top 100, as transformers' `TopHLogitsWarper`)",
          "null"),
    Field("top_k", "vLLM", _p("top_k", "int", -1, low=-1), "top_k", "`top_k {k}`", "0 or -1"),
    Field("top_p", "OpenAI", _p("top_p", "float", 1.0, low=0, low_open=True, high=1), "top_p", "`top_p {p}`", "1"),
    Field("min_p", "vLLM", _p("min_p", "float", 0.0, low=0, high=1), "min_p", "`min_p {p}`", "0"),
    Field("typical_p", "llama.cpp", _p("typical_p", "float", 1.0, low=0, low_open=True, high=1), "typical_p",
          "`typical_p {mass}`", "1"),
    Field("top_n_sigma", "llama.cpp", _p("top_n_sigma", "float", -1.0, low=-1), "top_n_sigma",
          "`top_n_sigma {n}`", "<= 0"),
    Field("min_keep", "llama.cpp", _p("min_keep", "int", 0, low=0), "top_p",
          "`min_tokens_to_keep` of top_p, min_p and typical_p", "0 (keep 1)"),
    Field("xtc_probability", "llama.cpp", _p("xtc_probability", "float", 0.0, low=0, high=1), "xtc",
          "`xtc {threshold, probability}`", "0", "xtc"),
    Field("xtc_threshold", "llama.cpp", _p("xtc_threshold", "float", 0.1, low=0, low_open=True, high=1), "xtc",
          "`xtc.threshold` (> 0.5 turns XTC off, as in llama.cpp)", "0.1", "xtc"),
    Field("adaptive_target", "llama.cpp", _p("adaptive_target", "float", -1.0, high=1), "adaptive_p",
          "`adaptive_p {target, decay}`, last before the selector (not with mirostat)", "< 0"),
    Field("adaptive_decay", "llama.cpp", _p("adaptive_decay", "float", 0.9, low=0, high=0.99), "adaptive_p",
          "`adaptive_p.decay`", "0.9"),
    Field("mirostat", "llama.cpp", _p("mirostat", "int", 0, low=0, high=2), "selector",
          "1: selector `mirostat {tau, eta}`, 2: `mirostat_v2 {tau, eta}`, instead of multinomial", "0",
          "mirostat"),
    Field("mirostat_tau", "llama.cpp", _p("mirostat_tau", "float", 5.0, low=0, high=1000), "selector",
          "`mirostat.tau`", "5", "mirostat"),
    Field("mirostat_eta", "llama.cpp", _p("mirostat_eta", "float", 0.1, low=0, high=1), "selector",
          "`mirostat.eta`", "0.1", "mirostat"),
    Field("samplers", "llama.cpp", _p("samplers", "str_list", (), nonempty=True), "order",
          "the order of the middle slots, by llama.cpp's names (penalties, dry, top_n_sigma, top_k, typ_p, "
          "top_p, min_p, xtc, temperature) and samplekit's (smoothing, top_h); slots it leaves out do not run",
          "the order above"),
)
BY_NAME = {f.name: f for f in FIELDS}


# -- reading the fields ------------------------------------------------------------------------------

def given(body: dict[str, Any]) -> dict[str, Any]:
    """The sampling fields the body sets (null counts as not set)."""
    return {k: v for k, v in body.items() if k in BY_NAME and v is not None}


def validate(fields: dict[str, Any], *, vocab_size: int, context_length: int | None) -> dict[str, Any]:
    """Each given field checked against its declaration; 400 naming the field and what is allowed."""
    out = {}
    for name, value in fields.items():
        f = BY_NAME[name]
        if name == "logit_bias":
            out[name] = _logit_bias(value, vocab_size)
            continue
        try:
            out[name] = f.param.validate(value, name)
        except ParameterError as exc:
            raise bad(name, str(exc)) from None
        if name == "stop_token_ids":
            _check_ids(name, out[name], vocab_size)
        if name in SEQUENCE_FIELDS:
            _check_sequences(name, out[name], vocab_size)
        if name == "samplers":
            unknown = [s for s in out[name] if s not in SAMPLERS]
            if unknown:
                raise bad(name, f"samplers: unknown sampler {short_repr(unknown[0])}; allowed: "
                                + ", ".join(SAMPLERS))
    if "repetition_penalty" in out and "repeat_penalty" in out and out["repetition_penalty"] != out["repeat_penalty"]:
        raise bad("repeat_penalty", "repetition_penalty and repeat_penalty are the same setting: give one")
    if "repeat_penalty" in out:  # llama.cpp's name for the same setting
        out["repetition_penalty"] = out.pop("repeat_penalty")
    return out


# Fields holding token sequences -> (the processor, its parameter) that checks them.
SEQUENCE_FIELDS = {"sequence_bias": ("sequence_bias", "bias"), "bad_words_ids": ("banned_sequences", "sequences")}


def _check_sequences(name: str, value: Any, vocab_size: int) -> None:
    """``sequence_bias`` / ``bad_words_ids``: the processor's own checks, token ids within the
    vocabulary; ``bad_words_ids`` holds token ids only (text goes in ``bad_words``)."""
    from samplekit.processors.sequences import BannedSequences, SequenceBias

    processor, param = SEQUENCE_FIELDS[name]
    cls = SequenceBias if processor == "sequence_bias" else BannedSequences
    try:
        cls(**{param: value}, _where=name)
    except ParameterError as exc:
        raise bad(name, str(exc).replace(f"{cls.name}.{param}", name)) from None
    pairs = value.items() if isinstance(value, dict) else value
    for i, item in enumerate(pairs):
        seq = item[0] if name == "sequence_bias" else item
        if name == "bad_words_ids" and not isinstance(seq, (list, tuple)):
            raise bad(name, f"{name}[{i}]: {short_repr(seq)} is not allowed; expected a non-empty list of token "
                            "ids (ban text with bad_words)")
        if isinstance(seq, (list, tuple)):
            _check_ids(f"{name}[{i}]", seq, vocab_size)


def _logit_bias(value: Any, vocab_size: int) -> dict[int, float]:
    """OpenAI's ``{"token id": bias}`` (ids as strings or numbers), biases in [-100, 100]."""
    if not isinstance(value, dict):
        raise bad("logit_bias", f"logit_bias: {short_repr(value)} is not allowed; expected a mapping of token "
                                "ids to numbers in [-100, 100]")
    parsed: dict[Any, Any] = {}
    for key, bias in value.items():
        try:
            token = int(key) if isinstance(key, str) and key.strip().lstrip("-").isdigit() else key
        except ValueError:
            token = key
        if not isinstance(token, int) or isinstance(token, bool):
            raise bad("logit_bias", f"logit_bias: key {short_repr(key)} is not a token id; expected token ids "
                                    f"in [0, {vocab_size - 1}]")
        parsed[token] = bias
    try:
        checked = BY_NAME["logit_bias"].param.validate(parsed, "logit_bias")
    except ParameterError as exc:
        raise bad("logit_bias", str(exc)) from None
    _check_ids("logit_bias", list(checked), vocab_size)
    return checked


def _check_ids(name: str, ids, vocab_size: int) -> None:
    for t in ids:
        if not 0 <= t < vocab_size:
            raise bad(name.split("[")[0], f"{name}: token id {t} is out of range; expected token ids in "
                                          f"[0, {vocab_size - 1}]")


# -- fields -> chain entries -------------------------------------------------------------------------

def entries(values: dict[str, Any], explicit: set[str] = frozenset()) -> tuple[list[tuple[str, dict]], list[int]]:
    """The chain, as ``(processor, params)`` in order, for the field ``values`` (defaults filled
    in by ``values_with``), and the stop token ids. ``explicit``: the fields the request set
    (a field set explicitly but left out by ``samplers`` is refused)."""
    v = {f.name: f.param.default for f in FIELDS} | values
    greedy = v["temperature"] == 0
    middle = list(MIDDLE)
    if v["samplers"]:
        middle = [slot for name in v["samplers"] for slot in SAMPLERS[name]]
        middle = list(dict.fromkeys(middle))
    slots = [*FIRST, *middle, *LAST, "selector"]
    built: dict[str, list[tuple[str, dict]]] = {slot: _slot(slot, v) for slot in ORDER}
    for name in explicit:
        slot = BY_NAME[name].slot
        if slot in MIDDLE and slot not in slots and built[slot] and not (greedy and slot in GREEDY_SKIPS):
            raise bad(name, f"{name}: set, but samplers {list(v['samplers'])} leaves its sampler out; add it "
                            "to samplers or drop the field")
    chain: list[tuple[str, dict]] = []
    for slot in slots:
        if greedy and slot in GREEDY_SKIPS:
            continue
        chain += built[slot]
    return chain, list(v["stop_token_ids"])


def _slot(slot: str, v: dict[str, Any]) -> list[tuple[str, dict]]:
    keep = {"min_tokens_to_keep": max(1, v["min_keep"])}
    if slot == "logit_bias":
        return [("logit_bias", {"bias": v["logit_bias"]})] if v["logit_bias"] else []
    if slot == "sequence_bias":
        return [("sequence_bias", {"bias": v["sequence_bias"]})] if v["sequence_bias"] else []
    if slot == "bad_words":
        out = [("banned_strings", {"strings": list(v["bad_words"])})] if v["bad_words"] else []
        return out + ([("banned_sequences", {"sequences": v["bad_words_ids"]})] if v["bad_words_ids"] else [])
    if slot == "min_tokens":
        return [("min_new_tokens", {"n": v["min_tokens"]})] if v["min_tokens"] else []
    if slot == "penalties":
        if v["repeat_last_n"] == 0:
            return []
        window = {"last_n": v["repeat_last_n"]} if v["repeat_last_n"] > 0 else {}
        rep = v["repetition_penalty"]
        out = [("repetition_penalty", {"penalty": rep, "scope": "history", **window})] if rep != 1 else []
        out += [("frequency_penalty", {"penalty": v["frequency_penalty"], **window})] if v["frequency_penalty"] else []
        return out + ([("presence_penalty", {"penalty": v["presence_penalty"], **window})]
                      if v["presence_penalty"] else [])
    if slot == "no_repeat_ngram":
        return [("no_repeat_ngram", {"size": v["no_repeat_ngram_size"]})] if v["no_repeat_ngram_size"] else []
    if slot == "dry":
        if not v["dry_multiplier"] or v["dry_penalty_last_n"] == 0:
            return []
        return [("dry", {"multiplier": v["dry_multiplier"], "base": v["dry_base"],
                         "allowed_length": v["dry_allowed_length"], "penalty_last_n": v["dry_penalty_last_n"],
                         "sequence_breakers": list(v["dry_sequence_breakers"])})]
    if slot == "temperature":
        if v["dynatemp_range"] > 0:
            return [("dynamic_temperature", {"temperature": v["temperature"], "range": v["dynatemp_range"],
                                             "exponent": v["dynatemp_exponent"]})]
        return [("temperature", {"value": v["temperature"]})] if v["temperature"] != 1 else []
    if slot == "smoothing":
        return [("smoothing", {"factor": v["smoothing_factor"], "curve": v["smoothing_curve"]})] \
            if v["smoothing_factor"] else []
    if slot == "top_h":
        return [("top_h", {"top_h": v["top_h"]})] if v["top_h"] is not None else []
    if slot == "top_k":
        return [("top_k", {"k": v["top_k"]})] if v["top_k"] > 0 else []
    if slot == "top_p":
        return [("top_p", {"p": v["top_p"], **keep})] if v["top_p"] < 1 else []
    if slot == "min_p":
        return [("min_p", {"p": v["min_p"], **keep})] if v["min_p"] > 0 else []
    if slot == "typical_p":
        return [("typical_p", {"mass": v["typical_p"], **keep})] if v["typical_p"] < 1 else []
    if slot == "top_n_sigma":
        return [("top_n_sigma", {"n": v["top_n_sigma"]})] if v["top_n_sigma"] > 0 else []
    if slot == "xtc":
        if not v["xtc_probability"] or v["xtc_threshold"] > 0.5:
            return []
        return [("xtc", {"threshold": v["xtc_threshold"], "probability": v["xtc_probability"]})]
    if slot == "adaptive_p":
        if v["adaptive_target"] < 0:
            return []
        if v["mirostat"]:
            raise bad("adaptive_target", "adaptive_target: adaptive_p and mirostat each choose the final "
                                         "distribution; give one (adaptive_target < 0 or mirostat 0)")
        return [("adaptive_p", {"target": v["adaptive_target"], "decay": v["adaptive_decay"]})]
    if slot == "selector":
        if v["temperature"] == 0:
            return [("greedy", {})]
        if v["mirostat"]:
            name = "mirostat" if v["mirostat"] == 1 else "mirostat_v2"
            return [(name, {"tau": v["mirostat_tau"], "eta": v["mirostat_eta"]})]
        return [("multinomial", {})]
    return []


def check_plugins(chain: list[tuple[str, dict]], explicit: set[str], registry) -> None:
    """A processor the fields need but no installed plugin provides: 400 naming the field."""
    for name, _ in chain:
        try:
            registry.get(name)
        except SampleKitError:
            field_name = next((f.name for f in FIELDS if f.plugin and name.startswith(f.plugin) and f.name in explicit),
                              None) or next(iter(sorted(explicit)), None)
            plugin = f"samplekit-{name.split('_')[0]}"
            raise bad(field_name, f"{field_name}: needs the {name!r} processor (plugin {plugin}), which this server "
                                  "does not have") from None


# -- the samplekit field: a whole chain config ---------------------------------------------------------

@dataclass
class SamplekitSpec:
    """What the ``samplekit`` field asked for: a chain (or None: the flat fields'), a trace size,
    and the run settings it set explicitly."""

    chain: list[tuple[str, dict]] | None = None
    trace: int = 0
    run: dict[str, Any] = field(default_factory=dict)


SAMPLEKIT_KEYS = ("chain", "preset", "trace", *RUN_KEYS)
_FILE_PARAMS = ("_file", "_path", "_dir")


def parse_samplekit(value: Any, registry) -> SamplekitSpec:
    """The ``samplekit`` field: ``{"chain": [...]}`` or ``{"preset": NAME}`` (a bundled preset,
    never a path), ``trace`` (candidates per stage, 0 to MAX_TRACE) and the config's run settings,
    validated like a config file. Parameters that name a server file are refused."""
    if value is None:
        return SamplekitSpec()
    if not isinstance(value, dict):
        raise bad("samplekit", f"samplekit: {short_repr(value)} is not allowed; expected a mapping with keys "
                               + ", ".join(SAMPLEKIT_KEYS))
    unknown = [k for k in value if k not in SAMPLEKIT_KEYS]
    if unknown:
        raise bad("samplekit", f"samplekit: unknown key {short_repr(unknown[0])}; allowed keys: "
                               + ", ".join(SAMPLEKIT_KEYS))
    trace = value.get("trace") or 0
    try:
        trace = Param("trace", "int", 0, low=0, high=limits.MAX_TRACE).validate(trace, "samplekit.trace")
    except ParameterError as exc:
        raise bad("samplekit", str(exc)) from None
    if "chain" in value and "preset" in value:
        raise bad("samplekit", "samplekit: give chain or preset, not both")
    data: dict[str, Any] = {k: value[k] for k in RUN_KEYS if k in value}
    if "preset" in value:
        preset = value["preset"]
        path = preset_path(preset) if isinstance(preset, str) else None
        if path is None:
            from samplekit.config import preset_names

            raise bad("samplekit", f"samplekit.preset: {short_repr(preset)} is not a preset; allowed: "
                                   + ", ".join(preset_names()))
        from samplekit.config import load_yaml

        data["chain"] = load_yaml(path)["chain"]
    elif "chain" in value:
        data["chain"] = value["chain"]
    if "chain" not in data:
        data["chain"] = ["multinomial"]  # validates the run settings alone
        chain_given = False
    else:
        chain_given = True
    if chain_given:
        _refuse_files(data["chain"], registry)
    try:
        cfg = parse_config(data, source="samplekit", registry=registry)
    except SampleKitError as exc:
        raise bad("samplekit", str(exc)) from None
    run = {k: cfg.run[k] for k in RUN_KEYS if k in value}
    if run.get("max_time") is not None and run["max_time"] > limits.MAX_TIME:
        raise bad("samplekit", f"samplekit.max_time: {run['max_time']} is out of range; expected at most "
                               f"{limits.MAX_TIME:g} seconds")
    chain = [(s.name, dict(s.values)) for s in cfg.specs] if chain_given else None
    return SamplekitSpec(chain, trace, run)


def _refuse_files(chain: Any, registry) -> None:
    """Refuse, before any processor is built, a parameter that names a file on the server
    (``schema_file``, ``*_path``, ``*_dir``): building the processor would read it."""
    if not isinstance(chain, list):
        return
    for i, item in enumerate(chain):
        if not isinstance(item, dict) or len(item) != 1:
            continue
        (name, values), = item.items()
        try:
            params = registry.get(name).cls.params if isinstance(name, str) else ()
        except SampleKitError:
            continue  # parse_config names the unknown processor
        files = {p.name for p in params if p.name.endswith(_FILE_PARAMS)}
        named = [k for k in values if k in files] if isinstance(values, dict) else \
            ([params[0].name] if values is not None and len(params) == 1 and params[0].name in files else [])
        if named:
            raise bad("samplekit", f"samplekit: chain[{i}].{name}.{named[0]}: a request cannot name a file on the "
                                   "server; give the content itself")


# -- building chains (kept: equal chains are one Chain, so they share the scheduler's runs) ------------

class ChainCache(SharedChainCache):
    """Request chains built from ``(processor, params)`` lists: the shared chain cache
    (samplekit.chain_cache, bounded by count and by memory), ``size`` chains at most. Equal
    requests share one Chain object; chains differing only in per-row values share one run."""

    def __init__(self, registry, size: int = limits.CHAIN_CACHE):
        self.registry = registry
        super().__init__(self._build, max_chains=size)

    def _build(self, chain: list[tuple[str, dict]]):
        from samplekit.chain import Chain

        return Chain([self.registry.create(name, values, where="request") for name, values in chain],
                     source="request")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, tuple):
        return list(value)
    return repr(value)


# -- the server's defaults from --config ------------------------------------------------------------------

def defaults_from_config(cfg) -> dict[str, Any]:
    """The field values that write ``cfg``'s chain (a ChainConfig); a ConfigError when the table
    cannot write it (a processor it has no field for, another order, other settings)."""
    from samplekit.errors import ConfigError

    fields: dict[str, Any] = {}
    reverse = {
        "temperature": lambda s: {"temperature": s["value"]},
        "dynamic_temperature": lambda s: {"temperature": s["temperature"], "dynatemp_range": s["range"],
                                          "dynatemp_exponent": s["exponent"]},
        "top_k": lambda s: {"top_k": s["k"]},
        "top_p": lambda s: {"top_p": s["p"], "min_keep": s["min_tokens_to_keep"]},
        "min_p": lambda s: {"min_p": s["p"], "min_keep": s["min_tokens_to_keep"]},
        "typical_p": lambda s: {"typical_p": s["mass"], "min_keep": s["min_tokens_to_keep"]},
        "top_n_sigma": lambda s: {"top_n_sigma": s["n"]},
        "repetition_penalty": lambda s: {"repetition_penalty": s["penalty"], "repeat_last_n": s["last_n"]},
        "frequency_penalty": lambda s: {"frequency_penalty": s["penalty"], "repeat_last_n": s["last_n"]},
        "presence_penalty": lambda s: {"presence_penalty": s["penalty"], "repeat_last_n": s["last_n"]},
        "smoothing": lambda s: {"smoothing_factor": s["factor"], "smoothing_curve": s["curve"]},
        "top_h": lambda s: {"top_h": s["top_h"]},
        "adaptive_p": lambda s: {"adaptive_target": s["target"], "adaptive_decay": s["decay"]},
        "sequence_bias": lambda s: {"sequence_bias": s["bias"]},
        "banned_sequences": lambda s: {"bad_words_ids": s["sequences"]},
        "no_repeat_ngram": lambda s: {"no_repeat_ngram_size": s["size"]},
        "logit_bias": lambda s: {"logit_bias": s["bias"]},
        "banned_strings": lambda s: {"bad_words": s["strings"]},
        "min_new_tokens": lambda s: {"min_tokens": s["n"]},
        "dry": lambda s: {"dry_multiplier": s["multiplier"], "dry_base": s["base"],
                          "dry_allowed_length": s["allowed_length"], "dry_penalty_last_n": s["penalty_last_n"],
                          "dry_sequence_breakers": s["sequence_breakers"]},
        "xtc": lambda s: {"xtc_threshold": s["threshold"], "xtc_probability": s["probability"]},
        "greedy": lambda s: {"temperature": 0.0},
        "multinomial": lambda s: {},
        "mirostat": lambda s: {"mirostat": 1, "mirostat_tau": s["tau"], "mirostat_eta": s["eta"]},
        "mirostat_v2": lambda s: {"mirostat": 2, "mirostat_tau": s["tau"], "mirostat_eta": s["eta"]},
    }
    chain = cfg.build_chain()
    for p in chain.processors:
        if p.name not in reverse:
            raise ConfigError(f"{cfg.source}: the server's default chain must be one the request fields can write; "
                              f"{p.name!r} has no field (send such chains per request in the samplekit field)")
        fields.update(reverse[p.name](p.settings))
    rebuilt, _ = entries(fields)
    want = [(p.name, p.settings) for p in chain.processors]
    got = [(p.name, p.settings) for p in ChainCache(cfg._registry()).get(rebuilt).processors]
    if _plain(want) != _plain(got):
        names = " -> ".join(p.name for p in chain.processors)
        raise ConfigError(f"{cfg.source}: the request fields cannot write this chain ({names}): they would give "
                          f"{' -> '.join(n for n, _ in got)}; the server's defaults follow the table's order (see "
                          "docs/serving.md, or `python -m samplekit.serve.mapping`)")
    return fields


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_jsonable, sort_keys=True))


# -- the documentation's table -------------------------------------------------------------------------------

def markdown_table() -> str:
    """The mapping table in Markdown, from FIELDS (docs/serving.md holds this output)."""
    rows = ["| field | from | accepted | slot | becomes | off / default |", "|---|---|---|---|---|---|"]
    for f in FIELDS:
        needs = f" (plugin samplekit-{f.plugin})" if f.plugin else ""
        cells = (f"`{f.name}`", f.origin, f.allowed(), f.slot, f.becomes + needs, f.off)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    print("Chain order: " + " -> ".join(ORDER) + "\n")
    print(markdown_table())
