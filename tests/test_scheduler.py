"""The continuous-batching scheduler: each request's samples are exactly what it gets alone, whatever
the batch size, the other requests and the order they arrive in; the batch stays full; rows leave and
join; chains differ per request; the plain loop serves models without a joinable cache."""

from __future__ import annotations

import random
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from samplekit import Processor
from samplekit.chain import Chain
from samplekit.engine import generate
from samplekit.model.gpt import GPTModel, ModelConfig
from samplekit.requests import Request, sample_seed
from samplekit.scheduler import Scheduler, SchedulerWarning
from tests.helpers_models import TINY_EOT, TINY_VOCAB_SIZE, make_tiny_encoding

torch.manual_seed(0)
MODEL = GPTModel(ModelConfig(vocab_size=TINY_VOCAB_SIZE, context_length=48, emb_dim=32, n_heads=4, n_layers=2,
                             drop_rate=0.0)).eval()
ENC = make_tiny_encoding()
CHAINS = ["balanced", "creative", {"chain": [{"top_p": {"p": 0.8}}, "multinomial"]}, "greedy"]


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny models gain nothing from threads (see conftest.one_torch_thread)."""


def solo(request: Request, index: int = 0, **options) -> tuple[list[int], str]:
    """What the request's sample ``index`` gives alone, through the engine."""
    (out,) = generate(MODEL, [request.prompt], chain=request.chain, seed=[sample_seed(request.seed, index)],
                      max_new_tokens=request.max_new_tokens, tokenizer=ENC, stop=request.stop,
                      batch_invariant=True, **options)
    return out.tokens, out.finish_reason


requests_strategy = st.lists(
    st.builds(lambda prompt, seed, new, n, chain: Request(prompt=prompt, seed=seed, max_new_tokens=new, n=n,
                                                          chain=chain),
              st.lists(st.integers(0, TINY_EOT - 1), min_size=1, max_size=12), st.integers(0, 2**31),
              st.integers(1, 20), st.integers(1, 3), st.sampled_from(CHAINS)),
    min_size=1, max_size=9)


@settings(max_examples=12, deadline=None)
@given(requests_strategy, st.integers(1, 6), st.randoms(use_true_random=False))
def test_a_seeded_request_gets_its_solo_tokens_whatever_the_batch_and_the_arrival_order(requests, max_batch, rng):
    """Every sample equals that request's run alone (so the batch size, the other requests and
    their order do not matter), with its finish reason."""
    for i, request in enumerate(requests):
        request.id = i
    order = list(requests)
    rng.shuffle(order)
    results = {r.id: r for r in Scheduler(MODEL, tokenizer=ENC, max_batch=max_batch).run(order)}
    assert sorted(results) == list(range(len(requests)))
    for request in requests:
        samples = results[request.id].samples
        assert [s.index for s in samples] == list(range(request.n))
        for s in samples:
            assert (s.tokens, s.finish_reason) == solo(request, s.index)
            assert s.seed == sample_seed(request.seed, s.index)


def test_the_plain_loop_gives_the_cached_loops_tokens():
    """use_cache=False (what a model without a joinable cache gets) re-feeds every row's history
    and gives the same tokens."""
    rng = random.Random(1)
    requests = [Request(prompt=[rng.randrange(TINY_EOT) for _ in range(rng.randint(1, 10))], id=i, seed=i,
                        max_new_tokens=rng.randint(1, 15), chain=CHAINS[i % 4]) for i in range(10)]
    cached = {r.id: r.samples[0].tokens for r in Scheduler(MODEL, tokenizer=ENC, max_batch=3).run(requests)}
    plain = {r.id: r.samples[0].tokens for r in Scheduler(MODEL, tokenizer=ENC, max_batch=3,
                                                           use_cache=False).run(requests)}
    assert cached == plain


def test_the_batch_stays_full_while_requests_wait():
    requests = [Request(prompt=[1, 2, 3], id=i, seed=i, max_new_tokens=2 + (i * 7) % 13, chain="balanced",
                        stop_on_eos=False) for i in range(24)]
    scheduler = Scheduler(MODEL, tokenizer=ENC, max_batch=4)
    results = list(scheduler.run(requests))
    assert len(results) == 24
    assert all(len(r.samples[0].tokens) == r.request.max_new_tokens for r in results)
    tokens = sum(r.request.max_new_tokens for r in results)
    # every step decodes a token for each busy row: no step without rows, slots busy but the tail
    assert scheduler.busy_rows == tokens and scheduler.utilisation > 0.85


