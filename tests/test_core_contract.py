"""The core's contract: unseeded runs reproducible from torch's global seed, weights re-prepared when
replaced, logits-only chains, Chain.apply's random source, rows joining a ChainRun."""

from __future__ import annotations

import pytest
import torch

from samplekit import Chain, ConfigError, InteropError
from samplekit.engine import generate, generate_text
from samplekit.model.gpt import GPTModel, ModelConfig
from samplekit.processor import RowRandom


def tiny_model(seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(ModelConfig(vocab_size=50, context_length=32, emb_dim=32, n_heads=4, n_layers=2,
                                drop_rate=0.0)).eval()


def test_the_usage_guides_recipe_reproduces_generate_text():
    """``torch.manual_seed(42)`` then ``generate_text`` gives the same tokens every time, and the
    caller's global stream continues deterministically (it is advanced, never reseeded)."""
    model = tiny_model()
    runs = []
    for _ in range(2):
        torch.manual_seed(42)
        tokens = generate_text(model, [1, 2, 3], 20, temperature=1.0, top_k_tokens=10)
        runs.append((tokens, torch.rand(3).tolist()))
    assert runs[0] == runs[1]
    torch.manual_seed(43)
    assert generate_text(model, [1, 2, 3], 20, temperature=1.0, top_k_tokens=10) != runs[0][0]


def test_an_unseeded_generate_draws_its_seeds_from_the_global_generator_once():
    model = tiny_model()
    torch.manual_seed(7)
    first = [r.tokens for r in generate(model, [[1, 2], [3]], chain="creative", max_new_tokens=12)]
    after_first = torch.rand(2)
    torch.manual_seed(7)
    again = [r.tokens for r in generate(model, [[1, 2], [3]], chain="creative", max_new_tokens=12)]
    assert first == again and torch.equal(after_first, torch.rand(2))
    torch.manual_seed(7)
    torch.randint(0, 2**62, (1,))  # exactly one draw: the run's base seed
    assert torch.equal(torch.rand(2), after_first)


def test_a_replaced_weight_is_prepared_again_before_the_next_generation():
    """prepare_for_inference fuses q/k/v; a weight replaced by a new Parameter between two
    generations must reach the fused copy (the engine compares each parameter's identity)."""
    model = tiny_model()
    before = generate(model, [[1, 2, 3]], chain="greedy", max_new_tokens=8)[0].tokens
    att = model.trf_blocks[0].att
    att.W_query.weight = torch.nn.Parameter(torch.randn_like(att.W_query.weight) * 3)
    after = generate(model, [[1, 2, 3]], chain="greedy", max_new_tokens=8)[0].tokens
    fresh = tiny_model()
    fresh.load_state_dict(model.state_dict())
    assert after == generate(fresh, [[1, 2, 3]], chain="greedy", max_new_tokens=8)[0].tokens
    assert after != before


def test_a_logits_only_chain_applies_its_processors_and_cannot_select():
    full = Chain.from_names(("temperature", {"value": 0.5}), ("top_k", {"k": 2}), "multinomial")
    stage = full.logits_stage()
    scores = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert stage.logits_only and stage.selector is None and stage.processors == full.logits
    assert torch.equal(stage.apply(None, scores), torch.tensor([[float("-inf"), 6.0, 4.0, float("-inf")]]))
    with pytest.raises(InteropError, match="logits-only"):
        stage.select(None, scores)
    with pytest.raises(ConfigError, match="logits-only chain has no selector"):
        Chain(full.processors, logits_only=True)
    with pytest.raises(ConfigError, match="no selector"):
        Chain(full.logits)
    with pytest.raises(ValueError, match="logits-only"):
        generate(tiny_model(), [[1]], chain=stage, max_new_tokens=2)


def test_apply_takes_a_seed_or_a_generator_for_random_processors():
    from samplekit.plugins import get_registry

    if "xtc" not in get_registry().names():
        pytest.skip("the samplekit-xtc plugin is not installed")
    chain = Chain.from_names(("xtc", {"threshold": 0.1, "probability": 0.5}), "multinomial")
    scores = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]])).repeat(16, 1)
    a, b = chain.apply(None, scores, seed=3), chain.apply(None, scores, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, chain.apply(None, scores, seed=4))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(chain.apply(None, scores, generator=g1), chain.apply(None, scores, generator=g2))


def test_rows_joining_a_run_draw_their_own_streams():
    """A row that joins at step 3 draws exactly the numbers its seed gives alone, whatever the
    running rows have drawn (numbers drawn ahead are lined up, none skipped)."""
    random = RowRandom.from_seeds([1, 2])
    for n in (1, 1, 70):
        random.uniform(n)
    random.join(RowRandom.from_seeds([9]))
    random.keep_rows([1, 2])
    got = torch.cat([random.uniform(1) for _ in range(80)], dim=1)
    alone = torch.rand(80, generator=torch.Generator().manual_seed(9))
    assert got[1].tolist() == alone.tolist()


def test_add_rows_gives_joining_rows_their_own_steps_and_prompt_lengths():
    run = Chain.from_names(("min_new_tokens", {"n": 2, "eos_token_ids": [0]}), "greedy").start(
        1, seeds=[0], prompt_lengths=torch.tensor([3]))
    scores = torch.tensor([[5.0, 1.0]])
    assert run.select(None, scores).tolist() == [1]
    assert run.select(None, scores).tolist() == [1]
    run.add_rows(1, seeds=[1], prompt_lengths=torch.tensor([7]))
    assert run.ctx.steps.tolist() == [2, 0] and run.ctx.prompt_lengths.tolist() == [3, 7]
    assert run.select(None, scores.repeat(2, 1)).tolist() == [0, 1]  # the old row may end, the new one not
    run.keep_rows(torch.tensor([1]))
    assert run.ctx.steps.tolist() == [1] and run.ctx.fewest_steps == 1


def test_a_chain_longer_than_the_limit_is_refused_with_the_count():
    from samplekit.plugins import get_registry

    many = [get_registry().create("temperature") for _ in range(300)] + [get_registry().create("greedy")]
    with pytest.raises(ConfigError, match="301 processors; at most 256"):
        Chain(many)
