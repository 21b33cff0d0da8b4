"""The chain linter: compositions that are valid but probably not what the author meant.

``lint_chain`` judges a chain from what each processor declares about itself (its stage and its
traits: ``keeps_argmax``, ``is_filter``, ``needs_history``, ...), plus a few rules about
well-known processors by name (``temperature``, ``top_k``, ``top_p``, ``min_p``, ``typical_p``,
penalties). A processor named here need not be installed: unknown names are simply not matched.

    >>> from samplekit.config import parse_config
    >>> [w.where for w in lint_chain(parse_config({"chain": [{"top_k": 5}, "greedy"]}))]
    ['chain[0].top_k']

Every warning says where (``chain[2].top_p``), why, and what to do instead. Every rule is one
or two passes over the chain: linting takes time linear in its length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from samplekit.processor import Processor, Stage

# Filters whose cut depends on the probabilities (so on the temperature), not on ranks alone.
# (top_k is rank-based, top_n_sigma scales with the temperature: neither cares.) p-less keeps
# the tokens at least as probable as sum p^2, top-h bounds the entropy: both move with T.
PROBABILITY_CUTS = ("top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "top_a", "tfs",
                    "p_less", "p_less_norm", "top_h")
TEMPERATURES = ("temperature", "dynamic_temperature")
# Well-known penalties (they read the history and reshape logits; meant to run before filters).
PENALTIES = ("repetition_penalty", "frequency_penalty", "presence_penalty", "dry", "penalties")
# Structured-output constraints (samplekit-grammar): filters that must see every token the model offers.
CONSTRAINTS = ("json_schema", "regex", "grammar")


@dataclass(frozen=True)
class LintWarning:
    """One finding: ``where`` (``chain[2].top_p``), what is wrong and why, and the fix."""

    where: str
    message: str
    suggestion: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}; {self.suggestion}"

    def to_dict(self) -> dict[str, str]:
        return {"where": self.where, "message": self.message, "suggestion": self.suggestion}


def lint_chain(chain: Any, *, vocab_size: int | None = None) -> list[LintWarning]:
    """Warnings about ``chain``: a ``ChainConfig``, a ``Chain`` or a list of processors.

    ``vocab_size``, when known, also flags ``top_k`` with ``k >= vocab_size``.
    """
    processors = _processors(chain)
    labels = [f"chain[{i}].{p.name}" for i, p in enumerate(processors)]
    found: list[LintWarning] = []
    found += _no_op_settings(processors, labels, vocab_size)
    found += _after_greedy_equivalent(processors, labels)
    found += _under_greedy_selector(processors, labels)
    found += _order(processors, labels)
    found += _duplicates(processors, labels)
    found += _constraint_after_truncation(processors, labels)
    # One warning per place and finding ("has no effect" found by two rules counts once), in
    # chain order.
    seen, out = set(), []
    for w in sorted(found, key=lambda w: _index(w.where)):
        key = (w.where, "no effect" if w.message.startswith("has no effect") else w.message)
        if key not in seen:
            seen.add(key)
            out.append(w)
    return out


# -- helpers -------------------------------------------------------------------------------------
def _processors(chain: Any) -> list[Processor]:
    if hasattr(chain, "build_chain"):  # ChainConfig
        chain = chain.build_chain()
    if hasattr(chain, "processors"):  # Chain
        chain = chain.processors
    return list(chain)


def _index(where: str) -> int:
    return int(where[len("chain["):where.index("]")])


def _setting(p: Processor, *names: str) -> Any:
    settings = getattr(p, "settings", {}) or {}
    for name in names:
        if name in settings:
            return settings[name]
    return None


def _canonical(p: Processor) -> str:
    return p.name


def _is_logits(p: Processor) -> bool:
    return p.stage is Stage.LOGITS


def _is_penalty(p: Processor) -> bool:
    """Reads the history and reshapes (not only masks) the logits, or is a well-known penalty."""
    if p.name in PENALTIES or p.name.endswith("_penalty"):
        return True
    return _is_logits(p) and p.needs_history and not p.is_filter and not p.keeps_argmax


def _is_truncation(p: Processor) -> bool:
    """A filter whose cut depends on the logits' values (top_k, top_p, min_p, ...), as opposed to
    a ban that removes the same tokens whatever their logits (banned_tokens, no_repeat_ngram)."""
    return _is_logits(p) and p.is_filter and (p.keeps_argmax or p.name in PROBABILITY_CUTS)


def _reshapes(p: Processor) -> bool:
    """A temperature that really rescales (not 1, not the greedy 0)."""
    if p.name == "dynamic_temperature":
        return not (_setting(p, "temperature") == 1.0 and _setting(p, "range") == 0)
    return _setting(p, "value") not in (0, 1.0)


def _greedy_equivalent(p: Processor) -> str | None:
    """Why ``p`` leaves only each row's maximum (and its ties), or None."""
    if p.name == "temperature" and _setting(p, "value") == 0:
        return "temperature 0 already keeps only each row's maximum logit"
    if p.name == "top_k" and _setting(p, "k") == 1 and (_setting(p, "min_tokens_to_keep") or 1) == 1:
        return "top_k with k=1 already keeps only each row's maximum logit"
    return None