def test_finish_reasons_eos_stop_length_and_a_processors_own():
    class EndsAfterTwo(Processor):
        """Ends each row after it has chosen two tokens (a finished constraint, say)."""

        name = "ends_after_two"
        stateful = True

        def tracks_generation(self):
            return True

        def process(self, input_ids, scores, ctx):
            return scores

        def accept(self, tokens, ctx):
            ctx.finish([r for r, s in enumerate(ctx.steps.tolist()) if s + 1 >= 2], "constraint")

    greedy = Chain.from_names("greedy")
    ends = Chain([EndsAfterTwo(), greedy.selector])
    text = ENC.decode(solo(Request(prompt=[5, 6], seed=0, max_new_tokens=8, chain="greedy"))[0])
    requests = [Request(prompt=[5, 6], id="length", seed=0, max_new_tokens=8, chain=greedy),
                Request(prompt=[5, 6], id="stop", seed=0, max_new_tokens=8, chain=greedy, stop=(text[2:4],)),
                Request(prompt=[5, 6], id="constraint", seed=0, max_new_tokens=8, chain=ends)]
    results = {r.id: r.samples[0] for r in Scheduler(MODEL, tokenizer=ENC, max_batch=2).run(requests)}
    assert results["length"].finish_reason == "length" and len(results["length"].tokens) == 8
    assert results["stop"].finish_reason == "stop" and text[2:4] not in results["stop"].text
    assert results["constraint"].finish_reason == "constraint" and len(results["constraint"].tokens) == 2


def test_a_request_passing_the_context_window_runs_alone_and_is_said_once():
    long = [Request(prompt=list(range(1, 41)), id=i, seed=i, max_new_tokens=20, chain="balanced") for i in range(2)]
    short = [Request(prompt=[3, 4], id=9, seed=9, max_new_tokens=5, chain="balanced")]
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        results = {r.id: r for r in Scheduler(MODEL, tokenizer=ENC, max_batch=4).run(long + short)}
    assert len([w for w in said if issubclass(w.category, SchedulerWarning)]) == 1
    for request in long + short:
        assert results[request.id].samples[0].tokens == solo(request)[0]


def test_cancel_drops_a_requests_rows_and_the_others_finish_as_alone():
    scheduler = Scheduler(MODEL, tokenizer=ENC, max_batch=4)
    keep = scheduler.submit(Request(prompt=[7, 8], id="keep", seed=1, max_new_tokens=12, chain="creative"))
    gone = scheduler.submit(Request(prompt=[9], id="gone", seed=2, max_new_tokens=12, chain="creative", n=2))
    scheduler.step()
    scheduler.cancel(gone)
    finished = []
    while not scheduler.idle:
        finished += scheduler.step()[1]
    assert [r.id for r in finished] == ["keep"]
    assert finished[0].samples[0].tokens == solo(keep)[0]


def test_stream_events_rebuild_each_samples_text():
    scheduler = Scheduler(MODEL, tokenizer=ENC, max_batch=3)
    requests = [scheduler.submit(Request(prompt=[10 + i], id=i, seed=i, max_new_tokens=6 + i, chain="balanced", n=2))
                for i in range(3)]
    texts, results = {}, {}
    while not scheduler.idle:
        events, finished = scheduler.step()
        for e in events:
            texts[(e.request.id, e.index)] = texts.get((e.request.id, e.index), "") + e.text
        results.update({r.id: r for r in finished})
    for request in requests:
        for s in results[request.id].samples:
            assert texts[(request.id, s.index)] == s.text


def test_submit_refuses_what_cannot_run():
    scheduler = Scheduler(MODEL, max_batch=2)
    with pytest.raises(ValueError, match="prompt is empty"):
        scheduler.submit(Request(prompt=[]))
    with pytest.raises(ValueError, match="n must be"):
        scheduler.submit(Request(prompt=[1], n=0))
    with pytest.raises(ValueError, match="give the scheduler a tokenizer"):
        scheduler.submit(Request(prompt=[1], stop=("x",)))
    with pytest.raises(ValueError, match="max_batch"):
        Scheduler(MODEL, max_batch=0)


def test_a_model_without_the_cache_protocol_is_served_by_the_plain_loop():
    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = MODEL

        def forward(self, ids, attention_mask=None, position_ids=None):
            return self.inner(ids, attention_mask=attention_mask, position_ids=position_ids)

    requests = [Request(prompt=[1 + i, 2], id=i, seed=i, max_new_tokens=6, chain="greedy") for i in range(3)]
    plain = {r.id: r.samples[0].tokens for r in Scheduler(Plain(), max_batch=2, batch_invariant=False).run(requests)}
    assert plain == {r.id: solo(r)[0] for r in requests}


def test_a_request_with_its_own_chain_object_shares_the_batch_with_others():
    """Requests with different chains (here a Chain object holding a custom processor) decode in
    one batch, each chain running over its own rows."""
    class Halve(Processor):
        """Halves the scores."""

        name = "halve_for_scheduler"
        keeps_argmax = vocab_symmetric = True

        def process(self, input_ids, scores, ctx):
            return scores / 2

    chain = Chain([Halve(), *Chain.from_names("multinomial").processors])
    requests = [Request(prompt=[4, 5], id="halve", seed=3, max_new_tokens=10, chain=chain),
                Request(prompt=[4, 5], id="plain", seed=3, max_new_tokens=10, chain="balanced")]
    results = {r.id: r.samples[0].tokens for r in Scheduler(MODEL, tokenizer=ENC, max_batch=2).run(requests)}
    assert results["halve"] == solo(requests[0])[0] and results["plain"] == solo(requests[1])[0]
    assert results["halve"] != results["plain"]


