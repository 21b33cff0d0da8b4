"""Record and replay: a replayed chain measures exactly what a live run on the full logits does.

The live reference below recomputes everything from the model's full logits at the recorded
positions, with the replay's conventions (the position at record index i runs with seed
``seed + i``, at step ``target - prompt_length``, after its document's earlier tokens).
"""

from __future__ import annotations

import math

import pytest
import torch

from samplekit import Chain
from samplekit.lab import record as rec
from samplekit.lab.chains import NamedChain
from samplekit.lab.errors import RecordError, ReplayError
from samplekit.lab.replay import rebuild, replay
from samplekit.lab.scoring import teacher_forced, token_nlls, windows

SEED = 3
CHAINS = {
    "creative": ["creative"],
    "greedy": ["greedy"],  # the shortcut: the recorded values alone
    "penalized_greedy": [("repetition_penalty", {"penalty": 1.5}), "greedy"],  # rebuilt rows
    "nucleus": [("top_p", {"p": 0.6}), "multinomial"],
    "tempered_top_k_nucleus": [("temperature", {"value": 0.7}), ("top_k", {"k": 100}),
                               ("top_p", {"p": 0.9}), "multinomial"],
    "min_p": [("min_p", {"p": 0.2}), "multinomial"],
    "penalty": [("repetition_penalty", {"penalty": 1.3}), ("frequency_penalty", {"penalty": 0.5}),
                ("no_repeat_ngram", {"size": 2}), ("top_k", {"k": 40}), "multinomial"],
    "xtc": [("top_k", {"k": 30}), ("xtc", {"threshold": 0.05, "probability": 0.5}), "multinomial"],
}


def make_chain(spec) -> Chain:
    if spec == ["creative"] or spec == ["greedy"]:
        from samplekit.config import load_config

        return load_config(spec[0]).build_chain()
    return Chain.from_names(*spec)


@pytest.fixture(scope="module")
def demo():
    from samplekit.lab.corpus import corpus_prompts
    from samplekit.model.checkpoint import load_checkpoint
    from samplekit.model.tokenizer import tokenizer_for_checkpoint

    torch.set_num_threads(1)
    model, info = load_checkpoint("demo", "cpu")
    enc = tokenizer_for_checkpoint(info)
    prompts = corpus_prompts("demo-heldout")
    docs, prompt_lengths = rec.pair_documents(enc, prompts.prompts[:6], prompts.continuations[:6], 24)
    live = {}
    for d, t, logits in teacher_forced(model, docs, prompt_lengths):
        for i, (dd, tt) in enumerate(zip(d, t)):
            live[dd, tt] = logits[i]
    return model, docs, prompt_lengths, live


@pytest.fixture(scope="module")
def recorded(demo):
    model, docs, prompt_lengths, _ = demo
    return rec.record_logits(model, docs, prompt_lengths, top_n=512, meta={"context_length": 256})


def live_measures(record, live, docs, chain: Chain) -> list[float]:
    """Means of coverage, support, entropy and p(human) from the full logits, step by step."""
    totals = [0.0] * 4
    keys = sorted({(int(s), int(t)) for s, t in zip(record.steps, record.target)})
    for step, target in keys:
        rows = [i for i in range(record.positions)
                if int(record.steps[i]) == step and int(record.target[i]) == target]
        d = [int(record.doc[i]) for i in rows]
        history = torch.tensor([docs[j][:target] for j in d])
        human = torch.tensor([docs[j][target] for j in d])
        full = torch.stack([live[j, target] for j in d])
        run = chain.start(len(rows), seeds=[SEED + i for i in rows],
                          prompt_lengths=record.prompt_lengths[torch.tensor(d)], context_length=256)
        run.ctx.step = step
        if chain.selector.random:
            out = run.process(history, full).double()
            logp = out.log_softmax(-1)
            p = logp.exp()
            kept = out.isfinite()
            values = [kept.gather(-1, human[:, None]).double().squeeze(-1), kept.sum(-1).double(),
                      -(p * logp).where(kept, 0.0).sum(-1), p.gather(-1, human[:, None]).squeeze(-1)]
        else:
            hit = (run.select(history, full) == human).double()
            values = [hit, torch.ones_like(hit), torch.zeros_like(hit), hit]
        for k, v in enumerate(values):
            totals[k] += float(v.sum())
    return [t / record.positions for t in totals]


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_replayed_chain_equals_a_live_run_on_the_same_positions(demo, recorded, name):
    if name == "xtc":
        pytest.importorskip("samplekit_xtc", reason="the samplekit-xtc plugin is not installed")
    _, docs, _, live = demo
    chain = make_chain(CHAINS[name])
    (_, row) = replay(recorded, [NamedChain(name, chain, name)], seed=SEED)
    coverage, support, entropy, prob = live_measures(recorded, live, docs, chain)
    assert row.coverage == coverage and row.support == support
    assert row.entropy == pytest.approx(entropy, abs=1e-12) and row.human_prob == pytest.approx(prob, abs=1e-12)
    assert 0 < row.coverage < 1 and 1 <= row.support < 512


