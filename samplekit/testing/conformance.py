"""The conformance kit: one call that checks a processor against samplekit's contract.

    from samplekit.testing import check_processor

    def test_my_processor_conforms():
        check_processor(MyProcessor, params={"strength": 0.5})

``check_processor`` raises ``AssertionError`` naming the processor and the broken property. It
checks, on inputs drawn by hypothesis (-inf entries, ties, ±1e4, rows of only -inf, float32 and
bfloat16):

- the declaration: every ``Param`` has a valid type, a default that passes its own validation and
  a help text; values outside the declared range (generated from the declaration), of the wrong
  type, NaN, and unknown parameter names raise ``ParameterError``; values the declaration allows
  (its bounds, 0, -1, very large) construct and run without crashing or producing NaN;
- the call: shape, dtype and device kept; the input (scores and input_ids) not written (compared
  with a clone taken before the call); no NaN introduced; selectors return a LongTensor ``[B]``
  of ids whose input logit is finite, and raise ``EmptyRowError`` for a row of only -inf;
  context processors that declare ``keeps_last_window`` crop to exactly the last window;
- rows independent: a row processed alone (with its own seeded generator) equals that row
  processed in a batch;
- deterministic under a seed; not random at all unless ``random`` is declared;
- state: two generations from fresh ``start()`` calls, run one after the other and interleaved,
  give equal outputs step by step (per-generation state lives in what ``start`` returns); for
  ``stateful`` processors each row of a batched generation equals that row generated alone, and
  ``keep_rows`` continues the remaining rows unchanged; a processor that does not declare
  ``tracks_generation()`` gives at every step what a bare call with fresh state gives;
- rows join and leave (samplekit.testing.rows): in a real ChainRun where ragged rows join at
  different steps and leave when done, each row's outputs equal that row's run alone;
- rows carry their own values: for a processor with ``per_row`` parameters, rows whose own
  processors have other values of them (drawn from the declarations, or ``row_params``) share
  one run (``row_chains``), joining and leaving, and each row's outputs equal its own processor
  run alone;
- the declared traits: ``keeps_argmax`` (one of the input row's maxima is a maximum of the
  output), ``is_filter`` (each output logit equals the input or is -inf), ``vocab_symmetric``
  (permuting the vocabulary, and the token ids of the history with it, permutes the output;
  random selectors are compared in distribution), ``needs_history=False`` (the output does not
  depend on ``input_ids``), ``stateful=False`` (no ``accept``);
- the fast-path promises (``keeps_top``, ``keeps_top_rows``, ``commutes_with_top_k``,
  ``candidate_safe``, ``process_candidates``, ``filter_candidates``, ``select_candidates``), each
  against the processor's dense behaviour (samplekit.testing.promises, samplekit.testing.rows).

A finding that hypothesis cannot reproduce on a second try (the same input gives different
results) is reported as what it almost always is: state kept on the processor object.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky

from samplekit.errors import ParameterError
from samplekit.params import REQUIRED, TYPES, Param
from samplekit.processor import Processor, Stage
from samplekit.selection import EmptyRowError
from samplekit.testing import strategies as sks
from samplekit.testing.cases import Case, ConformanceFailure, Who, call, context, fail, once, same
from samplekit.testing.promises import check_promises
from samplekit.testing.rows import check_rows_carry_values, check_rows_join_and_leave

__all__ = ["ConformanceFailure", "check_processor"]

_UNKNOWN = "__conformance_unknown_parameter__"


def check_processor(processor: Any, *, params: dict[str, Any] | None = None, vocab=(1, 48), batch=(1, 4),
                    history=(1, 12), examples: int = 40, steps: int = 3,
                    dtypes: Sequence[torch.dtype] = (torch.float32, torch.bfloat16), shrink: bool = True,
                    tokenizer: Any = None, eos_token_ids: Sequence[int] = (),
                    row_params: Sequence[dict[str, Any]] | None = None) -> None:
    """Check ``processor`` against the processor contract; raise AssertionError on a violation.

    :param processor: a Processor subclass, an instance (its ``settings`` are the params), or a
        registered name (looked up in ``samplekit.plugins.get_registry()``).
    :param params: constructor values (validated by the declaration); defaults fill the rest.
    :param vocab, batch, history: sizes of the generated inputs: an int, an inclusive
        ``(low, high)`` tuple or a hypothesis strategy of ints.
    :param examples: how many generated examples hypothesis tries (``max_examples``).
    :param steps: the length of the simulated generations used for the state checks.
    :param dtypes: the score dtypes to try (the processor must keep each).
    :param shrink: let hypothesis shrink a failing example to a small one (a few seconds more,
        only when something fails).
    :param tokenizer, eos_token_ids: what every context carries (``ctx.tokenizer``,
        ``ctx.eos_token_ids``), for processors that need them; with a tokenizer, give ``vocab``
        its size.
    :param row_params: values of per-row parameters for the other rows of the "rows carry their
        own values" check (each a dict merged over ``params``); default: drawn from the numeric,
        boolean and choice declarations (bounds, edges, a few values inside).
    """
    cls, instance, params = _resolve(processor, params)
    who = _who(cls, params)
    _check_declaration(cls, params, who)
    made = instance if instance is not None else _construct(cls, params, who)
    variants = _row_variants(cls, params, row_params, who)

    phases = [Phase.explicit, Phase.generate, *([Phase.shrink] if shrink else [])]

    @settings(max_examples=examples, deadline=None, database=None, report_multiple_bugs=False, phases=phases,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much])
    @given(data=st.data())
    def conforms(data):
        case = _draw_case(data, batch, vocab, history, dtypes)
        case.tokenizer, case.eos_token_ids = tokenizer, tuple(eos_token_ids)
        _check_empty_row(made, case, who, data)
        _check_call(made, case, who)
        _check_traits(made, case, who, data)
        check_promises(made, case, who, data)
        _check_generations(made, case, who, steps)
        check_rows_join_and_leave(made, case, who, steps, data)
        if variants:
            check_rows_carry_values(made, case, who, steps, data, variants)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: waking a thread pool would cost more than the work
    try:
        _check_allowed_values(cls, params, who, _smallest(vocab, at_least=8), tokenizer, eos_token_ids)
        try:
            conforms()
        except Flaky as flaky:
            raise _unflaky(flaky, who) from None
        if cls.vocab_symmetric and cls.random and cls.stage is Stage.SELECTOR:
            _check_selector_symmetric_in_distribution(made, who)
    finally:
        torch.set_num_threads(threads)


def _unflaky(flaky: BaseException, who: str) -> ConformanceFailure:
    """The finding inside hypothesis's report that an example failed only once."""
    found = _findings(flaky)
    note = ("\n  (hypothesis saw this fail once and pass when it ran the same input again: the processor "
            "keeps state on the processor object; per-generation state belongs in what start() returns)")
    if found:
        return ConformanceFailure(f"{found[0]}{note}")
    return ConformanceFailure(f"{who}: keeps state on the processor object: the same input gave different "
                              "results when run twice; per-generation state belongs in what start() returns")