# -- rules ---------------------------------------------------------------------------------------
def _no_op_settings(processors, labels, vocab_size) -> list[LintWarning]:
    out = []
    for p, where in zip(processors, labels):
        name = p.name
        if name == "temperature" and _setting(p, "value") == 1.0:
            out.append(LintWarning(where, "temperature 1.0 leaves the logits unchanged",
                                   "remove it, or set the temperature you meant"))
        elif name == "top_k" and vocab_size is not None and (_setting(p, "k") or 0) >= vocab_size:
            k = _setting(p, "k")
            out.append(LintWarning(where, f"k={k} is at least the vocabulary size ({vocab_size}), "
                                          "so top_k keeps every token",
                                   f"lower k below {vocab_size}, or remove top_k"))
        elif name in ("top_p", "typical_p"):
            value = _setting(p, "p", "mass", name, "value")
            if isinstance(value, (int, float)) and value >= 1.0:
                out.append(LintWarning(where, f"p={value} keeps the whole distribution, "
                                              f"so {name} has no effect",
                                       "use p < 1 (0.9 to 0.95 is common), or remove it"))
        elif name == "min_p":
            value = _setting(p, "p", "min_p", "value")
            if isinstance(value, (int, float)) and value <= 0.0:
                out.append(LintWarning(where, f"p={value} removes no token, so min_p has no effect",
                                       "use p > 0 (0.05 to 0.1 is common), or remove it"))
        elif name in ("epsilon_cutoff", "eta_cutoff") and _setting(p, "epsilon") == 0:
            out.append(LintWarning(where, f"epsilon=0 removes no token, so {name} has no effect",
                                   "use a small positive epsilon (3e-4 is common), or remove it"))
        elif _is_penalty(p):
            value = _setting(p, "penalty", "value", name)
            neutral = 1.0 if name == "repetition_penalty" else 0.0 if name in (
                "frequency_penalty", "presence_penalty") else None
            if neutral is not None and isinstance(value, (int, float)) and value == neutral:
                out.append(LintWarning(where, f"{name} {value} changes no logit",
                                       "set a penalty strength, or remove it"))
    return out


def _after_greedy_equivalent(processors, labels) -> list[LintWarning]:
    out = []
    for i, p in enumerate(processors):
        why = _greedy_equivalent(p)
        if why is None:
            continue
        for q, where in zip(processors[i + 1:], labels[i + 1:]):
            if not _is_logits(q):
                continue
            if q.keeps_argmax:
                out.append(LintWarning(
                    where, f"has no effect: it runs after {labels[i]} and {why}, which "
                           f"{q.name} keeps",
                    f"remove {q.name}, or move it before {labels[i]}"))
            else:
                out.append(LintWarning(
                    where, f"can only choose among tied maxima: it runs after {labels[i]} and {why}",
                    f"move {q.name} before {labels[i]}"))
        break  # later greedy-equivalents are reported as no-ops of this one
    return out


def _under_greedy_selector(processors, labels) -> list[LintWarning]:
    """With an argmax selector, a processor that keeps the argmax (and is followed only by such
    processors) cannot change which token is picked."""
    if not processors or not processors[-1].keeps_argmax:
        return []
    selector = processors[-1]
    out = []
    for i in range(len(processors) - 2, -1, -1):
        p = processors[i]
        if not _is_logits(p):
            continue
        if not p.keeps_argmax:
            break  # it can move the argmax, so what runs before it matters
        out.append(LintWarning(
            labels[i],
            f"has no effect: {selector.name} picks each row's largest logit, and {p.name} keeps it",
            f"remove {p.name}, or end the chain with a sampling selector (multinomial) "
            "if you meant to sample"))
    return out


def _order(processors, labels) -> list[LintWarning]:
    """A probability cut before a reshaping temperature; a penalty after a truncation filter.
    One pass each way (linear): a cut names the first such temperature after it, a penalty the
    first truncation filter before it."""
    out = []
    next_temperature: list[int | None] = [None] * len(processors)
    found = None
    for i in range(len(processors) - 1, -1, -1):
        next_temperature[i] = found
        q = processors[i]
        if q.name in TEMPERATURES and _reshapes(q):
            found = i
    first_truncation = None
    for i, p in enumerate(processors):
        j = next_temperature[i]
        if p.name in PROBABILITY_CUTS and j is not None:
            q = processors[j]
            out.append(LintWarning(
                labels[i],
                f"{p.name} runs before {q.name} ({labels[j]}): its cut is chosen on the "
                "untempered distribution (T=1), and the temperature only reshapes the "
                "survivors",
                f"put {q.name} before {p.name} if you meant Hugging Face's order "
                "(temperature first); keep this order only if you meant to filter first"))
        if first_truncation is not None and _is_penalty(p):
            f = processors[first_truncation]
            out.append(LintWarning(
                labels[i],
                f"the penalty runs after the filter {labels[first_truncation]}: the filter chose its "
                "survivors from the unpenalised logits (a repeated token can take a place "
                "that should have gone to another), and the penalty only reorders them",
                f"move {p.name} before {f.name} (penalties are meant to act before "
                "filtering)"))
        if first_truncation is None and _is_truncation(p):
            first_truncation = i
    return out


def _duplicates(processors, labels) -> list[LintWarning]:
    out = []
    first: dict[str, int] = {}
    for i, p in enumerate(processors):
        key = _canonical(p)
        if key in first:
            out.append(LintWarning(
                labels[i], f"{key} appears twice (first at {labels[first[key]]})",
                f"keep one {key} with the setting you mean"))
        else:
            first[key] = i
    return out


def _constraint_after_truncation(processors, labels) -> list[LintWarning]:
    """A constraint after a truncation filter: the filter keeps its survivors without asking the
    constraint, and a step where the constraint allows none of them fails (every logit -inf)."""
    first = next((i for i, p in enumerate(processors) if _is_truncation(p)), None)
    if first is None:
        return []
    return [LintWarning(
        labels[i],
        f"the constraint runs after the filter {labels[first]}: the filter chose its survivors without it, "
        "and a step where it allows none of them fails with every logit -inf",
        f"move {p.name} before {processors[first].name} (a constraint is meant to act first)")
        for i, p in enumerate(processors[first + 1:], first + 1) if p.name in CONSTRAINTS]
