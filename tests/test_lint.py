"""The chain linter: valid compositions that cannot do what they seem to, each warning saying
where, why and what to do instead."""

from __future__ import annotations

import pytest

from samplekit.chain import Chain
from samplekit.config import load_config, parse_config, preset_names
from samplekit.lint import LintWarning, lint_chain
from samplekit.params import Param
from samplekit.processor import Processor
from samplekit.processors.selectors import Greedy, Multinomial
from samplekit.processors.temperature import Temperature
from samplekit.processors.top_k import TopK


def lint(*chain, vocab_size=None) -> dict[str, str]:
    warnings = lint_chain(parse_config({"chain": list(chain)}), vocab_size=vocab_size)
    for w in warnings:
        assert isinstance(w, LintWarning) and w.where and w.message and w.suggestion
    return {w.where: f"{w.message}; {w.suggestion}" for w in warnings}


@pytest.mark.parametrize("name", preset_names())
def test_bundled_presets_have_no_warnings(name):
    assert lint_chain(load_config(name)) == []


def test_the_usual_chains_have_no_warnings():
    assert lint({"temperature": 0.7}, {"top_k": 40}, {"top_p": {"p": 0.9}}, "multinomial") == {}
    assert lint({"repetition_penalty": {"penalty": 1.2}}, {"temperature": 0.7}, {"min_p": {"p": 0.05}},
                "multinomial") == {}
    assert lint({"temperature": 0}, "multinomial") == {}  # the documented way to be greedy
    assert lint("greedy") == {}


def test_filters_before_greedy_have_no_effect():
    found = lint({"temperature": 0.5}, {"top_k": 5}, "greedy")
    assert set(found) == {"chain[0].temperature", "chain[1].top_k"}
    assert "has no effect" in found["chain[1].top_k"] and "multinomial" in found["chain[1].top_k"]


def test_an_argmax_keeping_filter_before_a_penalty_still_matters_under_greedy():
    found = lint({"top_k": 5}, {"repetition_penalty": {"penalty": 1.3}}, "greedy")
    assert not any("has no effect" in m for m in found.values()), found


def test_everything_after_temperature_zero_is_flagged():
    found = lint({"temperature": 0}, {"top_k": 40}, {"top_p": {"p": 0.9}}, "multinomial")
    assert set(found) == {"chain[1].top_k", "chain[2].top_p"}
    assert "temperature 0" in found["chain[1].top_k"] and "move it before chain[0].temperature" in found["chain[1].top_k"]


def test_top_k_1_counts_as_greedy():
    found = lint({"top_k": 1}, {"min_p": {"p": 0.1}}, "multinomial")
    assert "chain[1].min_p" in found and "k=1" in found["chain[1].min_p"]


def test_top_k_1_keeping_more_tokens_is_not_greedy():
    assert lint({"top_k": {"k": 1, "min_tokens_to_keep": 3}}, {"min_p": {"p": 0.1}}, "multinomial") == {}


@pytest.mark.parametrize("entry, fragment", [
    ({"temperature": 1.0}, "temperature 1.0 leaves the logits unchanged"),
    ({"top_p": {"p": 1.0}}, "p=1.0 keeps the whole distribution"),
    ({"min_p": {"p": 0.0}}, "p=0.0 removes no token"),
    ({"repetition_penalty": {"penalty": 1.0}}, "changes no logit"),
    ("frequency_penalty", "changes no logit"),
])
def test_settings_that_do_nothing_are_flagged(entry, fragment):
    found = lint(entry, "multinomial")
    assert fragment in found["chain[0]." + (entry if isinstance(entry, str) else next(iter(entry)))], found


def test_top_k_at_least_the_vocabulary_is_flagged_only_when_the_vocabulary_is_known():
    assert lint({"top_k": 50}, "multinomial") == {}
    assert "at least the vocabulary size (50)" in lint({"top_k": 50}, "multinomial", vocab_size=50)["chain[0].top_k"]
    assert lint({"top_k": 49}, "multinomial", vocab_size=50) == {}


@pytest.mark.parametrize("cut", [{"top_p": {"p": 0.9}}, {"min_p": {"p": 0.1}}, {"typical_p": {"mass": 0.9}},
                                 {"p_less": {}}, {"p_less_norm": {}}, {"top_h": {"top_h": 0.4}}])
def test_a_probability_cut_before_temperature_is_flagged(cut):
    name = next(iter(cut))
    found = lint(cut, {"temperature": 0.7}, "multinomial")
    assert f"{name} runs before temperature" in found[f"chain[0].{name}"]
    assert "untempered" in found[f"chain[0].{name}"] and "put temperature before" in found[f"chain[0].{name}"]
    assert lint({"temperature": 0.7}, cut, "multinomial") == {}


def test_top_k_before_temperature_is_fine_because_it_is_rank_based():
    assert lint({"top_k": 40}, {"temperature": 0.7}, "multinomial") == {}


def test_a_penalty_after_a_truncation_filter_is_flagged_but_not_after_a_ban():
    found = lint({"top_k": 40}, {"repetition_penalty": {"penalty": 1.2}}, "multinomial")
    assert "move repetition_penalty before top_k" in found["chain[1].repetition_penalty"]
    assert lint({"banned_tokens": {"tokens": [3]}}, {"repetition_penalty": {"penalty": 1.2}}, "multinomial") == {}


def test_a_duplicate_processor_is_flagged_at_its_second_place():
    found = lint({"temperature": 0.7}, {"top_k": 40}, {"top_k": 20}, "multinomial")
    assert set(found) == {"chain[2].top_k"} and "first at chain[1].top_k" in found["chain[2].top_k"]
    assert "chain[1].temperature" in lint({"temperature": 0.7}, {"temp": 0.9}, "multinomial")


# -- trait-based rules work for processors the linter has never heard of --------------------------
class MyPenalty(Processor):
    """A plugin's penalty: reads the history, reshapes logits."""

    name = "my_penalty"
    needs_history = True

    def process(self, input_ids, scores, ctx):
        return scores - 1.0


class MyFilter(Processor):
    """A plugin's truncation filter: keeps the argmax, sets others to -inf."""

    name = "my_filter"
    params = (Param("n", "int", 3, "keep n", low=1),)
    is_filter = True
    keeps_argmax = True

    def process(self, input_ids, scores, ctx):
        return scores


def test_rules_by_trait_apply_to_unknown_plugin_processors():
    found = {w.where: w.message for w in lint_chain([MyFilter(), MyPenalty(), Multinomial()])}
    assert "runs after the filter chain[0].my_filter" in found["chain[1].my_penalty"]
    found = {w.where: w.message for w in lint_chain([Temperature(value=0.5), MyFilter(), Greedy()])}
    assert set(found) == {"chain[0].temperature", "chain[1].my_filter"}
    assert lint_chain([MyPenalty(), MyFilter(), Multinomial()]) == []


def test_lint_accepts_a_chain_a_config_or_a_processor_list():
    chain = Chain([Temperature(value=0.5), TopK(k=3), Greedy()])
    config = parse_config({"chain": [{"temperature": 0.5}, {"top_k": 3}, "greedy"]})
    assert lint_chain(chain) == lint_chain(config) == lint_chain(chain.processors)
    assert [w.where for w in lint_chain(chain)] == ["chain[0].temperature", "chain[1].top_k"]


def test_warnings_print_as_where_message_suggestion():
    (w,) = lint_chain([Temperature(value=1.0), Multinomial()])
    assert str(w) == f"chain[0].temperature: {w.message}; {w.suggestion}"
    assert w.to_dict() == {"where": w.where, "message": w.message, "suggestion": w.suggestion}
