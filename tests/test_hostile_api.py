"""The Python API's boundary (issue 10, group 8): ``samplekit.generate`` refuses bad arguments
up front with a clear ValueError naming the argument and the value, instead of a torch error deep
in the loop, a silent truncation (float token ids) or a silent wrap-around (negative seeds)."""

from __future__ import annotations

import math

import pytest
import torch

from samplekit import generate
from tests.helpers_models import TINY_VOCAB_SIZE, make_tiny_encoding, make_tiny_model


@pytest.fixture(scope="module")
def model():
    return make_tiny_model()


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(seed=-1), "-1"),
    (dict(seed=[3, -1]), "-1"),
    (dict(seed=2**64), "18446744073709551616"),
    (dict(seed=True), "True"),
    (dict(seed=1.5), "1.5"),
    (dict(max_time=math.nan), "max_time"),
    (dict(max_time=-1.0), "max_time"),
    (dict(context_length=0), "context_length"),
    (dict(context_length=-3), "context_length"),
    (dict(max_new_tokens=True), "max_new_tokens"),
    (dict(max_new_tokens=2.5), "max_new_tokens"),
    (dict(max_new_tokens=-1), "max_new_tokens"),
])
def test_bad_run_arguments_are_a_clear_value_error(model, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace(".", r"\.")):
        generate(model, [[1, 2, 3]], **{"max_new_tokens": 2, **kwargs})


@pytest.mark.parametrize("prompts, fragment", [
    ([[1.5, 2.0]], "integer token ids"),
    (torch.tensor([[1.5, 2.0]]), "integer token ids"),
    ([[True, False]], "integer token ids"),
    ([[TINY_VOCAB_SIZE]], f"token id {TINY_VOCAB_SIZE}"),
    ([[10**6]], "token id 1000000"),
    ([[-1, 2]], "token id -1"),
    ([[2**70]], "token id"),
    ([], "empty"),
    (torch.zeros(0, 3, dtype=torch.long), "empty"),
    ([[1, 2], []], "empty"),
])
def test_bad_prompts_are_a_clear_value_error(model, prompts, fragment):
    with pytest.raises(ValueError, match=fragment):
        generate(model, prompts, max_new_tokens=2)


def test_an_empty_stop_string_is_a_clear_value_error(model):
    with pytest.raises(ValueError, match="stop"):
        generate(model, [[1, 2]], max_new_tokens=2, stop=[""], tokenizer=make_tiny_encoding())


def test_good_arguments_at_the_edges_still_generate(model):
    results = generate(model, [[0], [TINY_VOCAB_SIZE - 1]], max_new_tokens=2, seed=[0, 2**63 - 1],
                       stop_on_eos=False, max_time=60.0, context_length=1)
    assert [len(r.tokens) for r in results] == [2, 2]
