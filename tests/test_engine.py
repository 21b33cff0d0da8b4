"""The decoding loop: cached == plain, padding invisible, rows leave the batch, stop reasons,
streaming, the guide's generate_text."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from samplekit import stopping
from samplekit.chain import Chain
from samplekit.engine import GenerationResult, generate, generate_stream, generate_text
from samplekit.model.gpt import GPTModel, ModelConfig
from samplekit.processor import Processor

GREEDY = Chain.from_names("greedy")


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny models gain nothing from threads (see conftest.one_torch_thread)."""


PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11], [12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23]]


def tiny_model(seed: int = 0, context_length: int = 16, vocab_size: int = 64) -> GPTModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab_size, context_length=context_length, emb_dim=32, n_heads=4,
                      n_layers=2, drop_rate=0.0)
    return GPTModel(cfg).eval()


def sampling_chain() -> Chain:
    return Chain.from_names(("temperature", {"value": 1.0}), ("top_k", {"k": 20}), "multinomial")


class Recorder(Processor):
    """Test-only logits processor: remembers each step's scores (rows by batch position)."""

    name = "recorder"

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def process(self, input_ids, scores, ctx):
        self.seen.append(scores.clone())
        return scores


class NoCache(nn.Module):
    """A plain model: ids [B, T] -> logits [B, T, V], no KV cache, no attention_mask."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, ids):
        return self.inner(ids)


class ScriptModel(nn.Module):
    """After a one-token prompt ``m``, emits ``scripts[m]`` in order (then repeats its last token).
    Records the batch size of every forward call."""

    def __init__(self, scripts: dict[int, list[int]], vocab_size: int = 64):
        super().__init__()
        self.scripts, self.vocab_size, self.batch_sizes = scripts, vocab_size, []

    def forward(self, ids):
        B, T = ids.shape
        self.batch_sizes.append(B)
        out = torch.full((B, T, self.vocab_size), -10.0)
        for b in range(B):
            script = self.scripts[int(ids[b, 0])]
            for t in range(T):
                out[b, t, script[min(t, len(script) - 1)]] = 10.0
        return out


def guide_generate(model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None, eos_id=None):
    """The usage guide's loop, verbatim in spirit: the reference for generate_text."""
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]
        with torch.no_grad():
            logits = model(idx_cond)[:, -1, :]
        if top_k is not None:
            top_logits, _ = torch.topk(logits, top_k)
            logits = torch.where(logits < top_logits[:, -1], torch.tensor(float("-inf")), logits)
        if temperature > 0.0:
            idx_next = torch.multinomial(torch.softmax(logits / temperature, dim=-1), num_samples=1)
        else:
            idx_next = torch.argmax(logits, dim=-1, keepdim=True)
        if idx_next == eos_id:
            break
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


def tokens_of(results: list[GenerationResult]) -> list[list[int]]:
    return [r.tokens for r in results]


# -- cached == plain ---------------------------------------------------------------------------------

@pytest.mark.parametrize("new_tokens", [5, 40])
def test_cached_and_plain_loops_choose_identical_greedy_tokens_even_past_the_context(new_tokens):
    model = tiny_model()
    cached = generate(model, PROMPTS, chain=GREEDY, max_new_tokens=new_tokens)
    plain = generate(model, PROMPTS, chain=GREEDY, max_new_tokens=new_tokens, use_cache=False)
    assert tokens_of(cached) == tokens_of(plain)
    assert all(len(r.tokens) == new_tokens and r.finish_reason == "length" for r in cached)


def test_a_chain_context_window_below_the_models_bounds_both_paths_alike():
    model = tiny_model()
    chain = Chain.from_names(("context_window", {"context_length": 6}), "greedy")
    cached = generate(model, PROMPTS, chain=chain, max_new_tokens=12)
    plain = generate(model, PROMPTS, chain=chain, max_new_tokens=12, use_cache=False)
    unbounded = generate(model, PROMPTS, chain=GREEDY, max_new_tokens=12)
    assert tokens_of(cached) == tokens_of(plain)
    assert tokens_of(cached) != tokens_of(unbounded)  # the window really bounded what was seen


def test_a_model_without_new_cache_runs_the_plain_loop_with_the_same_tokens():
    model = tiny_model()
    reference = generate(model, PROMPTS, chain=GREEDY, max_new_tokens=20)
    plain = generate(NoCache(model), PROMPTS, chain=GREEDY, max_new_tokens=20, context_length=16)
    assert tokens_of(plain) == tokens_of(reference)