def test_whole_rows_replay_any_chain_exactly(demo):
    model, docs, prompt_lengths, live = demo
    whole = rec.record_logits(model, docs[:2], prompt_lengths[:2], top_n=10_000, meta={"context_length": 256})
    assert whole.top_n == whole.vocab_size == 4096
    chain = Chain.from_names(("temperature", {"value": 1.3}), "multinomial")  # keeps every token
    (model_row, row) = replay(whole, [NamedChain("pure", chain, "pure")], seed=SEED)
    assert row.support == 4096 and row.coverage == 1.0
    assert [row.entropy, row.human_prob] == pytest.approx(live_measures(whole, live, docs, chain)[2:], abs=1e-12)
    tempered = Chain.from_names(("temperature", {"value": 0.7}), ("top_p", {"p": 0.5}), "multinomial")
    (_, row) = replay(whole, [NamedChain("tempered", tempered, "tempered")], seed=SEED)
    assert [row.coverage, row.support] == live_measures(whole, live, docs, tempered)[:2]
    # at temperature 1 a chain's distribution is the model's own
    plain = Chain.from_names("multinomial")
    (_, same) = replay(whole, [NamedChain("plain", plain, "plain")], seed=SEED)
    assert same.entropy == pytest.approx(model_row.entropy, abs=1e-6)
    assert same.human_prob == pytest.approx(model_row.human_prob, abs=1e-6)


def test_a_chain_keeping_tokens_beyond_the_top_n_is_refused_with_chain_and_position(recorded):
    chain = Chain.from_names(("temperature", {"value": 1.0}), "multinomial")
    with pytest.raises(ReplayError, match=r"chain 'pure' cannot be replayed exactly at position \d+ "
                                          r"\(document \d+, step \d+.*--top"):
        replay(recorded, [NamedChain("pure", chain, "pure")])


def test_a_chain_whose_result_depends_on_the_unrecorded_tail_is_refused(recorded):
    # after temperature 0.7 the tail's share of the mass is only bracketed, and top-p's cut moves
    chain = Chain.from_names(("temperature", {"value": 0.7}), ("top_p", {"p": 0.5}), "multinomial")
    with pytest.raises(ReplayError, match="depends on the logits beyond the recorded top 512"):
        replay(recorded, [NamedChain("tempered", chain, "tempered")])


def test_rebuilt_rows_keep_the_top_n_and_the_tail_mass():
    torch.manual_seed(0)
    logits = torch.randn(3, 50) * 3
    values, ids = logits.topk(8)
    lse = logits.double().logsumexp(-1)
    seen = torch.zeros(3, 50, dtype=torch.bool)
    seen[:, :10] = True
    fills = rebuild(values, ids, lse, 50, seen)
    assert len(fills) == 3  # spread, packed unseen first, packed seen first
    for full in fills:
        assert torch.equal(full.gather(-1, ids), values)
        assert torch.allclose(full.double().logsumexp(-1), lse, atol=1e-5)
        tail = torch.ones_like(seen).scatter(-1, ids, False)
        assert (full.where(tail, -math.inf) <= values[:, -1:]).all()


