"""Tracing: each stage's numbers are those of running the chain's processors by hand; tracing does
not change the tokens; traces round-trip through JSON."""

from __future__ import annotations

import json
import math

import torch

from samplekit import Chain, generate
from samplekit.model.gpt import GPTModel, ModelConfig
from samplekit.processor import default_context
from samplekit.trace import StepTrace

torch.manual_seed(0)
MODEL = GPTModel(ModelConfig(vocab_size=64, context_length=32, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)).eval()
CHAIN = {"chain": [{"repetition_penalty": {"penalty": 1.3}}, {"temperature": 0.7}, {"top_k": 10},
                   {"top_p": {"p": 0.8}}, "multinomial"]}


def test_tracing_does_not_change_the_tokens():
    prompts = [[1, 2, 3], [4, 5]]
    plain = generate(MODEL, prompts, chain=CHAIN, max_new_tokens=12, seed=[3, 4])
    traced = generate(MODEL, prompts, chain=CHAIN, max_new_tokens=12, seed=[3, 4], trace=5)
    assert [r.tokens for r in plain] == [r.tokens for r in traced]
    for r in traced:
        assert [t.step for t in r.trace] == list(range(12)) and [t.token for t in r.trace] == r.tokens


def test_each_stage_agrees_with_the_processors_run_by_hand():
    """Support, entropy, removed mass and top candidates after each processor, the chosen token's raw
    probability and rank: recomputed from the processors applied one by one to the model's logits."""
    prompt = [7, 8, 9]
    (result,) = generate(MODEL, [prompt], chain=CHAIN, max_new_tokens=1, seed=[11], trace=4)
    (step,) = result.trace
    with torch.inference_mode():
        logits = MODEL(torch.tensor([prompt]))[:, -1]
    from samplekit.config import chain_from_config

    chain = chain_from_config(CHAIN)
    ctx = default_context(1)
    expected, before = [("model", logits, 0.0)], torch.softmax(logits, -1)
    scores = logits
    for p in chain.logits:
        ctx.state = p.start(1, ctx)
        scores = p.process(torch.tensor([prompt]), scores, ctx)
        expected.append((p.name, scores, float((before * torch.isneginf(scores)).sum())))
        before = torch.softmax(scores, -1)
    assert [s.name for s in step.stages] == [name for name, _, _ in expected]
    for stage, (name, scores, removed) in zip(step.stages, expected):
        probs = torch.softmax(scores.float(), -1)[0]
        finite = torch.isfinite(scores[0])
        assert stage.support == int(finite.sum())
        assert math.isclose(stage.entropy, float(-(probs[finite] * probs[finite].log()).sum()), abs_tol=1e-5)
        assert math.isclose(stage.removed, removed, abs_tol=1e-6)
        top = probs.topk(4)
        assert [int(t) for t, _ in stage.top] == top.indices.tolist()
        assert all(math.isclose(p, q, abs_tol=1e-6) for (_, p), q in zip(stage.top, top.values.tolist()))
    raw = torch.softmax(logits, -1)[0]
    assert math.isclose(step.token_prob, float(raw[step.token]), abs_tol=1e-7)
    assert step.token_rank == int((raw > raw[step.token]).sum())


def test_a_trace_round_trips_through_json():
    (result,) = generate(MODEL, [[1]], chain="creative", max_new_tokens=3, seed=[0], trace=True)
    for step in result.trace:
        assert StepTrace.from_dict(json.loads(json.dumps(step.to_dict()))) == step
        assert len(step.stages[0].top) == 8  # trace=True keeps the 8 most probable candidates


def test_a_run_without_tracing_records_nothing():
    run = Chain.from_names("greedy").start(1)
    run.select(None, torch.tensor([[0.0, 1.0]]))
    assert run.tracer is None and run.last_trace is None
