"""The conformance kit: every built-in passes it, and each kind of contract violation is caught."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

import math

from samplekit import ContextProcessor, Param, Processor, Selector, check_rows
from samplekit.plugins import PluginHost
from samplekit.testing import check_processor, logits, token_histories

# check_processor arguments where a processor's defaults make it a no-op (or are not enough);
# processors not listed here are checked with their defaults.
EXAMPLES: dict[str, dict] = {
    "top_k": {"params": {"k": 3}},
    "top_p": {"params": {"p": 0.8}},
    "min_p": {"params": {"p": 0.1}},
    "typical_p": {"params": {"mass": 0.8}},
    "temperature": {"params": {"value": 0.7}},
    "repetition_penalty": {"params": {"penalty": 1.3}},
    "frequency_penalty": {"params": {"penalty": 0.5}},
    "presence_penalty": {"params": {"penalty": 0.5}},
    "no_repeat_ngram": {"params": {"size": 2}},
    # Token ids in the parameters must exist in the vocabulary (ids outside it are a ParameterError).
    "logit_bias": {"params": {"bias": {1: 2.5, 3: -1.0}}, "vocab": (4, 48)},
    "banned_tokens": {"params": {"tokens": [1, 2]}, "vocab": (3, 48)},
    "min_new_tokens": {"params": {"n": 2, "eos_token_ids": [0]}},
    "dynamic_temperature": {"params": {"range": 0.5}},
    "top_h": {"params": {"top_h": 0.5}},
    "smoothing": {"params": {"factor": 0.7}},
    "adaptive_p": {"params": {"target": 0.3, "decay": 0.5}},
    "sequence_bias": {"params": {"bias": [[[1, 2], -3.0], [[0], 1.5]]}, "vocab": (3, 48)},
    "banned_sequences": {"params": {"sequences": [[1, 2], [0]]}, "vocab": (3, 48)},
}
# Further settings worth the kit's checks: parameters away from their defaults (penalty windows,
# top_k's min_tokens_to_keep, the newer samplers' second parameters).
VARIANTS: list[tuple[str, dict]] = [
    ("top_k", {"params": {"k": 2, "min_tokens_to_keep": 5}}),
    ("repetition_penalty", {"params": {"penalty": 1.3, "last_n": 3}}),
    ("frequency_penalty", {"params": {"penalty": 0.5, "last_n": 2}}),
    ("frequency_penalty", {"params": {"penalty": 0.5, "scope": "history", "last_n": 4}}),
    ("presence_penalty", {"params": {"penalty": 0.5, "last_n": 1}}),
    ("top_h", {"params": {"top_h": 0.9, "top_n": 5}}),
    ("smoothing", {"params": {"factor": 2.0, "curve": 3.0}}),
    ("adaptive_p", {"params": {"target": 0.9, "decay": 0.0}}),
]


def _builtin_names() -> list[str]:
    # A private host without entry points: the built-ins only, whatever else is installed.
    return PluginHost(autoload=False).build_registry().names()


@pytest.mark.parametrize("name", _builtin_names())
def test_builtin_processor_passes_the_conformance_kit(name):
    check_processor(name, examples=20, **EXAMPLES.get(name, {}))


@pytest.mark.parametrize("name, example", VARIANTS, ids=[f"{n}-{e['params']}" for n, e in VARIANTS])
def test_builtin_processor_with_other_settings_passes_the_conformance_kit(name, example):
    check_processor(name, examples=20, **example)


def test_processor_conformance_fixture_is_check_processor(processor_conformance):
    assert processor_conformance is check_processor
    processor_conformance("top_k", params={"k": 2}, examples=5)


def test_check_processor_accepts_an_instance():
    from samplekit.processors.top_k import TopK

    check_processor(TopK(k=4), examples=5)


# -- strategies ----------------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(scores=logits(batch=(1, 4), vocab=(1, 16)))
def test_logits_strategy_never_yields_an_all_neginf_row(scores):
    assert scores.dtype == torch.float32 and scores.dim() == 2
    assert not torch.isnan(scores).any()
    assert (~torch.isneginf(scores)).any(dim=-1).all()


@settings(max_examples=50, deadline=None)
@given(ids=token_histories(batch=3, vocab=5, length=(0, 9)))
def test_token_histories_are_long_ids_within_the_vocabulary(ids):
    assert ids.dtype == torch.long and ids.shape[0] == 3 and ids.shape[1] <= 9
    assert ((ids >= 0) & (ids < 5)).all()


# -- deliberately broken processors --------------------------------------------------------------
class WritesInput(Processor):
    """Adds one to the scores in place."""

    name = "writes_input"

    def process(self, input_ids, scores, ctx):
        scores.add_(1.0)
        return scores.clone()


class ChangesDtype(Processor):
    """Returns float64 scores."""

    name = "changes_dtype"

    def process(self, input_ids, scores, ctx):
        return scores.double()


class IntroducesNaN(Processor):
    """Multiplies by zero (-inf * 0 is NaN)."""

    name = "introduces_nan"

    def process(self, input_ids, scores, ctx):
        return scores * 0.0


class ClaimsKeepsArgmax(Processor):
    """Negates the scores but claims to keep the argmax."""

    name = "claims_keeps_argmax"
    keeps_argmax = True

    def process(self, input_ids, scores, ctx):
        return torch.where(torch.isneginf(scores), scores, -scores)


class ClaimsFilterButScales(Processor):
    """Doubles the scores but claims to be a filter."""

    name = "claims_filter"
    is_filter = True

    def process(self, input_ids, scores, ctx):
        return scores * 2.0


class RowsNotIndependent(Processor):
    """Subtracts the first row's maximum from every row."""

    name = "rows_not_independent"

    def process(self, input_ids, scores, ctx):
        return scores - scores[:1].amax()


