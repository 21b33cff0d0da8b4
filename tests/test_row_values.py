"""Rows that carry their own values: chains with one signature share a ChainRun, and each row's
tokens are those of its own chain run alone (samplekit.chain, Processor.row_value)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samplekit.chain import Chain
from samplekit.params import INT_LIMIT
from samplekit.processors.selectors import Multinomial
from samplekit.processors.top_p import TopP
from samplekit.strategy import DENSE, StepStrategy

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def serving_chain(v: dict, *, fast_paths: bool = True) -> Chain:
    """What a server builds from a request's values: penalties, temperature, truncations, sampling."""
    return Chain.from_names(
        ("frequency_penalty", {"penalty": v["frequency"]}), ("presence_penalty", {"penalty": v["presence"]}),
        ("repetition_penalty", {"penalty": v["repetition"]}), ("temperature", {"value": v["temperature"]}),
        ("top_k", {"k": v["k"]}), ("top_p", {"p": v["p"]}), ("min_p", {"p": v["min_p"]}), "multinomial",
        fast_paths=fast_paths)


values = st.fixed_dictionaries({
    "frequency": st.sampled_from([0.0, 0.5, -0.3]), "presence": st.sampled_from([0.0, 0.4]),
    "repetition": st.sampled_from([1.0, 1.3, 0.8]), "temperature": st.sampled_from([0.0, 0.2, 0.7, 1.0, 1.3]),
    "k": st.integers(1, 40) | st.just(INT_LIMIT), "p": st.floats(0.3, 1.0), "min_p": st.sampled_from([0.0, 0.05, 0.3]),
})


def _scores(seed: int, step: int, vocab: int, scale: float = 3.0) -> torch.Tensor:
    """A row's logits at its own step: continuous values (no ties), the same whatever the company."""
    return torch.randn(vocab, generator=torch.Generator().manual_seed(seed * 1000 + step)) * scale


def _simulate(run_chain: Chain, own: list[Chain], joins: list[int], lengths: list[int], prompts: list[list[int]],
              vocab: int, row_chains: bool = True, scale: float = 3.0) -> tuple[list[list[int]], list[StepStrategy]]:
    """Each row's tokens when the rows share one run of ``run_chain`` (row i with ``own[i]``'s
    values, joining at ``joins[i]``, leaving after ``lengths[i]`` tokens); and the strategies used."""
    run, active, used = None, [], []
    history = [list(p) for p in prompts]
    tokens: list[list[int]] = [[] for _ in own]
    for step in range(max(j + n for j, n in zip(joins, lengths))):
        joining = [r for r, j in enumerate(joins) if j == step]
        if joining:
            mine = [own[r] for r in joining] if row_chains else None
            lengths_now = torch.tensor([len(history[r]) for r in joining])
            if run is None:
                run = run_chain.start(len(joining), seeds=joining, row_chains=mine, prompt_lengths=lengths_now)
            else:
                run.add_rows(len(joining), seeds=joining, row_chains=mine, prompt_lengths=lengths_now)
            active += joining
        if not active:
            continue
        width = max(len(history[r]) for r in active)
        ids = torch.tensor([[0] * (width - len(history[r])) + history[r] for r in active])
        run.ctx.attention_mask = torch.tensor([[False] * (width - len(history[r])) + [True] * len(history[r])
                                               for r in active])
        scores = torch.stack([_scores(r, len(tokens[r]), vocab, scale) for r in active])
        chosen = run.select(ids, scores).tolist()
        used.append(run.active_strategy)
        for r, t in zip(active, chosen):
            tokens[r].append(t)
            history[r].append(t)
        keep = [i for i, r in enumerate(active) if len(tokens[r]) < lengths[r]]
        if len(keep) < len(active):
            run.keep_rows(torch.tensor(keep, dtype=torch.long))
            active = [active[i] for i in keep]
    return tokens, used


