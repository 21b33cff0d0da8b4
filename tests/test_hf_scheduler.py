"""The continuous-batching scheduler on Hugging Face models: on transformers' own cache, rows join a
running batch (their keys and values appended, right-aligned) and leave it; each request gets the
tokens it gets alone through the engine."""

from __future__ import annotations

import pytest

transformers = pytest.importorskip("transformers", reason="the hf extra: pip install 'samplekit-lm[hf]'")

import torch  # noqa: E402

from samplekit.engine import generate  # noqa: E402
from samplekit.hf import load_model  # noqa: E402
from samplekit.hf.model import HFModel, JoinableHFCache  # noqa: E402
from samplekit.requests import Request, sample_seed  # noqa: E402
from samplekit.scheduler import Scheduler  # noqa: E402
from tests.hf_fixtures import model_folder  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
VOCAB = 320
PROMPTS = [[5, 17, 260, 3, 99, 42, 7], [11, 12], [300, 1, 2, 3], [64], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0], [40, 41]]
LIMITS = [12, 5, 9, 14, 3, 10]  # rows end at different steps: others join the running batch


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf-scheduler")
    return {arch: load_model(model_folder(root, arch, vocab=VOCAB, seed=i))
            for i, arch in enumerate(("gpt2", "llama"))}


def requests(chain: str):
    return [Request(prompt=p, id=i, seed=100 + i, max_new_tokens=n, chain=chain)
            for i, (p, n) in enumerate(zip(PROMPTS, LIMITS))]


def alone(model, request: Request) -> list[int]:
    (out,) = generate(model, [request.prompt], chain=request.chain, seed=[sample_seed(request.seed, 0)],
                      max_new_tokens=request.max_new_tokens, stop_on_eos=False)
    return out.tokens


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_greedy_requests_through_the_cached_scheduler_get_their_solo_tokens(models, arch):
    model = models[arch]
    sched = Scheduler(model, max_batch=3)
    assert sched.cached, "the scheduler fell back to the plain loop"
    done = {r.id: r.samples[0].tokens for r in sched.run(requests("greedy"))}
    assert [done[i] for i in range(len(PROMPTS))] == [alone(model, r) for r in requests("greedy")]
    assert sched.utilisation > 0.5


def test_sampled_requests_agree_with_their_solo_runs_but_for_rounding(models):
    """Seeded sampling: transformers' padded forward is not bit-identical to the solo one, so a
    row may differ where a draw lands within rounding of a boundary (none did when written)."""
    model = models["llama"]
    sched = Scheduler(model, max_batch=3)
    done = {r.id: r.samples[0].tokens for r in sched.run(requests("creative"))}
    solo = [alone(model, r) for r in requests("creative")]
    assert sum(done[i] != solo[i] for i in range(len(PROMPTS))) <= 1
    assert len({tuple(t) for t in solo}) == len(PROMPTS)


def test_join_pads_the_shorter_side_in_front_and_compact_drops_common_padding(models):
    model = models["llama"]
    with torch.inference_mode():
        running, joining = model.new_cache(1), model.new_cache(2)
        model(torch.tensor([[1, 2, 3, 4, 5]]), cache=running)
        model(torch.tensor([[7, 8], [9, 10]]), cache=joining)
        assert isinstance(running, JoinableHFCache)
        before, after = running.join(joining, rows=[1, 1, 0])
    assert (before, after, running.batch, running.length) == (0, 3, 4, 5)
    keys = running.inner.layers[0].keys
    assert keys.shape[0] == 4 and keys.shape[2] == 5
    assert bool((keys[1:, :, :3] == 0).all())
    assert torch.equal(keys[1, :, 3:], joining.inner.layers[0].keys[1]) and torch.equal(keys[1], keys[2])
    running.select_rows(torch.tensor([1, 3]))
    running.compact(3)
    assert running.length == 2 and running.inner.layers[0].keys.shape[:3] == (2, keys.shape[1], 2)


def test_a_sliding_window_model_runs_the_plain_loop_with_the_same_tokens():
    config = transformers.MistralConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, intermediate_size=64, sliding_window=6,
                                        max_position_embeddings=64, bos_token_id=None, eos_token_id=None)
    torch.manual_seed(0)
    model = HFModel(transformers.MistralForCausalLM(config).eval())
    sched = Scheduler(model, max_batch=2)
    assert not sched.cached and not isinstance(model.new_cache(1), JoinableHFCache)
    done = {r.id: r.samples[0].tokens for r in sched.run(requests("greedy")[:3])}
    assert [done[i] for i in range(3)] == [alone(model, r) for r in requests("greedy")[:3]]