class StateNotReset(Processor):
    """Counts accepted tokens in a list shared by every generation."""

    name = "state_not_reset"
    stateful = True

    def __init__(self, **values):
        super().__init__(**values)
        self._seen = []

    def start(self, batch_size, ctx):
        return self._seen  # never reset: the bug

    def accept(self, tokens, ctx):
        ctx.state.append(tokens)

    def process(self, input_ids, scores, ctx):
        return scores - float(len(ctx.state))


class UndeclaredRange(Processor):
    """Top-k whose k is declared without its lower bound."""

    name = "undeclared_range"
    params = (Param("k", "int", 2, "how many to keep"),)

    def process(self, input_ids, scores, ctx):
        kth = scores.topk(min(self.k, scores.shape[-1]), dim=-1).values[:, -1:]
        return scores.masked_fill(scores < kth, float("-inf"))


class ClampsInsteadOfRejecting(Processor):
    """Silently clamps an out-of-range p instead of raising ParameterError."""

    name = "clamps_param"
    params = (Param("p", "float", 0.5, "a probability", low=0.0, high=1.0),)

    def __init__(self, **values):
        if isinstance(values.get("p"), float) and values["p"] == values["p"]:
            values["p"] = min(max(values["p"], 0.0), 1.0)
        super().__init__(**values)

    def process(self, input_ids, scores, ctx):
        return scores * 1.0


class ClaimsVocabSymmetric(Processor):
    """Adds a bias growing with the token id but claims vocabulary symmetry."""

    name = "claims_symmetric"
    vocab_symmetric = True

    def process(self, input_ids, scores, ctx):
        return scores + torch.arange(scores.shape[-1], dtype=scores.dtype) * 0.5


class UndeclaredRandom(Processor):
    """Adds noise from ctx.random but declares random = False."""

    name = "undeclared_random"

    def process(self, input_ids, scores, ctx):
        return scores + ctx.random.uniform(1, scores.device).to(scores.dtype)


class UndeclaredHistory(Processor):
    """Lowers the last token's logit but declares needs_history = False."""

    name = "undeclared_history"

    def process(self, input_ids, scores, ctx):
        last = torch.nn.functional.one_hot(input_ids[:, -1], scores.shape[-1]).bool()
        return scores.masked_fill(last, float("-inf"))


class PicksMaskedToken(Selector):
    """Always picks token 0, even where its logit is -inf."""

    name = "picks_masked"

    def select(self, input_ids, scores, ctx):
        return torch.zeros(scores.shape[0], dtype=torch.long)


