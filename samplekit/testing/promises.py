"""The fast-path promises a processor may declare, each checked against its dense behaviour.

The step strategies (samplekit.strategies) trust these promises to compute a step on a few
candidates instead of the whole vocabulary; a false one would silently change the tokens drawn.
``check_promises`` checks every promise the processor declares (as ``samplekit.strategy.promised``
reads it: only when declared by the class that defines ``process``), on one generated case:

- ``keeps_top(V) -> k``: ``process`` keeps exactly the k largest finite logits (and ties with the
  k-th), or every finite logit when it returns None;
- ``commutes_with_top_k``: on the top k + 1 logits alone, ``process`` gives what the whole row
  gives at those tokens, and keeps them on top (a non-decreasing map of each logit);
- ``candidate_safe`` and ``process_candidates``: on candidates in token-id order, ``process``
  (or ``process_candidates``) gives the dense result on the row masked to those candidates;
- ``filter_candidates``: whenever it returns candidates, they rebuild exactly ``process``;
- ``select_candidates``: the selector picks on candidates what ``select`` picks on the row
  masked to them, from the same per-row seeds;
- ``divides_logits_by() -> T``: ``process`` gives ``scores / T``;
- ``nucleus_p() -> p``: ``process`` gives top-p's nucleus of p (``TopP(p=p)``);
- ``min_p_ratio() -> p``: ``process`` keeps exactly the logits ``>= max + log(p)``;
- ``samples_by_inverse_cdf``: ``select`` picks ``inverse_cdf_sample(scores, u)`` with each
  row's first uniform from the same per-row seeds.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from samplekit.processor import Processor, Stage
from samplekit.selection import inverse_cdf_sample
from samplekit.strategy import promised
from samplekit.testing.cases import Case, context, fail, once, same

NEG_INF = float("-inf")


def check_promises(p: Processor, case: Case, who: str, data) -> None:
    if p.stage is Stage.LOGITS:
        out = once(p, case, who)
        _keeps_top(p, case, out, who)
        if promised(p, "commutes_with_top_k") and case.vocab > 1:
            _commutes(p, case, out, who, data.draw(st.integers(1, case.vocab - 1), label="k"))
        if promised(p, "process_candidates") is not None or promised(p, "candidate_safe"):
            _on_candidates(p, case, who, data)
        _filter_candidates(p, case, out, who)
        _divides(p, case, out, who)
        _filters_as(p, case, out, who)
    elif p.stage is Stage.SELECTOR:
        if promised(p, "select_candidates", "select") is not None:
            _select_candidates(p, case, who, data)
        if promised(p, "samples_by_inverse_cdf", "select"):
            _inverse_cdf(p, case, who)


def _divides(p: Processor, case: Case, out: torch.Tensor, who: str) -> None:
    divides = promised(p, "divides_logits_by")
    t = divides() if divides is not None else None
    if t is not None and not same(out, case.scores / t):
        fail(who, "declares divides_logits_by", f"divides_logits_by() is {t}, but process gives {out.tolist()} "
             f"for {case.scores.tolist()}, not the scores / {t}")


def _filters_as(p: Processor, case: Case, out: torch.Tensor, who: str) -> None:
    """``nucleus_p`` and ``min_p_ratio``: ``process`` is built-in top-p's or min-p's result."""
    from samplekit.processors.min_p import MinP
    from samplekit.processors.top_p import TopP

    for promise, reference in (("nucleus_p", TopP), ("min_p_ratio", MinP)):
        found = promised(p, promise)
        value = found() if found is not None else None
        if value is None:
            continue
        expected = once(reference(p=value), case, who)
        if not same(out, expected):
            fail(who, f"declares {promise}", f"{promise}() is {value}, but process gives {out.tolist()} for "
                 f"{case.scores.tolist()}, not {reference.name}(p={value})'s {expected.tolist()}")


def _inverse_cdf(p: Processor, case: Case, who: str) -> None:
    if not bool(torch.isfinite(case.scores.amax(dim=-1)).all()):
        return  # such a row is an error for every selector
    got = once(p, case, who)
    expected = inverse_cdf_sample(case.scores, context(case).random.uniform(1)).view(-1)
    if not torch.equal(got, expected):
        fail(who, "declares samples_by_inverse_cdf", f"select picks {got.tolist()} for {case.scores.tolist()}, "
             f"but inverse_cdf_sample with each row's first uniform picks {expected.tolist()}")


def candidates(case: Case, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``n`` largest logits of each row in token-id order ``(values, indices)`` ``[B, n]``,
    and the row masked to them ``[B, V]`` (-inf elsewhere)."""
    indices = case.scores.topk(n, dim=-1).indices.sort(dim=-1).values
    values = case.scores.gather(-1, indices)
    masked = torch.full_like(case.scores, NEG_INF).scatter(-1, indices, values)
    return values, indices, masked


