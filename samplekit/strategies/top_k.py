"""Top-k candidates: after a top-k, sample among its k survivors, exactly.

When a chain holds a top-k (a processor with ``keeps_top(vocab_size) -> k | None``), each step:

0. the processors before the top-k that do not commute with it (a penalty, say) run on the
   whole vocabulary, as densely;
1. ``topk(k + 1)`` of those scores: the one full-vocabulary operation the sampling needs;
2. the processors between them and the top-k, on those k + 1 values: each promises
   ``commutes_with_top_k`` (a non-decreasing map of each logit that reads nothing but the logit
   and its row's maximum, e.g. temperature), so the top k + 1 are the same tokens either way;
3. one read of each row's maximum, k-th and (k+1)-th values: a row that is all -inf, NaN or
   +inf is an error; a tie across the k-th place (the dense top-k keeps it) sends this step
   to the dense path (exact, rare);
4. the k candidates in token-id order through the processors after the top-k (each
   ``candidate_safe`` or with ``process_candidates``), then the selector's
   ``select_candidates`` (``samplekit.strategies.candidates``).

Rows with their own k (``keeps_top_rows``): one ``topk`` of the largest k + 1, each row's checks
at its own k-th place, and the candidates past a row's own k set to -inf (they add exactly 0 to
its distribution). A step where some row keeps every token goes to the filter-found candidates
strategy when the chain has one (samplekit.strategies.filter), else densely.
"""

from __future__ import annotations

import torch

from samplekit.hookspecs import hookimpl
from samplekit.largest import largest
from samplekit.selection import EmptyRowError, NonFiniteRowError
from samplekit.strategies.candidates import Pairs, runs_on_candidates, select_among, selects_candidates
from samplekit.strategies.filter import FilterCandidates
from samplekit.strategies.filter import plan as filter_plan
from samplekit.strategy import StepStrategy, promised

_NEG_INF = float("-inf")
_INF = float("inf")