def test_use_cache_true_on_a_model_without_new_cache_is_refused():
    with pytest.raises(ValueError, match="new_cache"):
        generate(NoCache(tiny_model()), [[1, 2]], chain=GREEDY, max_new_tokens=2, use_cache=True)


# -- padding is invisible: batch rows == solo runs -----------------------------------------------------

@pytest.mark.parametrize("use_cache", [None, False])
def test_left_padded_rows_see_the_logits_of_their_solo_runs(use_cache):
    model = tiny_model()
    batch_rec = Recorder()
    generate(model, PROMPTS, chain=Chain([batch_rec, Chain.from_names("greedy").selector]),
             max_new_tokens=8, use_cache=use_cache)
    for row, prompt in enumerate(PROMPTS):
        solo_rec = Recorder()
        generate(model, [prompt], chain=Chain([solo_rec, Chain.from_names("greedy").selector]),
                 max_new_tokens=8, use_cache=use_cache)
        for step, (batch_scores, solo_scores) in enumerate(zip(batch_rec.seen, solo_rec.seen)):
            torch.testing.assert_close(batch_scores[row], solo_scores[0], atol=1e-5, rtol=1e-5,
                                       msg=f"row {row}, step {step}")


def test_ragged_batch_rows_equal_their_solo_runs_under_greedy_and_seeded_sampling():
    model = tiny_model()
    seeds = [11, 22, 33, 44]
    for chain in (GREEDY, sampling_chain()):
        batch = generate(model, PROMPTS, chain=chain, max_new_tokens=24, seed=seeds)
        solo = [generate(model, [p], chain=chain, max_new_tokens=24, seed=[s])[0]
                for p, s in zip(PROMPTS, seeds)]
        assert tokens_of(batch) == tokens_of(solo)


def test_an_int_seed_gives_row_i_the_seed_plus_i():
    model = tiny_model()
    batch = generate(model, [[1, 2], [1, 2], [1, 2]], chain=sampling_chain(), max_new_tokens=10, seed=5)
    rows = [generate(model, [[1, 2]], chain=sampling_chain(), max_new_tokens=10, seed=5 + i)[0]
            for i in range(3)]
    assert tokens_of(batch) == tokens_of(rows)
    assert len({tuple(r.tokens) for r in batch}) > 1  # rows really drew differently


def test_a_shared_generator_reproduces_the_batch():
    model = tiny_model()
    a = generate(model, PROMPTS, chain=sampling_chain(), max_new_tokens=10,
                 generator=torch.Generator().manual_seed(3))
    b = generate(model, PROMPTS, chain=sampling_chain(), max_new_tokens=10,
                 generator=torch.Generator().manual_seed(3))
    assert tokens_of(a) == tokens_of(b)


def test_every_prompt_form_gives_the_same_tokens():
    model = tiny_model()
    as_lists = generate(model, [[1, 2, 3], [4, 5, 6]], chain=GREEDY, max_new_tokens=6)
    as_tensor = generate(model, torch.tensor([[1, 2, 3], [4, 5, 6]]), chain=GREEDY, max_new_tokens=6)
    single = generate(model, [4, 5, 6], chain=GREEDY, max_new_tokens=6)
    assert tokens_of(as_lists) == tokens_of(as_tensor)
    assert single[0].tokens == as_lists[1].tokens and single[0].prompt_length == 3


# -- rows finishing -----------------------------------------------------------------------------------

EOS = 63


def test_rows_ending_on_eos_at_different_steps_leave_the_batch_and_the_rest_continue():
    model = ScriptModel({1: [5, 6, EOS], 2: [7, 8, 9, 10, EOS], 3: [20]})
    results = generate(model, [[1], [2], [3]], chain=GREEDY, max_new_tokens=8, eos_token_ids=[EOS])
    assert [(r.tokens, r.finish_reason) for r in results] == [
        ([5, 6], "eos"), ([7, 8, 9, 10], "eos"), ([20] * 8, "length")]
    assert model.batch_sizes == [3, 3, 3, 2, 2, 1, 1, 1]  # finished rows cost nothing further


def test_stop_on_eos_false_treats_the_eos_id_as_an_ordinary_token():
    model = ScriptModel({1: [5, EOS, 6]})
    (result,) = generate(model, [[1]], chain=GREEDY, max_new_tokens=4, eos_token_ids=[EOS], stop_on_eos=False)
    assert result.tokens == [5, EOS, 6, 6] and result.finish_reason == "length"


def test_max_time_ends_every_row_with_reason_time(monkeypatch):
    clock = iter(range(1000))
    monkeypatch.setattr(stopping, "_clock", lambda: next(clock))
    results = generate(tiny_model(), PROMPTS[:2], chain=GREEDY, max_new_tokens=30, max_time=2.5)
    assert [r.finish_reason for r in results] == ["time", "time"]
    assert [len(r.tokens) for r in results] == [3, 3]  # clock: 0 at start, 1, 2, 3 after each step