def test_traced_requests_carry_a_trace_in_each_event_and_keep_their_tokens():
    scheduler = Scheduler(MODEL, tokenizer=ENC, max_batch=3)
    traced = scheduler.submit(Request(prompt=[3, 4], id="traced", seed=5, max_new_tokens=6, chain="creative",
                                      trace=3))
    plain = scheduler.submit(Request(prompt=[3, 4], id="plain", seed=5, max_new_tokens=6, chain="creative"))
    events, results = [], {}
    while not scheduler.idle:
        step_events, finished = scheduler.step()
        events += step_events
        results.update({r.id: r for r in finished})
    assert results["traced"].samples[0].tokens == results["plain"].samples[0].tokens == solo(traced)[0]
    assert all(e.trace is not None and len(e.trace.stages[0].top) == 3 for e in events if e.request is traced)
    assert all(e.trace is None for e in events if e.request is plain)


def test_a_chain_that_fails_ends_its_own_requests_with_the_error_and_the_others_go_on():
    class Fails(Processor):
        """Raises at the third step."""

        name = "fails_at_three"

        def tracks_generation(self):
            return True

        def process(self, input_ids, scores, ctx):
            if ctx.step == 2:
                raise RuntimeError("broken at step 2")
            return scores

    failing = Chain([Fails(), *Chain.from_names("greedy").processors])
    scheduler = Scheduler(MODEL, tokenizer=ENC, max_batch=4)
    ok = scheduler.submit(Request(prompt=[1, 2], id="ok", seed=1, max_new_tokens=8, chain="balanced"))
    scheduler.submit(Request(prompt=[3], id="bad", seed=2, max_new_tokens=8, chain=failing, n=2))
    events, results = [], {}
    while not scheduler.idle:
        step_events, finished = scheduler.step()
        events += step_events
        results.update({r.id: r for r in finished})
    assert [s.finish_reason for s in results["bad"].samples] == ["error", "error"]
    assert all("broken at step 2" in s.error and len(s.tokens) == 2 for s in results["bad"].samples)
    assert results["ok"].samples[0].tokens == solo(ok)[0] and results["ok"].samples[0].error is None
    assert scheduler.waiting == 0
    last = [e for e in events if e.request is ok and e.finished]
    assert last[0].kept == len(results["ok"].samples[0].tokens)


def test_a_model_without_attention_mask_serves_ragged_rows_by_padding_group():
    """No attention_mask: each group of equally padded rows is fed unpadded (the engine's way),
    so ragged requests share the batch and get their solo tokens."""
    class NoMask(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = MODEL

        def forward(self, ids):
            return self.inner(ids)

    requests = [Request(prompt=list(range(1, 2 + 3 * i)), id=i, seed=i, max_new_tokens=5, chain="greedy")
                for i in range(3)]
    plain = {r.id: r.samples[0].tokens for r in Scheduler(NoMask(), max_batch=3, batch_invariant=False).run(requests)}
    assert plain == {r.id: solo(r)[0] for r in requests}


def test_stop_token_ids_end_a_sample_after_the_token_which_is_kept():
    request = Request(prompt=[5, 6], id="x", seed=0, max_new_tokens=8, chain="greedy")
    free = solo(request)[0]
    stopping = Request(prompt=[5, 6], id="x", seed=0, max_new_tokens=8, chain="greedy", stop_token_ids=(free[2],))
    (result,) = Scheduler(MODEL, tokenizer=ENC, max_batch=2).run([stopping])
    sample = result.samples[0]
    assert sample.finish_reason == "stop" and sample.tokens == free[:free.index(free[2]) + 1]
    assert sample.text == ENC.decode(sample.tokens)


def test_requests_differing_only_in_values_share_one_chain_run_and_get_their_solo_tokens():
    chains = [{"chain": [{"temperature": t}, {"top_k": {"k": k}}, "multinomial"]} for t, k in ((0.7, 20), (1.2, 40))]
    requests = [Request(prompt=[3, 4 + i], id=i, seed=i, max_new_tokens=10, chain=chains[i % 2]) for i in range(4)]
    scheduler = Scheduler(MODEL, tokenizer=ENC, max_batch=4)
    for r in requests:
        scheduler.submit(r)
    scheduler.step()
    assert len(scheduler.core.groups) == 1 and len(scheduler.rows) == 4  # one run, each row its own values
    results = {}
    while not scheduler.idle:
        results.update({r.id: r.samples[0].tokens for r in scheduler.step()[1]})
    assert results == {r.id: solo(r)[0] for r in requests}