def _findings(exc: BaseException) -> list[ConformanceFailure]:
    if isinstance(exc, ConformanceFailure):
        return [exc]
    return [f for inner in getattr(exc, "exceptions", ()) for f in _findings(inner)]


# -- resolving and the declaration -------------------------------------------------------------
def _resolve(processor: Any, params: dict | None) -> tuple[type[Processor], Processor | None, dict]:
    if isinstance(processor, str):
        from samplekit.plugins import get_registry

        processor = get_registry().get(processor).cls
    if isinstance(processor, type) and issubclass(processor, Processor):
        return processor, None, dict(params or {})
    if isinstance(processor, Processor):
        if params is not None:
            raise TypeError("check_processor: pass either an instance or a class with params, not both")
        return type(processor), processor, dict(processor.settings)
    raise TypeError(f"check_processor: {processor!r} is not a samplekit Processor class, instance or name")


def _who(cls: type[Processor], params: dict) -> Who:
    name = getattr(cls, "name", "?")
    return Who(f"processor {name!r} ({cls.__module__}.{cls.__qualname__})", params)


def _construct(cls: type[Processor], values: dict, who: str) -> Processor:
    try:
        return cls(**values)
    except ParameterError as exc:
        fail(who, "parameters", f"cannot be built with {values}: {exc} (pass valid params=... to check_processor)")
    except Exception as exc:
        fail(who, "parameters", f"construction raised {type(exc).__name__}: {exc}")