class NoHelp(Processor):
    """A parameter without help text."""

    name = "no_help"
    params = (Param("x", "float", 1.0, low=0.0),)

    def process(self, input_ids, scores, ctx):
        return scores


class CandidatesDisagree(Processor):
    """Its filter_candidates keeps the two largest logits, its process only the largest."""

    name = "candidates_disagree"
    is_filter = True

    def filter_candidates(self, input_ids, scores, ctx):
        return scores.topk(min(2, scores.shape[-1]), dim=-1)

    def process(self, input_ids, scores, ctx):
        return scores.masked_fill(scores < scores.amax(dim=-1, keepdim=True), float("-inf"))


class ForgetsJoiningRows(Processor):
    """Counts each row's accepted tokens, but joining rows reset everyone's count."""

    name = "forgets_joining_rows"
    stateful = True

    def start(self, batch_size, ctx):
        return torch.zeros(batch_size)

    def join_rows(self, state, joining):
        return torch.zeros(len(state) + len(joining))  # the bug: the running rows lose their counts

    def accept(self, tokens, ctx):
        ctx.state.add_(1)

    def process(self, input_ids, scores, ctx):
        return scores - ctx.state.to(scores.dtype)[:, None] * (torch.arange(scores.shape[-1]) == 0)


class ReadsItsOwnValue(Processor):
    """Declares its scale per row, but reads ``self.value``: every row gets the run's value."""

    name = "reads_its_own_value"
    params = (Param("value", "float", 1.0, "the scale", low=0.0, low_open=True, per_row=True),)

    def process(self, input_ids, scores, ctx):
        return scores * self.value  # the bug: self.row_value(ctx, "value", scores)


class CountsRunSteps(Processor):
    """Bans token 0 for the first two steps, counting the run's steps instead of each row's."""

    name = "counts_run_steps"
    is_filter = True

    def tracks_generation(self):
        return True

    def process(self, input_ids, scores, ctx):
        return scores.index_fill(1, torch.tensor([0]), float("-inf")) if ctx.step < 2 else scores  # ctx.steps!


class FalseKeepsTop(Processor):
    """Promises keeps_top k but keeps k + 1."""

    name = "false_keeps_top"
    is_filter = keeps_argmax = True

    def keeps_top(self, vocab_size):
        return 2 if 2 < vocab_size else None

    def process(self, input_ids, scores, ctx):
        kth = scores.topk(min(3, scores.shape[-1]), dim=-1).values[:, -1:]
        return scores.masked_fill(scores < kth, float("-inf"))


class FalseKeepsTopRows(Processor):
    """Keeps each row's own k, but ``keeps_top_rows`` reports the run's k for every row."""

    name = "false_keeps_top_rows"
    params = (Param("k", "int", 2, "how many to keep", low=1, per_row=True),)
    is_filter = keeps_argmax = True

    def keeps_top(self, vocab_size):
        return self.k if self.k < vocab_size else None

    def keeps_top_rows(self, vocab_size, ctx):
        return [self.keeps_top(vocab_size)] * ctx.batch_size  # the bug: self.row_values(ctx, "k")

    def process(self, input_ids, scores, ctx):
        out = []
        for row, k in zip(scores, self.row_values(ctx, "k")):
            kth = row.topk(min(k, row.shape[-1])).values[-1]
            out.append(row.masked_fill(row < kth, float("-inf")))
        return torch.stack(out)


class FalseCommutes(Processor):
    """Subtracts the log-sum-exp (reads the whole row) but promises commutes_with_top_k."""

    name = "false_commutes"
    keeps_argmax = True
    commutes_with_top_k = True

    def process(self, input_ids, scores, ctx):
        return scores - scores.float().logsumexp(-1, keepdim=True).nan_to_num(0.0, neginf=0.0).to(scores.dtype)


class FalseCandidateSafe(Processor):
    """Shifts by the log of the vocabulary size but promises candidate_safe."""

    name = "false_candidate_safe"
    keeps_argmax = True
    candidate_safe = True

    def process(self, input_ids, scores, ctx):
        return scores - math.log(scores.shape[-1])