def test_zero_new_tokens_returns_empty_results():
    (result,) = generate(tiny_model(), [[1, 2]], chain=GREEDY, max_new_tokens=0)
    assert result.tokens == [] and result.finish_reason == "length" and result.prompt_length == 2


def test_stream_events_carry_every_token_in_order_and_mark_each_rows_last_event():
    model = ScriptModel({1: [5, 6, EOS], 2: [7, 8, 9]})
    events = list(generate_stream(model, [[1], [2]], chain=GREEDY, max_new_tokens=5, eos_token_ids=[EOS]))
    by_row = {r: [(e.step, e.token, e.finished) for e in events if e.row == r] for r in (0, 1)}
    assert by_row[0] == [(0, 5, None), (1, 6, None), (2, EOS, "eos")]
    assert by_row[1] == [(0, 7, None), (1, 8, None), (2, 9, None), (3, 9, None), (4, 9, "length")]


# -- the chain argument and the model's state ----------------------------------------------------------

def test_chain_given_as_dict_or_preset_name_matches_the_same_chain_object():
    model = tiny_model()
    as_dict = generate(model, PROMPTS, chain={"chain": ["greedy"]}, max_new_tokens=5)
    as_preset = generate(model, PROMPTS, chain="greedy", max_new_tokens=5)
    assert tokens_of(as_dict) == tokens_of(as_preset) == tokens_of(
        generate(model, PROMPTS, chain=GREEDY, max_new_tokens=5))


def test_the_default_chain_samples_and_is_reproducible_with_a_seed():
    model = tiny_model()
    a = generate(model, PROMPTS, max_new_tokens=10, seed=1)
    b = generate(model, PROMPTS, max_new_tokens=10, seed=1)
    assert tokens_of(a) == tokens_of(b)
    assert tokens_of(a) != tokens_of(generate(model, PROMPTS, chain=GREEDY, max_new_tokens=10))


def test_weights_changed_after_a_generation_are_used_by_the_next_one():
    model = tiny_model()
    generate(model, PROMPTS, chain=GREEDY, max_new_tokens=4)  # fuses q/k/v
    with torch.no_grad():
        for block in model.trf_blocks:
            block.att.W_query.weight.mul_(3.0)
    fresh = GPTModel(model.config).eval()
    fresh.load_state_dict(model.state_dict())
    assert tokens_of(generate(model, PROMPTS, chain=GREEDY, max_new_tokens=8)) == tokens_of(
        generate(fresh, PROMPTS, chain=GREEDY, max_new_tokens=8))


def test_generation_restores_the_models_training_mode():
    model = tiny_model().train()
    generate(model, [[1, 2]], chain=GREEDY, max_new_tokens=2)
    assert model.training


# -- generate_text: the guide's function -----------------------------------------------------------------

def test_generate_text_at_temperature_zero_is_the_guides_greedy_loop():
    model = tiny_model()
    prompt = [3, 1, 4, 1, 5]
    expected = guide_generate(model, torch.tensor([prompt]), 30, 16)[0].tolist()
    assert generate_text(model, prompt, 30, context_length=16) == expected
    assert len(expected) == len(prompt) + 30


def test_generate_text_stops_before_appending_eos_like_the_guide():
    model = tiny_model()
    prompt = [3, 1, 4]
    free = generate_text(model, prompt, 10)
    eos = free[len(prompt) + 4]  # the 5th new token becomes the end-of-text id
    expected = guide_generate(model, torch.tensor([prompt]), 10, 16, eos_id=eos)[0].tolist()
    new = free[len(prompt):]
    assert generate_text(model, prompt, 10, eos_id=eos) == expected == free[:len(prompt) + new.index(eos)]
    assert len(expected) < len(free)


def test_generate_text_with_top_k_one_is_greedy_and_sampling_is_seeded():
    model = tiny_model()
    prompt = [7, 8, 9]
    assert generate_text(model, prompt, 12, temperature=1.5, top_k_tokens=1, seed=0) == generate_text(
        model, prompt, 12)
    a = generate_text(model, prompt, 12, temperature=1.0, top_k_tokens=10, seed=4)
    assert a == generate_text(model, prompt, 12, temperature=1.0, top_k_tokens=10, seed=4)
    assert len(a) == len(prompt) + 12


def test_generate_text_refuses_a_negative_temperature():
    with pytest.raises(ValueError, match="temperature"):
        generate_text(tiny_model(), [1], 3, temperature=-1.0)