def test_record_file_round_trips_and_other_versions_are_refused(recorded, tmp_path):
    path = rec.save_record(recorded, tmp_path / "run.logits")
    back = rec.load_record(path)
    for name in rec.TENSORS:
        assert torch.equal(getattr(back, name), getattr(recorded, name)), name
    assert back.top_ids.dtype == torch.int16 and back.meta == recorded.meta
    data = torch.load(path, weights_only=True)
    data["version"] = 2
    torch.save(data, tmp_path / "v2.logits")
    with pytest.raises(RecordError, match="version 2.*reads version 1"):
        rec.load_record(tmp_path / "v2.logits")
    (tmp_path / "junk.logits").write_text("not a record")
    with pytest.raises(RecordError, match="not a samplekit logits record"):
        rec.load_record(tmp_path / "junk.logits")


def test_record_orders_positions_by_step_and_keeps_the_human_token(recorded, demo):
    _, docs, prompt_lengths, _ = demo
    steps = recorded.steps.tolist()
    assert steps == sorted(steps) and recorded.positions == sum(len(d) - p for d, p in zip(docs, prompt_lengths))
    assert recorded.human.tolist() == [docs[d][t] for d, t in zip(recorded.doc.tolist(), recorded.target.tolist())]


def test_windows_cover_every_target_once_with_enough_context():
    for length, first, context in ((10, 3, 16), (100, 1, 16), (57, 20, 8), (300, 32, 256)):
        seen = []
        for a, lo, hi in windows(length, first, context):
            assert hi - 1 - a <= context and a <= lo - 1
            assert lo - a >= min(lo, context - context // 2 + 1)
            seen += range(lo, hi)
        assert seen == list(range(max(first, 1), length))


def test_token_nlls_match_a_plain_forward_pass(demo):
    model, docs, prompt_lengths, _ = demo
    prompts = [d[:p] for d, p in zip(docs[:3], prompt_lengths)]
    conts = [d[p:] for d, p in zip(docs[:3], prompt_lengths)]
    got = token_nlls(model, prompts, conts, batch_size=2)
    for doc, p, nll in zip(docs[:3], prompt_lengths, got):
        with torch.inference_mode():
            logp = model(torch.tensor([doc[:-1]]))[0].double().log_softmax(-1)  # (T, V)
        expected = [-float(logp[t - 1, doc[t]]) for t in range(p, len(doc))]
        assert nll == pytest.approx(expected, abs=1e-4)


def test_text_documents_make_every_token_after_the_first_prompt_a_target_once():
    docs, prompts = rec.text_documents(list(range(1000)), context=64, prompt_tokens=8)
    targets = [tok for d, p in zip(docs, prompts) for tok in d[p:]]
    assert targets == list(range(8, 1000)) and all(len(d) <= 65 for d in docs)


def test_the_shortcut_applies_only_where_traits_prove_it_exact():
    from samplekit.lab.replay import compact_plan
    from samplekit.processors.top_k import TopK

    assert compact_plan(make_chain(["creative"]), 4096, 512)[1] == 100
    assert compact_plan(make_chain(["creative"]), 4096, 100) is None  # k must be below N
    assert compact_plan(make_chain(["greedy"]), 4096, 512)[1] == 1
    assert compact_plan(make_chain(CHAINS["penalty"]), 4096, 512) is None  # a penalty before top-k
    assert compact_plan(make_chain(CHAINS["nucleus"]), 4096, 512) is None  # no top-k

    class Shifted(TopK):  # overrides process without declaring keeps_top again: not trusted
        name = "shifted_top_k"

        def process(self, input_ids, scores, ctx):
            return super().process(input_ids, scores + 1.0, ctx)

    assert compact_plan(Chain([Shifted(k=5), make_chain(["greedy"]).selector]), 4096, 512) is None


def test_a_logits_only_chain_replays_as_its_sampling_chain(recorded):
    chain = make_chain(CHAINS["min_p"])
    if not hasattr(chain, "logits_stage"):
        pytest.skip("this samplekit has no logits-only chains")
    (_, full), (_, logits_only) = (replay(recorded, [NamedChain("c", c, "c")], seed=SEED)
                                   for c in (chain, chain.logits_stage()))
    assert (logits_only.coverage, logits_only.support, logits_only.entropy) == \
        (full.coverage, full.support, full.entropy)
