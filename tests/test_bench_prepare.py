"""The benchmarks prepare a model with the loop's own ``samplekit.protocol.prepare``: a model
they prepared is not prepared again when it decodes (GPTModel's fused q/k/v built once)."""

from __future__ import annotations

import samplekit
from samplekit import bench, protocol
from tests.helpers_models import make_tiny_model


def test_a_model_the_benchmark_prepared_is_not_prepared_again_by_generate():
    model = make_tiny_model()
    calls = []
    original = model.prepare_for_inference
    model.prepare_for_inference = lambda: (calls.append(1), original())[1]
    bench.prepare(model)
    samplekit.generate(model, [[1, 2, 3]], chain=samplekit.Chain.from_names("greedy"),
                       max_new_tokens=2)
    protocol.prepare(model)
    assert len(calls) == 1
    assert bench.prepare is protocol.prepare