def _check_declaration(cls: type[Processor], params: dict, who: str) -> None:
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        fail(who, "declaration", f"name {name!r} is not an identifier")
    if not isinstance(cls.stage, Stage):
        fail(who, "declaration", f"stage {cls.stage!r} is not a samplekit.Stage")
    declared = cls.params
    if not isinstance(declared, tuple) or not all(isinstance(p, Param) for p in declared):
        fail(who, "parameters declared", "params must be a tuple of samplekit.Param")
    names = [p.name for p in declared]
    if len(set(names)) != len(names):
        fail(who, "parameters declared", f"a parameter name is declared twice: {names}")
    for p in declared:
        if not p.name.isidentifier():
            fail(who, "parameters declared", f"parameter name {p.name!r} is not an identifier")
        if p.type not in TYPES:
            fail(who, "parameters declared", f"parameter {p.name!r} has type {p.type!r}; allowed: {TYPES}")
        if not (isinstance(p.help, str) and p.help.strip()):
            fail(who, "parameters declared", f"parameter {p.name!r} has no help text")
        if p.default is not REQUIRED:
            try:
                p.validate(p.default, f"{name}.{p.name}")
            except ParameterError as exc:
                fail(who, "parameters declared", f"the default of {p.name!r} fails its own declaration: {exc}")
    missing = [p.name for p in declared if p.required and p.name not in params]
    if missing:
        fail(who, "parameters", f"required parameter(s) {missing} not given; pass params={{...}} to check_processor")
    method = {Stage.LOGITS: "process", Stage.SELECTOR: "select", Stage.CONTEXT: "crop"}[cls.stage]
    if not callable(getattr(cls, method, None)):
        fail(who, "declaration", f"a {cls.stage.value} processor must implement {method}()")
    if not cls.stateful and cls.accept is not Processor.accept:
        fail(who, "declares stateful=False", "but overrides accept(); declare stateful = True")

    # Unknown names and values outside the declaration must raise ParameterError at construction.
    _expect_rejected(cls, {**params, _UNKNOWN: 1}, who, f"unknown parameter {_UNKNOWN!r}")
    for p in declared:
        for bad, why in _rejected_values(p):
            _expect_rejected(cls, {**params, p.name: bad}, who,
                             f"{p.name}={bad!r} ({why}; declared {p.allowed()})")


def _expect_rejected(cls: type[Processor], values: dict, who: str, what: str) -> None:
    try:
        cls(**values)
    except ParameterError:
        return
    except Exception as exc:
        fail(who, "parameters validated", f"{what} raised {type(exc).__name__}: {exc}, not ParameterError")
    fail(who, "parameters validated", f"{what} was accepted; it must raise ParameterError at construction")