def _alone_tokens(chain: Chain, row: int, length: int, prompt: list[int], vocab: int, scale: float = 3.0) -> list[int]:
    """Row ``row`` (its seed and logits) run alone through ``chain``."""
    run = chain.start(1, seeds=[row], prompt_lengths=torch.tensor([len(prompt)]))
    history, out = list(prompt), []
    for step in range(length):
        token = int(run.select(torch.tensor([history]), _scores(row, step, vocab, scale)[None])[0])
        out.append(token)
        history.append(token)
    return out


@SETTINGS
@given(rows=st.lists(values, min_size=2, max_size=5), data=st.data(), vocab=st.integers(48, 160))
def test_a_rows_tokens_are_its_own_chains_alone_among_rows_with_other_values(rows, data, vocab):
    """Invariant: in a shared run, rows joining and leaving at any step, each row draws exactly the
    tokens of its own chain run alone (penalties, temperature, top-k, top-p, min-p per row)."""
    own = [serving_chain(v) for v in rows]
    n = len(rows)
    joins = [0] + [data.draw(st.integers(0, 4), label=f"row {r} joins") for r in range(1, n)]
    lengths = [data.draw(st.integers(1, 5), label=f"row {r} tokens") for r in range(n)]
    prompts = [data.draw(st.lists(st.integers(0, vocab - 1), min_size=1, max_size=6), label=f"prompt {r}")
               for r in range(n)]
    shared, _ = _simulate(own[0], own, joins, lengths, prompts, vocab)
    for r in range(n):
        assert shared[r] == _alone_tokens(own[r], r, lengths[r], prompts[r], vocab), (r, rows[r])


@SETTINGS
@given(temperatures=st.lists(st.sampled_from([0.0, 0.3, 0.8, 1.0, 1.7]), min_size=2, max_size=4),
       ks=st.lists(st.integers(1, 30), min_size=4, max_size=4))
def test_rows_with_their_own_k_sample_on_the_top_k_candidates_and_match_running_alone(temperatures, ks):
    """Invariant: per-row k and temperature keep the top-k candidate strategy (no dense step once
    verified) and give each row its tokens alone."""
    own = [Chain.from_names(("temperature", {"value": t}), ("top_k", {"k": k}), ("top_p", {"p": 0.9}), "multinomial")
           for t, k in zip(temperatures, ks)]
    n, vocab = len(own), 64
    shared, used = _simulate(own[0], own, [0] * n, [4] * n, [[1, 2]] * n, vocab)
    assert all(s.per_row_values and s is not DENSE for s in used), used  # top-k candidates (or a plugin's)
    for r in range(n):
        assert shared[r] == _alone_tokens(own[r], r, 4, [1, 2], vocab)


@SETTINGS
@given(temperatures=st.lists(st.sampled_from([0.3, 0.8, 1.0, 1.7]), min_size=2, max_size=4),
       ks=st.lists(st.integers(1, 30), min_size=4, max_size=4))
def test_temperature_top_k_multinomial_rows_with_their_own_values_match_running_alone(temperatures, ks):
    """Invariant: the chain the samplekit-native kernel serves (when installed) gives each row its
    tokens alone when rows carry their own values (the kernel hands such runs to the tensors)."""
    own = [Chain.from_names(("temperature", {"value": t}), ("top_k", {"k": k}), "multinomial")
           for t, k in zip(temperatures, ks)]
    n, vocab = len(own), 64
    shared, used = _simulate(own[0], own, [0] * n, [4] * n, [[1, 2]] * n, vocab)
    assert all(s.per_row_values for s in used), used
    for r in range(n):
        assert shared[r] == _alone_tokens(own[r], r, 4, [1, 2], vocab)


