"""The settings of transformers' ``generate`` equivalent to a chain, for like-for-like timings.

``hf_settings(chain)`` maps each built-in processor that ``generate`` also has to its keyword
(``temperature`` -> ``temperature``, ``top_k`` -> ``top_k``, ``top_h``, ``top_p``, ``min_p``,
``typical_p`` (mass), ``epsilon_cutoff``, ``eta_cutoff`` (epsilon), ``repetition_penalty``
(scope "history"), ``no_repeat_ngram`` -> ``no_repeat_ngram_size``, ``logit_bias`` ->
``sequence_bias``, ``banned_tokens`` -> ``bad_words_ids``, ``min_new_tokens``), and the
selector to ``do_sample`` (multinomial: True; greedy: False, when ``generate`` runs no warper).
Processors at a neutral value (a zero presence penalty, an unbounded context window) are left
out. The result is ``exact`` when ``generate`` then computes the same distribution at every step:
every processor has an equivalent and the chain's order is ``generate``'s own fixed order, up to
swaps of processors that commute. Otherwise its ``notes`` say what differs, and the settings are
the nearest ones (what has no equivalent is left out).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["NEUTRAL", "HFSettings", "hf_settings"]

# generate's warpers switched off unless a chain sets them (a model's generation config may set them)
NEUTRAL = {"temperature": 1.0, "top_k": 0, "top_p": 1.0}

# generate's own order (transformers 5: _get_logits_processor): processors, then warpers.
_PROCESSORS = ("logit_bias", "repetition_penalty", "no_repeat_ngram", "banned_tokens", "min_new_tokens")
_WARPERS = ("temperature", "top_h", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff")
_RANK = {name: i for i, name in enumerate(_PROCESSORS + _WARPERS)}
_BANS = ("banned_tokens", "min_new_tokens", "no_repeat_ngram")  # only set logits to -inf
_COMMUTE = {frozenset(p) for p in (("temperature", "top_k"), ("temperature", "repetition_penalty"))} | {
    frozenset((ban, other)) for ban in _BANS
    for other in ("temperature", "repetition_penalty", "logit_bias", *_BANS) if other != ban}


@dataclass
class HFSettings:
    """``generate`` keywords (``do_sample`` and the warpers and processors set), whether they
    are the chain's exact equivalent, and the notes saying what differs when not."""

    kwargs: dict[str, Any]
    exact: bool = True
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())

    def to_dict(self) -> dict[str, Any]:
        kwargs = {k: ({str(key): b for key, b in v.items()} if k == "sequence_bias" else v)
                  for k, v in self.kwargs.items()}  # JSON: sequence_bias keys are tuples
        return {"generate": kwargs, "exact": self.exact, "notes": list(self.notes)}


def _keyword(p) -> tuple[str, Any] | None:
    """``p``'s generate keyword and value; None for a neutral value; KeyError: no equivalent."""
    s, name = p.settings, p.name
    if name in ("top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff") and \
            s.get("min_tokens_to_keep", 1) != 1:
        raise KeyError(f"{name} with min_tokens_to_keep {s['min_tokens_to_keep']} (generate keeps 1 when sampling)")
    if name == "temperature":
        return ("temperature", s["value"]) if s["value"] != 1.0 else None
    if name == "top_k":
        return "top_k", s["k"]
    if name == "top_h":
        if s.get("top_n", 100) != 100:
            raise KeyError(f"top_h over top_n {s['top_n']} (generate's counts the top 100)")
        return "top_h", s["top_h"]
    if name in ("top_p", "min_p"):
        return name, s["p"]
    if name == "typical_p":
        return ("typical_p", s["mass"]) if s["mass"] < 1.0 else None
    if name in ("epsilon_cutoff", "eta_cutoff"):
        return (name, s["epsilon"]) if s["epsilon"] > 0 else None
    if name == "repetition_penalty":
        if s["penalty"] == 1.0:
            return None
        if s.get("scope", "history") != "history":
            raise KeyError(f"repetition_penalty over scope {s['scope']!r} (generate's counts the whole history)")
        return "repetition_penalty", s["penalty"]
    if name in ("frequency_penalty", "presence_penalty") and s["penalty"] == 0.0:
        return None
    if name == "no_repeat_ngram":
        return "no_repeat_ngram_size", s["size"]
    if name == "logit_bias":
        return ("sequence_bias", {(int(t),): float(b) for t, b in s["bias"].items()}) if s["bias"] else None
    if name == "banned_tokens":
        return "bad_words_ids", [[int(t)] for t in s["tokens"]]
    if name == "min_new_tokens":
        return "min_new_tokens", s["n"]
    if name == "context_window" and s.get("context_length") is None:
        return None
    raise KeyError(f"{name} has no equivalent in transformers' generate")


def hf_settings(chain) -> HFSettings:
    """The ``generate`` settings equivalent to ``chain`` (see the module docstring)."""
    out = HFSettings(kwargs={})
    selector = chain.selector.name if chain.selector is not None else None
    if selector not in ("greedy", "multinomial"):
        out.exact = False
        out.notes.append(f"the selector {selector} has no equivalent in transformers' generate: "
                         "timed with multinomial sampling (do_sample=True)")
    sampling = selector != "greedy"
    mapped: list[tuple[Any, str, Any]] = []  # (processor, keyword, value)
    for p in [*chain.context, *chain.logits]:
        try:
            found = _keyword(p)
        except KeyError as missing:
            out.exact = False
            out.notes.append(f"{missing.args[0]}: left out")
            continue
        if found is not None:
            mapped.append((p, *found))
    if sampling and any(p.name == "temperature" and value == 0.0 for p, _, value in mapped):
        sampling = False  # temperature 0 keeps each row's maximum: sampling is greedy
        mapped = [m for m in mapped if m[0].name != "temperature"]
    seen: set[str] = set()
    for at, (p, keyword, value) in enumerate(mapped):
        if keyword in seen:
            out.exact = False
            out.notes.append(f"{p.name} appears twice (generate applies each setting once): the first is timed")
            continue
        seen.add(keyword)
        if not sampling and p.name in _WARPERS:
            if not p.keeps_argmax:
                out.exact = False
                out.notes.append(f"{p.name} before greedy: generate runs no warper when do_sample=False, so "
                                 "it is left out (it can change the argmax)")
            continue
        out.kwargs[keyword] = value
        later = [q for q, _, _ in mapped[at + 1:] if _RANK[q.name] < _RANK[p.name]
                 and frozenset((p.name, q.name)) not in _COMMUTE]
        if later:
            out.exact = False
            out.notes.append(f"generate applies {later[0].name} before {p.name}; the chain applies it after")
    out.kwargs = {"do_sample": sampling, **out.kwargs}
    return out
