"""Parameters the logits are divided by (temperature, repetition_penalty, dynamic_temperature's
temperature) are refused up front when tiny (issue 19, item 7): a config, a ``--set`` and a
server request all meet the same ``Param`` check, and a value it accepts samples finite tokens."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from samplekit.config import parse_config
from samplekit.errors import ConfigError, ParameterError
from samplekit.params import MIN_DIVISOR
from samplekit.plugins import get_registry

DIVISORS = [("temperature", "value"), ("repetition_penalty", "penalty"), ("dynamic_temperature", "temperature")]


@settings(max_examples=60, deadline=None)
@given(which=st.sampled_from(DIVISORS), value=st.floats(1.2e-38, MIN_DIVISOR, exclude_max=True))
def test_a_tiny_divisor_is_refused_by_config_validation_naming_it(which, value):
    """Invariant: a nonzero divisor below MIN_DIVISOR never reaches a generation."""
    name, param = which
    with pytest.raises((ConfigError, ParameterError)) as caught:
        parse_config({"chain": [{name: {param: value}}, "multinomial"]}, source="x.yaml").validate()
    assert f"{name}.{param}" in str(caught.value) and "overflows float32" in str(caught.value)


@settings(max_examples=60, deadline=None)
@given(which=st.sampled_from(DIVISORS), value=st.floats(MIN_DIVISOR, 1e3))
def test_an_accepted_divisor_samples_valid_tokens_from_large_logits(which, value):
    """Invariant: with logits up to +-1e4, an accepted divisor gives finite scores and valid tokens."""
    from samplekit.chain import Chain

    name, param = which
    registry = get_registry()
    chain = Chain([registry.create(name, {param: value}), registry.create("multinomial")])
    run = chain.start(2, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([[1, 2, 3], [4, 5, 4]])
    scores = torch.linspace(-1e4, 1e4, 50).repeat(2, 1)
    tokens = run.select(ids, scores)
    assert tokens.shape == (2,) and 0 <= int(tokens.min()) and int(tokens.max()) < 50


def test_the_server_refuses_them_as_a_400_naming_the_field():
    pytest.importorskip("fastapi")
    from samplekit.serve import mapping
    from samplekit.serve.errors import APIError

    for field in ("temperature", "repetition_penalty", "repeat_penalty"):
        with pytest.raises(APIError) as caught:
            mapping.validate({field: 1.2e-38}, vocab_size=100, context_length=None)
        assert caught.value.status == 400 and caught.value.param == field and "overflows" in caught.value.message
    assert mapping.validate({"temperature": 0}, vocab_size=100, context_length=None) == {"temperature": 0.0}
