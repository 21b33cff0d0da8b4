"""Filter-found candidates: a filter such as top-p finds its own few candidates.

A filter whose kept set depends on the whole row (top-p: the nucleus's mass) may offer
``filter_candidates(input_ids, scores, ctx) -> (values, indices) | None``: candidates that rebuild
exactly what its ``process`` returns (the conformance kit checks this), or None when it cannot
tell cheaply. The processors before it run on the whole vocabulary (any processor may), the
filter finds its candidates, and the processors after it and the selector run on them
(``samplekit.strategies.candidates``); on None the step continues densely from the filter on.
"""

from __future__ import annotations

from samplekit.hookspecs import hookimpl
from samplekit.strategies.candidates import Pairs, runs_on_candidates, select_among, selects_candidates
from samplekit.strategy import StepStrategy, promised


class FilterCandidates(StepStrategy):
    name = "filter-found candidates"
    per_row_values = True  # the processors read their rows' values; the filter finds each row's candidates

    def __init__(self, prefix: Pairs, producer: tuple, suffix: Pairs):
        self.prefix, self.producer, self.suffix = prefix, producer, suffix

    def select(self, run, input_ids, scores):
        scores = run.apply(self.prefix, input_ids, scores)
        producer, index = self.producer
        run.ctx.state = run.states[index]
        found = producer.filter_candidates(input_ids, scores, run.ctx)
        if found is None:  # finish densely from the producer on (the prefix has run)
            scores = run.apply([self.producer, *self.suffix], input_ids, scores)
            return run.chain.selector.select(input_ids, scores, run.selector_context())
        values, indices = found
        indices, order = indices.sort(dim=-1)
        return select_among(run, input_ids, values.gather(-1, order), indices, self.suffix, checked=False)


def plan(chain) -> tuple[Pairs, tuple, Pairs] | None:
    """(prefix, (producer, index), suffix) for the first processor with ``filter_candidates``
    whose suffix runs on candidates, before a selector that ``select_candidates``."""
    if chain.selector is None or not selects_candidates(chain):
        return None
    logits = chain.indexed_logits
    for at, (producer, index) in enumerate(logits):
        if promised(producer, "filter_candidates") is None:
            continue
        if all(runs_on_candidates(p) for p, _ in logits[at + 1:]):
            return logits[:at], (producer, index), logits[at + 1:]
    return None


@hookimpl
def step_strategy(chain):
    found = plan(chain)
    return FilterCandidates(*found) if found else None
