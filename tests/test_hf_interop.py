"""A samplekit chain inside transformers' own ``generate``: the logits stage as a logits processor
that keeps its state across generate's steps."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the bench extra (transformers) is not installed")

from samplekit import Chain  # noqa: E402
from samplekit.hf import logits_processor  # noqa: E402

EOS = 3


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                     eos_token_id=EOS, bos_token_id=EOS, pad_token_id=0)
    return transformers.GPT2LMHeadModel(config).eval()


def hf_generate(model, ids, **options):
    return model.generate(ids, do_sample=False, max_new_tokens=12, eos_token_id=EOS, pad_token_id=0,
                          **options)[:, ids.shape[1]:].tolist()


def adapted(chain: Chain):
    return transformers.LogitsProcessorList([logits_processor(chain)])


@pytest.mark.parametrize("ours, theirs", [
    ([("repetition_penalty", {"penalty": 1.5})], {"repetition_penalty": 1.5}),
    ([("no_repeat_ngram", {"size": 2})], {"no_repeat_ngram_size": 2}),
    ([("logit_bias", {"bias": {7: 5.0, 9: float("-inf")}})], {"sequence_bias": {(7,): 5.0, (9,): float("-inf")}}),
    ([("banned_tokens", {"tokens": [11, 12]})], {"bad_words_ids": [[11], [12]]}),
], ids=["repetition_penalty", "no_repeat_ngram", "logit_bias", "banned_tokens"])
def test_a_namesake_inside_generate_gives_transformers_greedy_tokens(model, ours, theirs):
    ids = torch.tensor([[5, 6, 7, 5, 6], [8, 9, 10, 11, 12]])
    chain = Chain.from_names(*ours, "greedy")
    assert hf_generate(model, ids, logits_processor=adapted(chain)) == hf_generate(model, ids, **theirs)


def test_min_new_tokens_lifts_its_ban_after_n_tokens_inside_generate(model):
    """With end-of-text made the likeliest token, generation ends right after n tokens: the ban
    counted generate's steps (a bare call would ban it forever or never)."""
    ids = torch.tensor([[5, 6, 7]])
    chain = Chain.from_names(("logit_bias", {"bias": {EOS: 50.0}}), ("min_new_tokens", {"n": 4, "eos_token_ids": [EOS]}),
                             "greedy")
    (out,) = hf_generate(model, ids, logits_processor=adapted(chain))
    assert out[:5].count(EOS) == 1 and out[4] == EOS and EOS not in out[:4]


def test_frequency_penalty_counts_the_tokens_generated_inside_generate(model):
    """A large frequency penalty over the generated tokens: no token is chosen twice, which needs
    the count kept across steps (a bare call of scope 'generated' is refused)."""
    ids = torch.tensor([[5, 6, 7]])
    chain = Chain.from_names(("frequency_penalty", {"penalty": 2.0}), ("logit_bias", {"bias": {EOS: float("-inf")}}),
                             "greedy")
    (out,) = hf_generate(model, ids, logits_processor=adapted(chain))
    assert len(set(out)) == len(out) == 12


def test_a_new_prompt_starts_a_new_run(model):
    chain = Chain.from_names(("min_new_tokens", {"n": 3, "eos_token_ids": [EOS]}), "greedy")
    processor = logits_processor(chain)
    scores = torch.zeros(1, 100)
    processor(torch.tensor([[1, 2]]), scores)
    processor(torch.tensor([[1, 2, 4]]), scores)
    assert processor.run.ctx.steps.tolist() == [1]
    processor(torch.tensor([[9, 9, 9, 9, 9]]), scores)  # not the previous input plus one: a new generation
    assert processor.run.ctx.steps.tolist() == [0]


@pytest.mark.parametrize("ours, theirs", [
    ([("temperature", {"value": 0.7})], {"temperature": 0.7}),
    ([("top_k", {"k": 5})], {"top_k": 5}),
    ([("top_p", {"p": 0.8})], {"top_p": 0.8}),
    ([("min_p", {"p": 0.1})], {"min_p": 0.1}),
    ([("typical_p", {"mass": 0.9})], {"typical_p": 0.9}),
    ([("epsilon_cutoff", {"epsilon": 0.01})], {"epsilon_cutoff": 0.01}),
    ([("eta_cutoff", {"epsilon": 0.01})], {"eta_cutoff": 0.01}),
], ids=lambda v: v[0][0] if isinstance(v, list) else "")
def test_a_warper_inside_generate_samples_what_transformers_own_warper_samples(model, ours, theirs):
    """Sampling (do_sample=True) from the same seed: the adapter's warper in place of
    transformers' own gives the same tokens (generate's defaults are switched off on our side)."""
    ids = torch.tensor([[5, 6, 7, 5, 6], [8, 9, 10, 11, 12]])
    neutral = {"temperature": 1.0, "top_k": 0, "top_p": 1.0}

    def sample(**options):
        torch.manual_seed(0)
        return model.generate(ids, do_sample=True, max_new_tokens=12, eos_token_id=EOS, pad_token_id=0,
                              **options)[:, ids.shape[1]:].tolist()

    chain = Chain.from_names(*ours, "multinomial")
    assert sample(logits_processor=adapted(chain), **neutral) == sample(**{**neutral, **theirs})


def test_min_new_tokens_inside_generate_matches_transformers_min_new_tokens(model):
    ids = torch.tensor([[5, 6, 7]])
    bias = ("logit_bias", {"bias": {EOS: 50.0}})
    ours = Chain.from_names(bias, ("min_new_tokens", {"n": 5, "eos_token_ids": [EOS]}), "greedy")
    theirs = Chain.from_names(bias, "greedy")
    assert hf_generate(model, ids, logits_processor=adapted(ours)) == \
        hf_generate(model, ids, logits_processor=adapted(theirs), min_new_tokens=5)
