"""The shared decoding loop's own promises: the history grows a chunk at a time (never a copy
per step), and rows with different windows share a plain batch, each seeing only its own."""

from __future__ import annotations

import torch

from samplekit import decoding
from samplekit.chain import Chain
from samplekit.engine import generate
from tests.helpers_models import make_tiny_model


def test_the_history_is_reallocated_a_logarithmic_number_of_times(monkeypatch, one_torch_thread):
    model = make_tiny_model(context_length=16)
    resizes = []
    original = decoding.Decoding._resize
    monkeypatch.setattr(decoding, "HISTORY_CHUNK", 8)
    monkeypatch.setattr(decoding.Decoding, "_resize", lambda self, *a: (resizes.append(a), original(self, *a))[1])
    (out,) = generate(model, [[1, 2, 3]], chain="greedy", max_new_tokens=200, stop_on_eos=False)
    assert len(out.tokens) == 200
    assert len(resizes) <= 6  # 3 + 8, then doubling: 22, 44, 88, 176, 203 columns


def test_rows_with_different_windows_share_a_plain_batch_and_each_sees_its_own(one_torch_thread):
    from samplekit.requests import Request
    from samplekit.scheduler import Scheduler

    model = make_tiny_model(context_length=32)
    windows = [None, 4, 9]
    chains = [Chain.from_names(*([("context_window", {"context_length": w})] if w else []), "greedy")
              for w in windows]
    requests = [Request(prompt=list(range(1, 4 + 2 * i)), id=i, seed=i, max_new_tokens=12, chain=c)
                for i, c in enumerate(chains)]
    batched = {r.id: r.samples[0].tokens for r in Scheduler(model, max_batch=3, use_cache=False,
                                                             batch_invariant=True).run(requests)}
    for r in requests:
        (alone,) = generate(model, [r.prompt], chain=r.chain, max_new_tokens=12, batch_invariant=True)
        assert batched[r.id] == alone.tokens
    assert len(set(map(tuple, batched.values()))) > 1