def test_rows_with_top_k_off_beside_rows_with_k_use_the_filter_candidates(monkeypatch):
    """A step where some row keeps every token (k off) goes to the filter-found candidates (top-p
    finds each row's nucleus), not the dense path; each row still draws its tokens alone."""
    found = []
    original = TopP.filter_candidates

    def counted(self, input_ids, scores, ctx):
        out = original(self, input_ids, scores, ctx)
        found.append(out is not None)
        return out

    monkeypatch.setattr(TopP, "filter_candidates", counted)
    vocab = TopP.MIN_VOCAB
    specs = [(0.7, 40, 0.8), (1.2, INT_LIMIT, 0.9), (0.4, 20, 0.85)]
    own = [Chain.from_names(("temperature", {"value": t}), ("top_k", {"k": k}), ("top_p", {"p": p}), "multinomial")
           for t, k, p in specs]
    shared, used = _simulate(own[0], own, [0, 0, 0], [3, 3, 3], [[5]] * 3, vocab, scale=12.0)
    assert any(found), "top-p never found the candidates"
    for r in range(3):
        assert shared[r] == _alone_tokens(own[r], r, 3, [5], vocab, scale=12.0)


def test_a_strategy_that_does_not_read_per_row_values_is_replaced_by_the_dense_path(monkeypatch):
    class SharedOnly(StepStrategy):
        name = "shared only"

    chain = Chain.from_names(("temperature", {"value": 0.8}), "multinomial")
    monkeypatch.setattr(Chain, "step_strategy", lambda self: SharedOnly())
    other = Chain.from_names(("temperature", {"value": 0.5}), "multinomial")
    assert isinstance(chain.start(2, seeds=[0, 1]).active_strategy, SharedOnly)
    assert isinstance(chain.start(2, seeds=[0, 1], row_chains=[chain, chain]).active_strategy, SharedOnly)
    mixed = chain.start(2, seeds=[0, 1], row_chains=[chain, other])
    assert mixed.active_strategy is DENSE
    mixed.keep_rows(torch.tensor([0]))  # the row with other values left: the strategy serves again
    assert isinstance(mixed.active_strategy, SharedOnly)
    mixed.add_rows(1, seeds=[2], row_chains=[other])
    assert mixed.active_strategy is DENSE


def test_per_row_values_follow_rows_that_leave_and_join():
    chains = [Chain.from_names(("temperature", {"value": t}), "multinomial") for t in (0.2, 0.5, 0.9, 1.3)]
    run = chains[0].start(3, seeds=[0, 1, 2], row_chains=chains[:3])
    temperature = run.chain.processors[0]
    assert temperature.row_values(run.ctx, "value") == [0.2, 0.5, 0.9]
    run.keep_rows(torch.tensor([2, 0]))
    assert temperature.row_values(run.ctx, "value") == [0.9, 0.2]
    run.add_rows(2, seeds=[3, 4], row_chains=[chains[3], chains[0]])
    assert temperature.row_values(run.ctx, "value") == [0.9, 0.2, 1.3, 0.2]
    run.add_rows(1, seeds=[5])  # no row chain: the run's chain's value
    assert temperature.row_values(run.ctx, "value") == [0.9, 0.2, 1.3, 0.2, 0.2]
    value = temperature.row_value(run.ctx, "value", torch.zeros(1))
    assert value.shape == (5, 1) and value.dtype == torch.float32
    run.keep_rows(torch.tensor([1, 3]))
    assert temperature.row_value(run.ctx, "value", torch.zeros(1)) == 0.2  # all equal again: the number


def test_signatures_ignore_per_row_values_and_nothing_else():
    def sig(*specs):
        return Chain.from_names(*specs).signature()

    base = sig(("temperature", {"value": 0.7}), ("top_p", {"p": 0.9}), "multinomial")
    assert base == sig(("temperature", {"value": 1.2}), ("top_p", {"p": 0.95}), "multinomial")
    assert base != sig(("top_p", {"p": 0.9}), ("temperature", {"value": 0.7}), "multinomial")  # order
    assert base != sig(("temperature", {"value": 0.7}), ("top_p", {"p": 0.9, "min_tokens_to_keep": 2}), "multinomial")
    assert base != sig(("temperature", {"value": 0.7}), ("top_p", {"p": 0.9}), "greedy")
    assert sig(("banned_tokens", {"tokens": [1]}), "greedy") != sig(("banned_tokens", {"tokens": [2]}), "greedy")
    assert sig(("logit_bias", {"bias": {1: 2.0}}), "greedy") == sig(("logit_bias", {"bias": {3: -1.0}}), "greedy")
    hash(base)