def _keeps_top(p: Processor, case: Case, out: torch.Tensor, who: str) -> None:
    keeps_top = promised(p, "keeps_top")
    if keeps_top is None:
        return
    k = keeps_top(case.vocab)
    finite = torch.isfinite(case.scores)
    if k is None:
        expected = finite
    else:
        kth = case.scores.topk(min(k, case.vocab), dim=-1).values[:, -1:]  # (B, 1)
        expected = finite & (case.scores >= kth)
    if not torch.equal(torch.isfinite(out), expected):
        r = (torch.isfinite(out) != expected).any(dim=-1).nonzero()[0].item()
        fail(who, "declares keeps_top", f"keeps_top({case.vocab}) is {k}, but for row {r} "
             f"{case.scores[r].tolist()} process keeps {torch.isfinite(out[r]).nonzero().flatten().tolist()}, "
             f"not the {k if k is not None else 'finite'} largest {expected[r].nonzero().flatten().tolist()}")


def _commutes(p: Processor, case: Case, out: torch.Tensor, who: str, k: int) -> None:
    values, indices = case.scores.topk(k + 1, dim=-1)  # (B, k+1), largest first
    on_top = once(p, case, who, scores=values.contiguous())
    dense = out.gather(-1, indices)
    outside = out.scatter(-1, indices, NEG_INF).amax(dim=-1)  # (B,) the best non-candidate
    ordered = bool((dense[:, :-1] >= dense[:, 1:]).all()) and bool((outside <= dense[:, -1]).all())
    if not same(on_top, dense) or not ordered:
        fail(who, "declares commutes_with_top_k", f"on the top {k + 1} logits {values.tolist()} process gives "
             f"{on_top.tolist()}, but on the whole row {dense.tolist()} at those tokens (kept on top: {ordered}); "
             "it must be a non-decreasing map of each logit that reads only the logit and its row's maximum")


def _on_candidates(p: Processor, case: Case, who: str, data) -> None:
    n = data.draw(st.integers(1, case.vocab), label="candidates")
    values, indices, masked = candidates(case, n)
    dense = once(p, case, who, scores=masked).gather(-1, indices)
    special = promised(p, "process_candidates")
    ctx = context(case)
    ctx.state = p.start(case.batch, ctx)
    if special is not None:
        got, promise = special(case.ids, values, indices, ctx), "process_candidates"
    else:
        got, promise = p.process(case.ids, values, ctx), "candidate_safe"
    if not same(got, dense):
        fail(who, f"declares {promise}", f"on the candidates {indices.tolist()} (values {values.tolist()}) it "
             f"gives {got.tolist()}, but process on the row masked to them gives {dense.tolist()} there; it must "
             "read only the finite logits' values (not token ids, the vocabulary size or the -inf entries)")


def _filter_candidates(p: Processor, case: Case, out: torch.Tensor, who: str) -> None:
    finder = promised(p, "filter_candidates")
    if finder is None:
        return
    ctx = context(case)
    ctx.state = p.start(case.batch, ctx)
    found = finder(case.ids, case.scores.clone(), ctx)
    if found is None:
        return
    values, indices = found
    rebuilt = torch.full_like(case.scores, NEG_INF).scatter(-1, indices, values)
    if not same(rebuilt, out):
        fail(who, "filter_candidates agrees with process", f"its candidates {indices.tolist()} with values "
             f"{values.tolist()} rebuild {rebuilt.tolist()}, but process gives {out.tolist()}")


def _select_candidates(p: Processor, case: Case, who: str, data) -> None:
    n = data.draw(st.integers(1, case.vocab), label="candidates")
    values, indices, masked = candidates(case, n)
    if not bool(torch.isfinite(values.amax(dim=-1)).all()):
        return  # the strategies never hand select_candidates a row without a finite value
    dense = once(p, case, who, scores=masked)
    ctx = context(case)
    ctx.state = p.start(case.batch, ctx)
    got = p.select_candidates(case.ids, values, indices, ctx)
    if not torch.equal(got, dense):
        fail(who, "declares select_candidates", f"on the candidates {indices.tolist()} (values {values.tolist()}) "
             f"it picks {got.tolist()}, but select on the row masked to them picks {dense.tolist()} with the "
             "same seeds")