def _rejected_values(p: Param) -> list[tuple[Any, str]]:
    """Values the declaration of ``p`` forbids, generated from it."""
    out: list[tuple[Any, str]] = []
    numeric = p.type in ("int", "float")
    if numeric:
        step = 1 if p.type == "int" else None
        if p.low is not None:
            if p.low_open:
                out.append((_typed(p, p.low), "at the open lower bound"))
            else:
                below = p.low - 1 if step else math.nextafter(float(p.low), -math.inf)
                out.append((_typed(p, below), "just below the lower bound"))
            out.append((_typed(p, p.low - 1000), "far below the lower bound"))
        if p.high is not None:
            if p.high_open:
                out.append((_typed(p, p.high), "at the open upper bound"))
            else:
                above = p.high + 1 if step else math.nextafter(float(p.high), math.inf)
                out.append((_typed(p, above), "just above the upper bound"))
            out.append((_typed(p, p.high + 1000), "far above the upper bound"))
        out.append(("not a number", "wrong type"))
        if p.type == "int":
            out.append((1.5, "not an integer"))
        else:
            out.append((float("nan"), "NaN"))
    elif p.type == "bool":
        out.append(("yes", "wrong type"))
    elif p.type == "str":
        out.append((3, "wrong type"))
        if p.choices:
            out.append(("__not_one_of_the_choices__", "not one of the choices"))
    elif p.type in ("int_list", "str_list", "token_list"):
        out.append((7 if p.type == "str_list" else "not a list", "wrong type"))
        if p.type != "str_list":
            out.append(([-1], "a negative token id"))
    elif p.type == "token_bias":
        out.append(([1, 2], "wrong type"))
    elif p.type == "json":
        out.append(({1: "x"}, "a key that is not a string"))
    if not p.nullable:
        out.append((None, "null but not nullable"))
    return out


def _typed(p: Param, x: float) -> Any:
    return int(x) if p.type == "int" else float(x)


def _allowed_values(p: Param) -> list[Any]:
    """Values the declaration of ``p`` allows, at its edges: its bounds, 0, -1, very large."""
    if p.type == "bool":
        return [True, False]
    if p.type == "str":
        return list(p.choices or ())
    if p.type in ("int_list", "str_list", "token_list"):
        return [()]
    if p.type == "token_bias":
        return [{}]
    if p.type == "json":
        return [p.default] if not p.required and p.default is not None else []
    out: list[Any] = [None] if p.nullable else []
    is_int = p.type == "int"
    candidates = [0, -1, 1] if is_int else [0.0, -1.0, 1.0]
    span = None if p.low is None or p.high is None else p.high - p.low
    eps = 1 if is_int else (span * 1e-3 if span else 1e-3)
    if p.low is not None:
        candidates.append(p.low + eps if p.low_open else p.low)
    if p.high is not None:
        candidates.append(p.high - eps if p.high_open else p.high)
    else:
        candidates.append(10**5 if is_int else 1e6)
    for c in candidates:
        c = _typed(p, c)
        if p._in_range(c) and c not in out:
            out.append(c)
    return out


def _row_variants(cls: type[Processor], params: dict, row_params, who: str) -> list[Processor]:
    """Processors whose per-row values differ from ``params`` (the other rows' own processors)."""
    per_row = [p for p in cls.params if p.per_row]
    if not per_row:
        return []
    if row_params is not None:
        return [_construct(cls, {**params, **values}, who) for values in row_params]
    changes = [{p.name: v} for p in per_row for v in [*_allowed_values(p), *_inside(p)]]
    made = []
    for change in changes:
        try:
            made.append(cls(**{**params, **change}))
        except ParameterError:
            continue  # a rule across parameters refuses it: fine
    return made


def _inside(p: Param) -> list[Any]:
    """A few values well inside a numeric declaration's range."""
    if p.type not in ("int", "float"):
        return []
    if p.low is not None and p.high is not None:
        found = [p.low + (p.high - p.low) * f for f in (0.25, 0.6)]
    else:
        base = p.low if p.low is not None else (p.high - 8 if p.high is not None else 0)
        found = [base + d for d in ((2, 5) if p.type == "int" else (0.5, 3.0))]
    return [v for v in (_typed(p, x) for x in found) if p._in_range(v)]


def _fixed_case(vocab: int = 8, tokenizer: Any = None, eos_token_ids: Sequence[int] = ()) -> Case:
    g = torch.Generator().manual_seed(1234)
    scores = torch.randn(2, vocab, generator=g) * 3  # (2, V)
    scores[0, 3] = float("-inf")
    scores[1, 5] = scores[1].max()  # a tie at the maximum
    ids = torch.tensor([[1, 2, 3, 1, 2, 3], [4, 4, 4, 4, 4, 4]]) % vocab  # (2, 6)
    return Case(ids, scores, [11, 12], context_length=4, tokenizer=tokenizer, eos_token_ids=eos_token_ids)


