"""The same contracts on a CUDA device; skipped where there is none (CI has none).

Run on a GPU machine with ``python -m pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import pytest
import torch

from samplekit import Chain
from samplekit.engine import generate
from samplekit.model.gpt import GPTModel, ModelConfig
from samplekit.plugins import get_registry
from samplekit.processor import Stage, default_context

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# Parameters that make a processor do something on a random batch (defaults are no-ops for some).
EXAMPLE_PARAMS = {
    "temperature": {"value": 0.7},
    "top_k": {"k": 5},
    "frequency_penalty": {"penalty": 0.5},
    "presence_penalty": {"penalty": 0.5},
    "dynamic_temperature": {"temperature": 0.8, "range": 0.3},
    "logit_bias": {"bias": {3: 2.0}},
    "banned_tokens": {"tokens": [1, 2]},
    "min_new_tokens": {"n": 2, "eos_token_ids": [0]},
}
SKIP = {"banned_strings", "json_schema", "regex", "grammar"}  # need a tokenizer; covered on the CPU


def logits_processors():
    return [e for e in get_registry() if e.cls.stage is Stage.LOGITS and e.name not in SKIP]


@pytest.mark.parametrize("entry", logits_processors(), ids=lambda e: e.name)
def test_logits_processor_on_cuda_keeps_device_and_matches_cpu(entry):
    processor = entry.cls(**EXAMPLE_PARAMS.get(entry.name, {}))
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 64, generator=gen) * 3
    scores[0, :10] = float("-inf")
    history = torch.randint(0, 64, (4, 12), generator=gen)
    outputs = {}
    for device in ("cpu", "cuda"):
        ctx = default_context(4, eos_token_ids=(0,))
        ctx.state = processor.start(4, ctx)
        out = processor.process(history.to(device), scores.to(device), ctx)
        assert out.device.type == device and out.dtype == scores.dtype and out.shape == scores.shape
        outputs[device] = out.cpu()
    torch.testing.assert_close(outputs["cuda"], outputs["cpu"], rtol=1e-5, atol=1e-5)


def test_seeded_chain_on_cuda_reproduces_and_keeps_tokens_on_device():
    chain = Chain.from_names(("temperature", {"value": 0.8}), ("top_k", {"k": 50}), ("top_p", {"p": 0.95}),
                             "multinomial")
    scores = torch.randn(8, 50257, device="cuda")
    ids = torch.zeros(8, 1, dtype=torch.long, device="cuda")
    first = chain.start(8, seeds=range(8)).select(ids, scores)
    second = chain.start(8, seeds=range(8)).select(ids, scores)
    assert first.device.type == "cuda"
    assert torch.equal(first, second)


def tiny_model(device):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=97, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)
    return GPTModel(cfg).to(device).eval()


def test_cached_and_plain_loops_agree_on_cuda_past_the_context_length():
    model = tiny_model("cuda")
    prompts = [[1, 2, 3, 4, 5], [7, 8]]
    cached = generate(model, prompts, chain="greedy", max_new_tokens=30, use_cache=True)
    plain = generate(model, prompts, chain="greedy", max_new_tokens=30, use_cache=False)
    assert [r.tokens for r in cached] == [r.tokens for r in plain]


def test_cuda_logits_match_cpu_logits():
    ids = torch.randint(0, 97, (2, 16))
    cpu = tiny_model("cpu")(ids)
    cuda = tiny_model("cuda")(ids.cuda()).cpu()
    torch.testing.assert_close(cuda, cpu, rtol=1e-4, atol=1e-4)