class FalseProcessCandidates(Processor):
    """Halves the scores, but its process_candidates returns them unchanged."""

    name = "false_process_candidates"
    keeps_argmax = True

    def process(self, input_ids, scores, ctx):
        return scores / 2

    def process_candidates(self, input_ids, values, indices, ctx):
        return values


class FalseSelectCandidates(Selector):
    """Greedy, but on candidates it picks the last maximum instead of the lowest id."""

    name = "false_select_candidates"
    keeps_argmax = True

    def select(self, input_ids, scores, ctx):
        row_max, tokens = scores.max(dim=-1)
        check_rows(row_max)
        return tokens

    def select_candidates(self, input_ids, values, indices, ctx):
        flipped = values.flip(-1).argmax(dim=-1)
        return indices.gather(-1, (values.shape[-1] - 1 - flipped)[:, None]).squeeze(-1)


class UndeclaredTracksGeneration(Processor):
    """Lowers every logit by the step count, without declaring tracks_generation."""

    name = "undeclared_tracks_generation"
    keeps_argmax = vocab_symmetric = True

    def process(self, input_ids, scores, ctx):
        return scores - ctx.steps.to(scores.dtype)[:, None]


class FalseKeepsLastWindow(ContextProcessor):
    """Keeps the first window tokens but declares keeps_last_window."""

    name = "false_keeps_last_window"
    keeps_last_window = True

    def window(self, ctx):
        return 2

    def crop(self, input_ids, ctx):
        return input_ids[:, :2]


class KeepsStateOnItself(Processor):
    """Misbehaves on its 40th call only, counting calls on the processor object."""

    name = "keeps_state_on_itself"
    keeps_argmax = True

    def __init__(self, **values):
        super().__init__(**values)
        self.calls = 0

    def process(self, input_ids, scores, ctx):
        self.calls += 1
        return scores * float("nan") if self.calls == 40 else scores


BROKEN = [
    (WritesInput, "input not written"),
    (ChangesDtype, "dtype kept"),
    (IntroducesNaN, "no NaN introduced"),
    (ClaimsKeepsArgmax, "declares keeps_argmax"),
    (ClaimsFilterButScales, "declares is_filter"),
    (RowsNotIndependent, "rows independent"),
    (StateNotReset, "state reset between runs"),
    (UndeclaredRange, r"declared range|k=0 \(allowed by the declaration"),
    (ClampsInsteadOfRejecting, "parameters validated: p=.*(below|above) the (lower|upper) bound.*was accepted"),
    (ClaimsVocabSymmetric, "declares vocab_symmetric"),
    (UndeclaredRandom, "declares random=False"),
    (UndeclaredHistory, "declares needs_history=False"),
    (PicksMaskedToken, "selector picks a finite logit|a row of only -inf"),
    (NoHelp, "no help text"),
    (CandidatesDisagree, "filter_candidates agrees with process"),
    (ForgetsJoiningRows, "rows join and leave"),
    (CountsRunSteps, "rows join and leave"),
    (ReadsItsOwnValue, "rows carry their own values"),
    (FalseKeepsTop, "declares keeps_top"),
    (FalseKeepsTopRows, "declares keeps_top_rows"),
    (FalseCommutes, "declares commutes_with_top_k"),
    (FalseCandidateSafe, "declares candidate_safe"),
    (FalseProcessCandidates, "declares process_candidates"),
    (FalseSelectCandidates, "declares select_candidates"),
    (UndeclaredTracksGeneration, r"declares tracks_generation\(\) False"),
    (FalseKeepsLastWindow, "declares keeps_last_window"),
    (KeepsStateOnItself, "keeps state on the processor object"),
]


@pytest.mark.parametrize("cls, problem", BROKEN, ids=[c.name for c, _ in BROKEN])
def test_conformance_kit_names_the_processor_and_the_broken_property(cls, problem):
    with pytest.raises(AssertionError, match=problem) as caught:
        check_processor(cls, examples=30, shrink=False)
    assert f"processor {cls.name!r}" in str(caught.value)