class TopKCandidates(StepStrategy):
    name = "top-k candidates"
    per_row_values = True

    def __init__(self, dense: Pairs, prefix: Pairs, producer, suffix: Pairs, index: int,
                 fallback: StepStrategy | None = None):
        self.dense, self.prefix, self.producer, self.suffix = dense, prefix, producer, suffix
        self.index = index  # the producer's place in the chain
        # For a step where some row keeps every token: the filter-found candidates (found from
        # the run's chain when first needed, unless given).
        self._fallback, self._planned = fallback, fallback is not None
        self._columns: dict[int, torch.Tensor] = {}  # k -> the columns 0, k-1, k of the top k+1
        self._rows: tuple | None = None  # (each row's k, its columns [B, 3], past its k [B, most]) last used

    def select(self, run, input_ids, scores):
        vocab = scores.shape[-1]
        if run.varies and not self.producer.shares_values(run.ctx):
            rows_k = promised(self.producer, "keeps_top_rows")
            if rows_k is None:
                return None
            ks = rows_k(vocab, run.ctx)
            if any(k is None or k + 1 > vocab for k in ks):
                return self._keeping_all(run, input_ids, scores)
            if any(k != ks[0] for k in ks):
                return self._select_rows(run, input_ids, scores, ks)
            k = ks[0]
        else:
            k = self.producer.keeps_top(vocab)
        if k is None or k + 1 > vocab:
            return self._keeping_all(run, input_ids, scores)
        if self.dense:
            scores = run.apply(self.dense, input_ids, scores)
        values, indices = largest(scores, k + 1)  # (B, k+1), largest first (NaN first of all)
        values = run.apply(self.prefix, input_ids, values)
        columns = self._columns.get(k)
        if columns is None:
            columns = self._columns[k] = torch.tensor([0, k - 1, k], device=values.device)
        picked = values.index_select(-1, columns).tolist()  # each row's maximum, k-th, (k+1)-th
        check_picked(picked)
        if any(kth == nxt and kth != _NEG_INF for _, kth, nxt in picked):
            if self.dense:  # the dense processors have run: finish this step densely from there
                scores = run.apply([*self.prefix, (self.producer, self.index), *self.suffix], input_ids, scores)
                return run.chain.selector.select(input_ids, scores, run.selector_context())
            return None  # a tie across the k-th place: the dense top-k keeps it
        indices, order = indices[:, :k].sort(dim=-1)  # token-id order, as the dense path
        return select_among(run, input_ids, values.gather(-1, order), indices, self.suffix, checked=True)

    def _keeping_all(self, run, input_ids, scores):
        """A step where some row keeps every token: the filter-found candidates, else densely."""
        if not self._planned:
            found = filter_plan(run.chain)
            self._fallback, self._planned = (FilterCandidates(*found) if found else None), True
        return self._fallback.select(run, input_ids, scores) if self._fallback is not None else None

    def _select_rows(self, run, input_ids, scores, ks: list[int]):
        """The steps above with each row's own k (the largest k + 1 taken once)."""
        most = max(ks)
        if self._rows is None or self._rows[0] != ks or self._rows[1].device != scores.device:
            own = torch.tensor(ks, device=scores.device)[:, None]  # (B, 1)
            columns = torch.cat([torch.zeros_like(own), own - 1, own], dim=-1)  # (B, 3)
            past = torch.arange(most, device=scores.device) >= own  # (B, most): past each row's own k
            self._rows = (list(ks), columns, past)
        _, columns, past = self._rows
        if self.dense:
            scores = run.apply(self.dense, input_ids, scores)
        values, indices = largest(scores, most + 1)  # (B, most+1), largest first
        values = run.apply(self.prefix, input_ids, values)
        picked = values.gather(-1, columns).tolist()  # each row's maximum, k-th, (k+1)-th
        check_picked(picked)
        if any(kth == nxt and kth != _NEG_INF for _, kth, nxt in picked):
            if self.dense:
                scores = run.apply([*self.prefix, (self.producer, self.index), *self.suffix], input_ids, scores)
                return run.chain.selector.select(input_ids, scores, run.selector_context())
            return None
        values = values[:, :most].masked_fill(past, _NEG_INF)
        indices, order = indices[:, :most].sort(dim=-1)  # token-id order, as the dense path
        return select_among(run, input_ids, values.gather(-1, order), indices, self.suffix, checked=True)


def check_picked(picked: list[list[float]]) -> None:
    """Each row's maximum (the first of each list) is finite, else the row's error."""
    wild = [r for r, (top, *_) in enumerate(picked) if top != top or top == _INF]
    if wild:
        raise NonFiniteRowError(wild)
    empty = [r for r, (top, *_) in enumerate(picked) if top == _NEG_INF]
    if empty:
        raise EmptyRowError(empty)


def plan(chain) -> tuple[Pairs, Pairs, object, Pairs, int] | None:
    """(dense, prefix, producer, suffix, producer's index) when ``chain`` can run on top-k
    candidates, else None: the first processor that ``keeps_top`` whose suffix runs on
    candidates, before a selector that ``select_candidates``; ``prefix`` is the run of
    processors just before it that commute with it, ``dense`` whatever comes before those."""
    if chain.selector is None or not selects_candidates(chain):
        return None
    logits = chain.indexed_logits
    for at, (producer, index) in enumerate(logits):
        if promised(producer, "keeps_top") is None:
            continue
        suffix = logits[at + 1:]
        if not all(runs_on_candidates(p) for p, _ in suffix):
            continue
        start = at
        while start and promised(logits[start - 1][0], "commutes_with_top_k"):
            start -= 1
        return logits[:start], logits[start:at], producer, suffix, index
    return None


@hookimpl(tryfirst=True)
def step_strategy(chain):
    found = plan(chain)
    if not found:
        return None
    return TopKCandidates(*found)
