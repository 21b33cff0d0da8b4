"""A whole samplekit chain, selector included, as transformers' ``generate(custom_generate=...)``:
checked against ``generate``'s own greedy loop and against samplekit's engine on the same model."""

from __future__ import annotations

import pytest

transformers = pytest.importorskip("transformers", reason="the hf extra: pip install 'samplekit-lm[hf]'")

import torch  # noqa: E402

import samplekit  # noqa: E402
from samplekit import Chain  # noqa: E402
from samplekit.hf import custom_generate, load_model  # noqa: E402
from tests.hf_fixtures import model_folder  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
VOCAB, NEW = 320, 10
PROMPTS = [[5, 17, 260, 3, 99, 42, 7], [11, 12], [300, 1, 2, 3]]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf-custom-generate")
    return {arch: load_model(model_folder(root, arch, vocab=VOCAB, seed=i))
            for i, arch in enumerate(("gpt2", "llama"))}


def left_padded(prompts):
    P = max(map(len, prompts))
    ids = torch.tensor([[0] * (P - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def generate(model, chain=None, prompts=PROMPTS, **options):
    """New tokens of ``model.generate`` (greedy, no end-of-text), with ``chain`` as custom_generate."""
    ids, mask = left_padded(prompts)
    if chain is not None:
        options["custom_generate"] = chain if callable(chain) else custom_generate(chain, seed=0)
    options = {"do_sample": False, "max_new_tokens": NEW, "min_new_tokens": NEW, "pad_token_id": 0,
               "eos_token_id": None, **options}
    out = model.model.generate(ids, attention_mask=mask, **options)
    return out[:, ids.shape[1]:].tolist()


@pytest.mark.parametrize("use_cache", [True, False], ids=["cached", "uncached"])
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_a_greedy_chain_as_custom_generate_gives_generates_own_greedy_tokens(models, arch, use_cache):
    model = models[arch]
    assert generate(model, Chain.from_names("greedy"), use_cache=use_cache) == generate(model)


@pytest.mark.parametrize("spec", [
    ["mirostat"],
    [("temperature", {"value": 0.9}), ("top_k", {"k": 20}), ("top_p", {"p": 0.9}), "multinomial"],
    [("frequency_penalty", {"penalty": 0.8}), ("min_p", {"p": 0.05}), "multinomial"],
], ids=["mirostat", "temperature-top_k-top_p", "frequency_penalty-min_p"])
def test_a_sampling_chain_inside_generate_gives_the_engines_tokens_for_the_same_seeds(models, spec):
    """The chain's own selector (mirostat included) chooses inside generate: per-row seeds
    0, 1, 2 give the tokens samplekit's engine gives on the same model with the same seeds."""
    model = models["llama"]
    if spec == ["mirostat"]:
        pytest.importorskip("samplekit_mirostat", reason="the samplekit-mirostat plugin is not installed")
    chain = Chain.from_names(*spec)
    ours = [r.tokens for r in samplekit.generate(model, PROMPTS, chain=chain, max_new_tokens=NEW, seed=[0, 1, 2],
                                                 stop_on_eos=False)]
    assert generate(model, chain) == ours
    assert len({tuple(row) for row in ours}) == len(PROMPTS)


def test_stateful_processors_keep_their_state_across_generates_steps(models):
    """min_new_tokens inside the custom loop: with end-of-text made the likeliest token, each row
    ends exactly after n tokens and is then filled with the pad id, as generate does."""
    model, eos, n = models["gpt2"], 7, 4
    chain = Chain.from_names(("logit_bias", {"bias": {eos: 50.0}}), ("min_new_tokens", {"n": n}), "greedy")
    fn = custom_generate(chain)
    out = generate(model, fn, eos_token_id=eos, min_new_tokens=0, pad_token_id=1)
    for row in out:
        assert eos not in row[:n] and row[n] == eos, row
        assert set(row[n + 1:]) <= {1}, row
    assert fn.last_run.ctx.steps.tolist() == [n + 1] * len(PROMPTS)


def test_generates_own_processors_run_before_the_chain(models):
    """generate's repetition_penalty (its processor list) and the chain's greedy selector: the
    same tokens as generate's greedy loop with that penalty."""
    model = models["llama"]
    assert generate(model, Chain.from_names("greedy"), repetition_penalty=1.8) == generate(model, repetition_penalty=1.8)


def test_a_logits_only_chain_is_refused_with_the_reason():
    chain = Chain.from_names("top_k", "greedy").logits_stage()
    with pytest.raises(ValueError, match="no selector"):
        custom_generate(chain)