def _check_allowed_values(cls: type[Processor], params: dict, who: str, vocab: int, tokenizer: Any = None,
                          eos_token_ids: Sequence[int] = ()) -> None:
    """Values inside the declared range must build and run: the range must be declared, not implied."""
    for p in cls.params:
        for value in _allowed_values(p):
            values = {**params, p.name: value}
            try:
                made = cls(**values)
            except ParameterError:
                continue  # validated at construction (e.g. a rule across parameters): fine
            except Exception as exc:
                fail(who, "declared range", f"{p.name}={value!r} is allowed by the declaration ({p.allowed()}) "
                      f"but construction raised {type(exc).__name__}: {exc}; declare the range in its Param")
            tag = f"{who} with {p.name}={value!r} (allowed by the declaration {p.allowed()}; "\
                  "if it is not meaningful, declare the range in its Param)"
            case = _fixed_case(vocab, tokenizer, eos_token_ids)
            _check_call(made, case, tag, trait_checks=False)
            list(_generation(made, case, tag, 2))


def _smallest(spec, at_least: int) -> int:
    """The smallest size an int or (low, high) spec allows, raised to ``at_least`` within its range."""
    if isinstance(spec, int):
        return spec
    if isinstance(spec, tuple):
        return min(max(spec[0], at_least), spec[1])
    return at_least


# -- one call ----------------------------------------------------------------------------------
def _draw_case(data, batch, vocab, history, dtypes) -> Case:
    b = data.draw(sks.sizes(batch), label="batch")
    v = data.draw(sks.sizes(vocab), label="vocab")
    dtype = data.draw(st.sampled_from(list(dtypes)), label="dtype")
    scores = data.draw(sks.logits(batch=b, vocab=v, dtype=dtype), label="scores")
    ids = data.draw(sks.token_histories(batch=b, vocab=v, length=history), label="input_ids")
    seeds = data.draw(sks.seeds(b), label="seeds")
    context_length = data.draw(st.integers(1, 16), label="context_length")
    return Case(ids, scores, seeds, context_length)


