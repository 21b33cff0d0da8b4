"""Checkpoints and model folders that cannot be a model are refused with one line, quickly,
before any model of their config exists (issue 10 §5)."""

from __future__ import annotations

import json
import math
import struct
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from samplekit.errors import CheckpointError
from samplekit.model import weights
from samplekit.model.checkpoint import load_checkpoint
from samplekit.model.files import read_safetensors
from samplekit.model.hf_gpt2 import load_hf_gpt2
from tests.helpers_models import make_tiny_checkpoint, make_tiny_model, refused

TINY = {"vocab_size": 269, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_layers": 2}


@pytest.fixture
def no_model_built(monkeypatch):
    """Fail the test if a GPTModel is constructed (even on the meta device)."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a GPTModel was built before the config was checked against the weights")

    monkeypatch.setattr(weights, "GPTModel", forbidden)


def _with(tmp_path, name="m.pt", state=None, **config):
    """A tiny checkpoint whose config (or state dict entries) are replaced."""
    path = make_tiny_checkpoint(tmp_path / name, with_tokenizer=False)
    raw = torch.load(path, weights_only=True)
    raw["config"].update(config)
    raw["model_state_dict"].update(state or {})
    torch.save(raw, path)
    return path


@pytest.mark.parametrize("key, value, expected", [
    ("emb_dim", 10**9, "config.emb_dim is 1000000000, but tok_emb.weight has shape [269, 32]: it must be 32"),
    ("n_layers", 10**9, "config.n_layers is 1000000000, but the weights hold 2 layers (0 to 1)"),
    ("context_length", 10**8, "config.context_length is 100000000, but pos_emb.weight has shape [16, 32]"),
    ("vocab_size", 10**12, "config.vocab_size is 1000000000000, but tok_emb.weight has shape [269, 32]"),
    ("vocab_size", 50304, "config.vocab_size is 50304, but tok_emb.weight has shape [269, 32]"),
])
def test_a_size_the_weights_do_not_have_is_refused_before_any_model_is_built(
        tmp_path, no_model_built, key, value, expected):
    path = _with(tmp_path, **{key: value})
    message = refused(load_checkpoint, path)
    assert message.startswith(f"{path}: the config does not describe these weights: ")
    assert expected in message


@pytest.mark.parametrize("key, value, expected", [
    ("context_length", 1e8, "config.context_length must be a positive int, found 100000000.0 (float)"),
    ("layer_norm_eps", math.inf, "config.layer_norm_eps must be a finite positive number, found inf"),
    ("layer_norm_eps", math.nan, "config.layer_norm_eps must be a finite positive number, found nan"),
    ("drop_rate", math.nan, "config.drop_rate must be a number from 0 to 1, found nan"),
    ("layer_norm_eps", 10**400, "config.layer_norm_eps must be a finite positive number, found <int of 401"),
    ("n_heads", 10**9, "config.emb_dim 32 is not divisible by config.n_heads 1000000000"),
    ("emb_dim", 10**500, "config.emb_dim is <int of 501 digits>"),
], ids=["context-float", "eps-inf", "eps-nan", "drop-nan", "eps-huge-int", "heads-huge", "emb-501-digits"])
def test_config_values_no_model_can_have_are_refused_on_one_line(tmp_path, key, value, expected):
    path = _with(tmp_path, **{key: value})
    message = refused(load_checkpoint, path)
    assert message.startswith(str(path)) and expected in message


def test_a_layer_index_of_thousands_of_digits_is_an_unexpected_key(tmp_path):
    path = _with(tmp_path, state={f"trf_blocks.{'9' * 5000}.x": torch.zeros(1)})
    message = refused(load_checkpoint, path)
    assert "unexpected key 'trf_blocks.999" in message and len(message) < 1000


def test_several_layers_too_many_are_counted(tmp_path):
    path = _with(tmp_path, n_layers=3)
    assert "config.n_layers is 3, but the weights hold 2 layers (0 to 1)" in refused(load_checkpoint, path)


@pytest.mark.parametrize("make", [
    lambda t: torch.empty(t.shape, device="meta"),
    lambda t: t.to_sparse(),
    lambda t: t.to_sparse_csr(),
], ids=["meta", "sparse_coo", "sparse_csr"])
def test_meta_and_sparse_tensors_are_refused_by_key(tmp_path, make):
    weight = make_tiny_model().state_dict()["trf_blocks.1.att.W_value.weight"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: sparse CSR support is in beta
        path = _with(tmp_path, state={"trf_blocks.1.att.W_value.weight": make(weight)})
    message = refused(load_checkpoint, path)
    assert "key trf_blocks.1.att.W_value.weight is a" in message
    assert "meta tensor, which holds no data" in message or "weights must be dense" in message


def test_a_huge_meta_tensor_with_a_config_to_match_is_refused_without_allocating(tmp_path):
    huge = torch.empty(10**12, 32, device="meta")
    path = _with(tmp_path, vocab_size=10**12, state={"tok_emb.weight": huge, "out_head.weight": huge})
    message = refused(load_checkpoint, path)
    assert "key tok_emb.weight is a meta tensor" in message


def test_integer_weights_are_refused_by_key(tmp_path):
    path = _with(tmp_path, state={"final_norm.scale": torch.ones(32, dtype=torch.int64)})
    assert "key final_norm.scale: expected floating-point weights, found torch.int64" in refused(load_checkpoint, path)


def test_epoch_as_a_meta_tensor_is_refused(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "m.pt", with_tokenizer=False)
    raw = torch.load(path, weights_only=True)
    raw["epoch"] = torch.empty((), device="meta")
    torch.save(raw, path)
    assert "'epoch' must be an int" in refused(load_checkpoint, path)


# Hugging Face folders ---------------------------------------------------------------------------

HF_CONFIG = {"model_type": "gpt2", "n_embd": 32, "n_head": 4, "n_layer": 2, "n_positions": 16,
             "vocab_size": 269, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new"}


def _hf_folder(tmp_path, config=None, tensors=None):
    """A folder with config.json and model.safetensors; default: random GPT-2 weights in HF layout."""
    from tests.test_hf_gpt2 import hf_layout

    folder = tmp_path / "hf"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({**HF_CONFIG, **(config or {})}))
    if tensors is None:
        tensors = {k: v.contiguous() for k, v in hf_layout(make_tiny_model(qkv_bias=True)).items()}
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def test_a_valid_hf_folder_loads(tmp_path):
    model, cfg = load_hf_gpt2(_hf_folder(tmp_path))
    assert (cfg.vocab_size, cfg.emb_dim, cfg.n_layers) == (269, 32, 2)


@pytest.mark.parametrize("key, value, expected", [
    ("n_layer", 10**9, "config.json n_layer is 1000000000, but the weights hold 2 layers"),
    ("n_embd", 10**9 * 4, "config.json n_embd is 4000000000, but wte.weight has shape [269, 32]"),
    ("n_positions", 10**8, "config.json n_positions is 100000000, but wpe.weight has shape [16, 32]"),
])
def test_hf_config_sizes_the_weights_do_not_have_are_refused_quickly(tmp_path, no_model_built, key, value,
                                                                       expected):
    folder = _hf_folder(tmp_path, {key: value})
    message = refused(load_checkpoint, folder)
    assert message.startswith(str(folder / "model.safetensors")) and expected in message


@pytest.mark.parametrize("eps", ["1e400", "NaN", "-Infinity", "1" + "0" * 400],
                         ids=["1e400", "NaN", "-Infinity", "int-of-401-digits"])
def test_hf_layer_norm_epsilon_that_is_not_finite_is_refused(tmp_path, eps):
    folder = _hf_folder(tmp_path)
    text = json.dumps({**HF_CONFIG, "layer_norm_epsilon": 0.5}).replace("0.5", eps)
    (folder / "config.json").write_text(text)
    message = refused(load_checkpoint, folder)
    assert "config.json" in message and ("layer_norm_epsilon" in message or eps in message)


def _safetensors_bytes(header: object, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize("header, data, expected", [
    ({"__metadata__": ["a", "list"], "x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
     b"\0" * 4, "expected a map"),
    ({"x": {"dtype": "F32", "shape": [2**62, 2**62], "data_offsets": [0, 4]}}, b"\0" * 4, "overflow"),
    ({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, ""),
    ({"x": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, ""),
], ids=["metadata-list", "shape-overflow", "short-data", "bad-dtype"])
def test_bad_safetensors_headers_are_one_checkpoint_error_naming_the_file(tmp_path, header, data, expected):
    folder = _hf_folder(tmp_path)
    (folder / "model.safetensors").write_bytes(_safetensors_bytes(header, data))
    message = refused(load_checkpoint, folder)
    assert message.startswith(f"{folder / 'model.safetensors'}: not a valid safetensors file (")
    assert expected in message


def test_meta_tensors_in_a_pytorch_model_bin_are_refused(tmp_path):
    from tests.test_hf_gpt2 import hf_layout

    folder = _hf_folder(tmp_path)
    (folder / "model.safetensors").unlink()
    state = hf_layout(make_tiny_model(qkv_bias=True))
    state["transformer.h.0.mlp.c_fc.weight"] = torch.empty(32, 128, device="meta")
    torch.save(state, folder / "pytorch_model.bin")
    assert "key h.0.mlp.c_fc.weight is a meta tensor" in refused(load_checkpoint, folder)


# Properties over large input spaces -------------------------------------------------------------

VALUES = st.one_of(
    st.integers(min_value=-2**70, max_value=2**70), st.integers(min_value=0, max_value=70),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(), st.text(max_size=8),
    st.lists(st.integers(), max_size=3),
)
FIELDS = st.sampled_from(["vocab_size", "context_length", "emb_dim", "n_heads", "n_layers",
                          "layer_norm_eps", "drop_rate", "qkv_bias"])


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(FIELDS, VALUES, min_size=1, max_size=3))
def test_any_config_either_describes_the_weights_or_is_refused_on_one_line(tmp_path, changes):
    path = make_tiny_checkpoint(tmp_path / "p.pt", with_tokenizer=False)
    raw = torch.load(path, weights_only=True)
    raw["config"].update(changes)
    torch.save(raw, path)
    try:
        model, info = load_checkpoint(path)
    except CheckpointError:
        message = refused(load_checkpoint, path)
        assert message.startswith(str(path)) and "config" in message
        assert any(f"config.{key}" in message for key in changes) or "weights" in message
        return
    for key in ("vocab_size", "context_length", "emb_dim", "n_layers"):  # only the weights' own sizes load
        assert getattr(info.config, key) == TINY[key]
    assert info.config.emb_dim % info.config.n_heads == 0
    assert math.isfinite(info.config.layer_norm_eps) and info.config.layer_norm_eps > 0


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                    max_leaves=8)
ENTRY = st.fixed_dictionaries({
    "dtype": st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "X", ""]) | JSON,
    "shape": st.lists(st.integers(min_value=-2, max_value=2**64), max_size=4) | JSON,
    "data_offsets": st.lists(st.integers(min_value=-2, max_value=2**64), max_size=3) | JSON,
})


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(metadata=JSON, entries=st.dictionaries(st.text(min_size=1, max_size=12), ENTRY, max_size=3),
       data=st.binary(max_size=64))
def test_any_safetensors_header_loads_or_is_one_checkpoint_error(tmp_path, metadata, entries, data):
    path = tmp_path / "f.safetensors"
    header = {"__metadata__": metadata, **entries} if metadata is not None else entries
    path.write_bytes(_safetensors_bytes(header, data))
    try:
        tensors = read_safetensors(path)
    except CheckpointError:
        message = refused(read_safetensors, path)
        assert message.startswith(f"{path}: not a valid safetensors file (")
        return
    assert sum(t.numel() * t.element_size() for t in tensors.values()) <= len(data)