def test_a_row_chain_with_another_signature_is_refused_naming_the_row():
    chain = Chain.from_names(("temperature", {"value": 0.7}), "multinomial")
    other = Chain.from_names(("top_k", {"k": 5}), "multinomial")
    with pytest.raises(ValueError, match="row 1's chain"):
        chain.start(2, seeds=[0, 1], row_chains=[chain, other])
    with pytest.raises(ValueError, match="1 row chains for 2 rows"):
        chain.start(2, seeds=[0, 1], row_chains=[chain])


def test_fill_to_adds_the_missing_processors_at_their_neutral_values():
    template = serving_chain({"frequency": 0.5, "presence": 0.0, "repetition": 1.2, "temperature": 0.7, "k": 40,
                              "p": 0.9, "min_p": 0.05})
    lacking = Chain.from_names(("temperature", {"value": 1.1}), ("top_p", {"p": 0.8}), "multinomial")
    filled = lacking.fill_to(template)
    assert filled is not None and filled.signature() == template.signature()
    assert [p.settings for p in filled.processors if p.name in ("temperature", "top_p")] == \
        [{"value": 1.1}, {"p": 0.8, "min_tokens_to_keep": 1}]
    assert {p.name: p.settings for p in filled.processors}["top_k"]["k"] == INT_LIMIT
    assert Chain.from_names(("top_n_sigma", {"n": 1.0}), "multinomial").fill_to(template) is None  # not in it
    assert template.fill_to(lacking) is None  # lacking has no top_k to give the template's rows
    no_neutral = Chain.from_names(("top_n_sigma", {"n": 1.0}), ("temperature", {"value": 0.7}), "multinomial")
    assert Chain.from_names(("temperature", {"value": 0.7}), "multinomial").fill_to(no_neutral) is None


@SETTINGS
@given(data=st.data())
def test_a_filled_chains_rows_draw_the_tokens_of_the_chain_it_was_filled_from(data):
    """Invariant: a chain filled to a template (neutral values for what it lacks) gives the same
    tokens, sharing the template's run, as the chain alone."""
    template = serving_chain(data.draw(values, label="template"))
    lacking = Chain.from_names(("temperature", {"value": data.draw(st.sampled_from([0.3, 0.9, 1.3]))}),
                               ("top_p", {"p": data.draw(st.floats(0.5, 1.0))}), "multinomial")
    vocab = 96
    shared, _ = _simulate(template, [template, lacking.fill_to(template)], [0, 1], [4, 4], [[1, 2], [3]], vocab)
    assert shared[1] == _alone_tokens(lacking, 1, 4, [3], vocab)


def test_selectors_without_parameters_share_a_run():
    assert Chain.from_names("multinomial").signature() == Chain.from_names("multinomial").signature()
    assert Multinomial.per_row_params() == ()


PER_ROW = {  # every built-in processor with values, and the plugins shipped beside samplekit
    "temperature": ("value",), "top_k": ("k",), "top_p": ("p",), "min_p": ("p",), "typical_p": ("mass",),
    "epsilon_cutoff": ("epsilon",), "eta_cutoff": ("epsilon",), "top_n_sigma": ("n",),
    "repetition_penalty": ("penalty", "last_n"), "frequency_penalty": ("penalty", "last_n"),
    "presence_penalty": ("penalty", "last_n"),
    "logit_bias": ("bias",), "min_new_tokens": ("n",), "no_repeat_ngram": ("size",),
    "dynamic_temperature": ("temperature", "range", "exponent"), "xtc": ("threshold", "probability"),
    "dry": ("multiplier", "base", "allowed_length", "penalty_last_n"), "mirostat": ("tau", "eta"),
    "mirostat_v2": ("tau", "eta"), "json_schema": ("schema", "schema_file", "whitespace"), "regex": ("pattern",),
    "grammar": ("lark", "gbnf"),
}