def _check_call(p: Processor, case: Case, who: str, trait_checks: bool = True) -> torch.Tensor:
    ids_before, scores_before = case.ids.clone(), case.scores.clone()
    out = once(p, case, who)
    if not torch.equal(case.scores, scores_before):
        fail(who, "input not written", "the scores passed in were modified in place; return a new tensor "
              "(masked_fill, where, ...) instead of writing the input")
    if not torch.equal(case.ids, ids_before):
        fail(who, "input not written", "input_ids were modified in place")
    if not isinstance(out, torch.Tensor):
        fail(who, "returns a tensor", f"got {type(out).__name__}")
    b = case.batch
    if p.stage is Stage.LOGITS:
        for attr in ("shape", "dtype", "device"):
            if getattr(out, attr) != getattr(case.scores, attr):
                fail(who, f"{attr} kept", f"scores {attr} {getattr(case.scores, attr)} became {getattr(out, attr)}")
        if torch.isnan(out).any():
            fail(who, "no NaN introduced", f"the output has NaN at {torch.isnan(out).nonzero().tolist()[:5]} "
                  f"for scores={case.scores.tolist()}")
    elif p.stage is Stage.SELECTOR:
        if out.dtype != torch.long or tuple(out.shape) != (b,) or out.device != case.scores.device:
            fail(who, "selector returns LongTensor [B]",
                  f"got {out.dtype} of shape {tuple(out.shape)} on {out.device} for a batch of {b}")
        v = case.scores.shape[-1]
        if ((out < 0) | (out >= v)).any():
            fail(who, "selector returns valid ids", f"ids {out.tolist()} outside [0, {v})")
        picked = case.scores.gather(-1, out[:, None]).squeeze(-1)
        if torch.isneginf(picked).any():
            fail(who, "selector picks a finite logit", f"picked {out.tolist()}, whose logits are {picked.tolist()}")
    else:
        if out.dtype != case.ids.dtype or out.device != case.ids.device or out.dim() != 2 or out.shape[0] != b:
            fail(who, "crop keeps batch, dtype and device", f"[B, T] {case.ids.dtype} became "
                  f"{tuple(out.shape)} {out.dtype}")
        if out.shape[1] > case.ids.shape[1]:
            fail(who, "crop only removes positions", f"{case.ids.shape[1]} positions became {out.shape[1]}")
        window = p.window(context(case))
        if window is not None and out.shape[1] > window:
            fail(who, "crop respects window()", f"window() is {window} but crop kept {out.shape[1]} positions")
        if p.keeps_last_window:
            last = case.ids if window is None else case.ids[:, max(case.ids.shape[1] - window, 0):]
            if not torch.equal(out, last):
                fail(who, "declares keeps_last_window", f"window() is {window} but crop gave {out.tolist()}, not the "
                     f"last columns {last.tolist()}; the engine keeps its KV cache only for such a crop")
    if not trait_checks:
        return out

    again = once(p, case, who)
    if not torch.equal(out, again):
        fail(who, "deterministic under a seed", "two calls with equally seeded generators differ:\n"
              f"  first={out.tolist()}\n  second={again.tolist()}")
    if b > 1:
        for i in range(b):
            alone = once(p, case.row(i), who)
            if not same(alone, out[i:i + 1]):
                fail(who, "rows independent", f"row {i} processed alone differs from the same row in a batch "
                      f"of {b} (same per-row seed):\n  alone={alone.tolist()}\n  batched={out[i:i + 1].tolist()}")
    if not p.random:
        other = once(p, case, who, seeds=[s + 1 for s in case.seeds])
        if not same(other, out):
            fail(who, "declares random=False", "but the output changes with the seed; declare random = True")
    return out


def _check_empty_row(p: Processor, case: Case, who: str, data) -> None:
    """A row of only -inf (an earlier filter masked everything): logits processors keep it without
    NaN, selectors raise EmptyRowError naming it."""
    if p.stage is Stage.CONTEXT or not data.draw(st.booleans(), label="a row of only -inf"):
        return
    r = data.draw(st.integers(0, case.batch - 1), label="empty row")
    scores = case.scores.clone()
    scores[r] = float("-inf")
    ctx = context(case)
    ctx.state = p.start(case.batch, ctx)
    try:
        out = p.process(case.ids, scores, ctx) if p.stage is Stage.LOGITS else p.select(case.ids, scores, ctx)
    except EmptyRowError as exc:
        if p.stage is Stage.SELECTOR and r in exc.rows:
            return
        fail(who, "a row of only -inf", f"raised EmptyRowError for rows {exc.rows}; row {r} is the empty one")
    except AssertionError:
        raise
    except Exception as exc:
        fail(who, "a row of only -inf", f"{'process' if p.stage is Stage.LOGITS else 'select'}() raised "
             f"{type(exc).__name__}: {exc} for scores={scores.tolist()}; a selector raises "
             "samplekit.EmptyRowError (check_rows does), a logits processor returns the row")
    if p.stage is Stage.SELECTOR:
        fail(who, "a row of only -inf", f"select() returned {out.tolist()} for a row of only -inf (row {r}); it must "
             "raise samplekit.EmptyRowError (samplekit.check_rows on each row's maximum does)")
    if torch.isnan(out).any():
        fail(who, "no NaN introduced", f"a row of only -inf (row {r}) became {out[r].tolist()}")


# -- declared traits ---------------------------------------------------------------------------
def _check_traits(p: Processor, case: Case, who: str, data) -> None:
    scores = case.scores
    out = once(p, case, who)
    finite_rows = ~torch.isneginf(scores).all(dim=-1)  # (B,)
    if p.stage is Stage.LOGITS:
        if p.keeps_argmax:
            in_max = scores.amax(dim=-1, keepdim=True)
            out_max = out.amax(dim=-1, keepdim=True)
            kept = ((scores == in_max) & (out == out_max)).any(dim=-1) & ~torch.isneginf(out_max.squeeze(-1))
            bad = (finite_rows & ~kept).nonzero().flatten().tolist()
            if bad:
                r = bad[0]
                fail(who, "declares keeps_argmax", f"but in row {r} no maximum of the input "
                      f"({scores[r].tolist()}) is a maximum of the output ({out[r].tolist()})")
        if p.is_filter:
            ok = (out == scores) | torch.isneginf(out)
            if not ok.all():
                r, c = ok.logical_not().nonzero()[0].tolist()
                fail(who, "declares is_filter", f"but row {r}, token {c} changed from {scores[r, c].item()} "
                      f"to {out[r, c].item()}; a filter only sets logits to -inf")
        finder = getattr(p, "filter_candidates", None)
        if callable(finder):
            ctx = context(case, None)
            ctx.state = p.start(case.batch, ctx)
            found = finder(case.ids, scores.clone(), ctx)
            if found is not None:
                values, indices = found
                rebuilt = torch.full_like(scores, float("-inf")).scatter(-1, indices, values)
                if not same(rebuilt, out):
                    fail(who, "filter_candidates agrees with process", f"its candidates {indices.tolist()} "
                          f"with values {values.tolist()} rebuild {rebuilt.tolist()}, but process gives "
                          f"{out.tolist()}")
    elif p.stage is Stage.SELECTOR and p.keeps_argmax:
        picked = scores.gather(-1, out[:, None]).squeeze(-1)
        if (picked != scores.amax(dim=-1)).any():
            fail(who, "declares keeps_argmax", f"but picked {out.tolist()}, not a row maximum of {scores.tolist()}")

    if not p.needs_history and p.stage is not Stage.CONTEXT:
        v = scores.shape[-1]
        other_ids = (case.ids.flip(-1) + 1) % v
        changed = once(p, case, who, ids=other_ids)
        if not same(changed, out):
            fail(who, "declares needs_history=False", "but the output changes with input_ids; "
                  "declare needs_history = True")

    if p.vocab_symmetric and p.stage is not Stage.CONTEXT and not (p.random and p.stage is Stage.SELECTOR):
        v = scores.shape[-1]
        perm = torch.tensor(data.draw(st.permutations(range(v)), label="vocabulary permutation"), dtype=torch.long)
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(v)
        permuted = once(p, case, who, ids=inverse[case.ids], scores=scores[:, perm])
        if p.stage is Stage.LOGITS:
            if not same(permuted, out[:, perm]):
                fail(who, "declares vocab_symmetric", "but permuting the vocabulary does not permute the output:"
                      f"\n  permutation={perm.tolist()}\n  output={out.tolist()}\n  permuted output="
                      f"{permuted.tolist()}")
        elif not torch.equal(perm[permuted], out):
            fail(who, "declares vocab_symmetric", f"but with the vocabulary permuted by {perm.tolist()} it picks "
                  f"{perm[permuted].tolist()} instead of {out.tolist()}")


def _check_selector_symmetric_in_distribution(p: Processor, who: str, n: int = 4000) -> None:
    """A random selector's choices, mapped back through a vocabulary permutation, keep their frequencies."""
    row = torch.tensor([2.0, 0.5, 0.5, float("-inf"), 1.0, -1.0, 0.0])
    v = row.numel()
    perm = torch.tensor([4, 0, 6, 2, 5, 3, 1])
    ids = torch.zeros(n, 1, dtype=torch.long)
    base = Case(ids, row.expand(n, v).clone(), list(range(n)))
    picked = once(p, base, who)
    permuted = once(p, base, who, scores=base.scores[:, perm])
    freq = torch.bincount(picked, minlength=v).double() / n
    freq_perm = torch.bincount(perm[permuted], minlength=v).double() / n
    if (freq - freq_perm).abs().max() > 0.05:
        fail(who, "declares vocab_symmetric", f"but its choice frequencies change when the vocabulary is "
              f"permuted: {freq.tolist()} vs {freq_perm.tolist()}")