@pytest.mark.parametrize("name", sorted(PER_ROW))
def test_the_processors_values_are_declared_per_row(name):
    from samplekit.plugins import get_registry

    registry = get_registry()
    if name not in registry.names():
        pytest.skip(f"{name}'s plugin is not installed")
    assert registry.get(name).cls.per_row_params() == PER_ROW[name]


def _floats(low: float, high: float):
    """Any value in [low, high], rounded to 6 decimals (what a declaration admits: 0, or not tiny)."""
    return st.floats(low, high).map(lambda v: round(v, 6)).filter(lambda v: low <= v <= high)


NUMERIC = {  # processor -> (its per-row parameter, the values to draw it from)
    "temperature": ("value", _floats(0.0, 3.0)), "top_p": ("p", _floats(0.01, 1.0)),
    "min_p": ("p", _floats(0.0, 1.0)), "typical_p": ("mass", _floats(0.01, 1.0)),
    "epsilon_cutoff": ("epsilon", _floats(1e-4, 0.5)), "eta_cutoff": ("epsilon", _floats(1e-4, 0.5)),
    "top_n_sigma": ("n", _floats(0.01, 4.0)), "repetition_penalty": ("penalty", _floats(0.05, 3.0)),
    "frequency_penalty": ("penalty", _floats(-2.0, 2.0)), "presence_penalty": ("penalty", _floats(-2.0, 2.0)),
    "top_k": ("k", st.integers(1, 60)),
}


@pytest.mark.parametrize("name", sorted(NUMERIC))
@SETTINGS
@given(data=st.data(), dtype=st.sampled_from([torch.float32, torch.bfloat16]))
def test_each_rows_logits_are_the_same_alone_or_among_rows_with_other_values(name, data, dtype):
    """Invariant, for any values in range and float32 or bfloat16 logits (ties included): a
    processor's output for a row equals its output for that row alone with the same value (a
    number there, a per-row tensor here: both must round alike)."""
    from samplekit.testing import strategies as sks

    param, drawn = NUMERIC[name]
    rows = data.draw(st.integers(2, 4), label="rows")
    scores = data.draw(sks.logits(batch=rows, vocab=(2, 40), dtype=dtype), label="scores")
    ids = data.draw(sks.token_histories(batch=rows, vocab=scores.shape[1], length=(1, 8)), label="ids")
    values = data.draw(st.lists(drawn, min_size=rows, max_size=rows), label="values")
    own = [Chain.from_names((name, {param: v}), logits_only=True, fast_paths=False) for v in values]
    together = own[0].start(rows, seeds=range(rows), row_chains=own).process(ids, scores)
    for r in range(rows):
        alone = own[r].start(1, seeds=[r]).process(ids[r:r + 1], scores[r:r + 1])
        assert torch.equal(together[r:r + 1].isinf(), alone.isinf()), (r, values)
        finite = ~alone.isinf()
        assert torch.equal(together[r:r + 1][finite], alone[finite]), (r, values)


def test_a_bfloat16_threshold_rounds_as_for_one_number():
    """min_p at p = 0.4 on bfloat16 logits: log(0.4) rounds down to -0.91796875 in bfloat16, and a
    logit exactly there stays (as it does alone, where the threshold is a number rounded to the
    logits' dtype), even beside a row with another p."""
    scores = torch.tensor([[0.0, -0.91796875], [0.0, -0.91796875]], dtype=torch.bfloat16)
    own = [Chain.from_names(("min_p", {"p": p}), logits_only=True) for p in (0.4, 0.9)]
    alone = own[0].apply(None, scores[:1])
    together = own[0].start(2, seeds=[0, 1], row_chains=own).process(None, scores)
    assert alone.isfinite().all()
    assert torch.equal(together[:1], alone)