# -- generations: state reset, interleaving, rows, keep_rows ----------------------------------
def _generation(p: Processor, case: Case, who: str, steps: int, drop_after: int | None = None,
                inputs: list | None = None) -> Iterator[torch.Tensor]:
    """Simulate one generation like ChainRun: start, then per step call, pick tokens, accept.
    ``inputs`` (a list) receives each step's ``(input_ids, scores)``."""
    ctx = context(case)
    state = p.start(case.batch, ctx)
    accepting = type(p).accept is not Processor.accept
    ids = case.ids
    rows = torch.arange(case.batch)
    for step in range(steps):
        scores = case.scores.roll(step, dims=-1)[rows]  # (B', V)
        ctx.step = step
        ctx.state = state
        if inputs is not None:
            inputs.append((ids, scores))
        out = call(p, ids, scores, ctx, who)
        if p.stage is Stage.SELECTOR:
            tokens = out
        elif p.stage is Stage.LOGITS:
            tokens = out.argmax(dim=-1)
        else:
            tokens = scores.argmax(dim=-1)
        if accepting:
            ctx.state = state
            try:
                p.accept(tokens, ctx)
            except Exception as exc:
                fail(who, "runs", f"accept() raised {type(exc).__name__}: {exc}")
        yield out
        ids = torch.cat([ids, tokens[:, None]], dim=-1)  # (B', T + 1)
        if drop_after == step and len(rows) > 1:
            keep = torch.arange(1, len(rows))
            state = p.keep_rows(state, keep)
            ctx.random.keep_rows(keep.tolist())
            ctx.batch_size = len(keep)
            ctx.prompt_lengths = ctx.prompt_lengths[keep]
            rows, ids = rows[keep], ids[keep]


def _check_generations(p: Processor, case: Case, who: str, steps: int) -> None:
    inputs: list = []
    first = list(_generation(p, case, who, steps, inputs=inputs))
    second = list(_generation(p, case, who, steps))
    for s, (a, b) in enumerate(zip(first, second)):
        if not torch.equal(a, b):
            fail(who, "state reset between runs", f"a second generation from a fresh start() differs from the "
                  f"first at step {s}; keep per-generation state in what start() returns, not on the processor")
    for s, (a, b) in enumerate(zip(_generation(p, case, who, steps), _generation(p, case, who, steps))):
        if not (torch.equal(a, first[s]) and torch.equal(b, first[s])):
            fail(who, "state per generation", f"two generations run side by side differ from one run alone at "
                  f"step {s}; state must live in what start() returns, not on the processor")
    if not p.tracks_generation() and not p.random and p.stage is not Stage.CONTEXT:
        for s, (ids, scores) in enumerate(inputs):
            bare = once(p, case.with_(ids=ids, scores=scores), who)
            if not same(bare, first[s]):
                fail(who, "declares tracks_generation() False", f"at step {s} of a generation it gives {first[s].tolist()}, "
                     f"but {bare.tolist()} with fresh state at step 0: its output depends on the steps so far or on "
                     "accepted tokens, so override tracks_generation() to return True (bare calls are then refused)")
    if not p.stateful or case.batch < 2:
        return
    for i in range(case.batch):
        for s, alone in enumerate(_generation(p, case.row(i), who, steps)):
            if not same(alone, first[s][i:i + 1]):
                fail(who, "rows independent", f"generating row {i} alone differs from the batched generation "
                      f"at step {s}: {alone.tolist()} vs {first[s][i:i + 1].tolist()}")
    for s, out in enumerate(_generation(p, case, who, steps, drop_after=0)):
        expected = first[s] if s == 0 else first[s][1:]
        if not same(out, expected):
            fail(who, "keep_rows", f"after keep_rows dropped row 0, step {s} differs for the remaining rows: "
                  f"{out.tolist()} vs {expected.tolist()}")
