"""Hugging Face GPT-2 weights on GPTModel: same logits, same greedy tokens; safetensors files read
by the safetensors library, their errors as one CheckpointError line."""

from __future__ import annotations

import importlib.util
import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from samplekit.errors import CheckpointError
from samplekit.model.checkpoint import load_checkpoint
from samplekit.model.files import read_safetensors
from samplekit.model.hf_gpt2 import load_hf_gpt2
from tests.helpers_models import make_tiny_model

HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
needs_transformers = pytest.mark.skipif(
    not HAS_TRANSFORMERS, reason="transformers is not installed (optional: pip install transformers)")

PROMPT = [[5, 17, 260, 3, 99, 42, 7]]


def greedy(step, prompt: list[int], n: int) -> list[int]:
    """Append the argmax token ``n`` times; ``step(ids [1, T]) -> logits [1, T, V]``."""
    ids = list(prompt)
    for _ in range(n):
        with torch.no_grad():
            ids.append(int(step(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt):]


def hf_layout(model) -> dict[str, torch.Tensor]:
    """GPTModel weights rewritten by hand as GPT2LMHeadModel's state dict (Conv1D = Linear.T)."""
    sd = model.state_dict()
    out = {"transformer.wte.weight": sd["tok_emb.weight"], "transformer.wpe.weight": sd["pos_emb.weight"],
           "transformer.ln_f.weight": sd["final_norm.scale"], "transformer.ln_f.bias": sd["final_norm.shift"],
           "lm_head.weight": sd["out_head.weight"]}
    for i in range(model.config.n_layers):
        b, h = f"trf_blocks.{i}.", f"transformer.h.{i}."
        names = ("W_query", "W_key", "W_value")
        out[h + "attn.c_attn.weight"] = torch.cat([sd[f"{b}att.{n}.weight"] for n in names]).T.contiguous()
        out[h + "attn.c_attn.bias"] = torch.cat([sd[f"{b}att.{n}.bias"] for n in names])
        out[h + "attn.c_proj.weight"] = sd[b + "att.out_proj.weight"].T.contiguous()
        out[h + "attn.c_proj.bias"] = sd[b + "att.out_proj.bias"]
        out[h + "mlp.c_fc.weight"] = sd[b + "ff.layers.0.weight"].T.contiguous()
        out[h + "mlp.c_fc.bias"] = sd[b + "ff.layers.0.bias"]
        out[h + "mlp.c_proj.weight"] = sd[b + "ff.layers.2.weight"].T.contiguous()
        out[h + "mlp.c_proj.bias"] = sd[b + "ff.layers.2.bias"]
        for ours, theirs in (("norm1", "ln_1"), ("norm2", "ln_2")):
            out[f"{h}{theirs}.weight"] = sd[f"{b}{ours}.scale"]
            out[f"{h}{theirs}.bias"] = sd[f"{b}{ours}.shift"]
        out[h + "attn.bias"] = torch.tril(torch.ones(1, 1, 16, 16, dtype=torch.bool))  # HF buffer
    return out


def write_hf_folder(folder, model, state=None, eps=1e-5):
    cfg = model.config
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "gpt2", "n_embd": cfg.emb_dim, "n_head": cfg.n_heads, "n_layer": cfg.n_layers,
        "n_positions": cfg.context_length, "vocab_size": cfg.vocab_size,
        "layer_norm_epsilon": eps, "activation_function": "gelu_new"}))
    state = hf_layout(model) if state is None else state
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    return folder


def test_safetensors_files_load_with_their_dtypes_shapes_and_values(tmp_path):
    tensors = {"f32": torch.randn(3, 4), "f16": torch.randn(5).half(), "bf16": torch.randn(2, 2).bfloat16(),
               "i64": torch.arange(7).reshape(7, 1), "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 3)}
    save_file(tensors, str(tmp_path / "t.safetensors"), metadata={"format": "pt"})
    loaded = read_safetensors(tmp_path / "t.safetensors")
    assert set(loaded) == set(tensors)
    for name, t in tensors.items():
        assert loaded[name].dtype == t.dtype and torch.equal(loaded[name], t), name


@pytest.mark.parametrize("damage, expected", [
    (lambda b: b[:5], "header too small"),
    (lambda b: struct.pack("<Q", 10**6) + b[8:], "header"),
    (lambda b: b[:-4], "not fully covered|out of bounds|incomplete"),
])
def test_damaged_safetensors_file_is_a_checkpoint_error_naming_it(tmp_path, damage, expected):
    path = tmp_path / "t.safetensors"
    save_file({"x": torch.ones(4)}, str(path))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=f"t.safetensors: not a valid safetensors file .*({expected})") as err:
        read_safetensors(path)
    assert "\n" not in str(err.value)


def test_hand_written_hf_layout_round_trips_to_identical_logits(tmp_path):
    model = make_tiny_model(qkv_bias=True, seed=1)
    folder = write_hf_folder(tmp_path / "hf", model)
    loaded, cfg = load_hf_gpt2(folder)
    assert cfg == model.config  # qkv_bias=True, drop_rate 0
    ids = torch.tensor(PROMPT)
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))


def test_a_non_default_layer_norm_epsilon_survives_a_saved_checkpoint(tmp_path):
    """An HF config's layer_norm_epsilon is part of ModelConfig: it reaches every layer norm,
    and a checkpoint saved from the imported model reloads to the same logits."""
    from samplekit.model.checkpoint import save_checkpoint

    model = make_tiny_model(qkv_bias=True, seed=3)
    loaded, cfg = load_hf_gpt2(write_hf_folder(tmp_path / "hf", model, eps=0.5))
    assert cfg.layer_norm_eps == 0.5
    assert {m.eps for m in loaded.modules() if hasattr(m, "eps")} == {0.5}
    again, info = load_checkpoint(save_checkpoint(tmp_path / "saved.pt", loaded))
    assert info.config.layer_norm_eps == 0.5
    ids = torch.tensor(PROMPT)
    with torch.no_grad():
        assert torch.equal(again(ids), loaded(ids))
        assert not torch.allclose(loaded(ids), model(ids))  # 0.5 is far from 1e-5: it matters


def test_hf_folder_loads_through_load_checkpoint_with_tied_head(tmp_path):
    model = make_tiny_model(qkv_bias=True, seed=2)
    with torch.no_grad():
        model.out_head.weight.copy_(model.tok_emb.weight)  # GPT-2 ties the head to wte
    state = {k.removeprefix("transformer."): v for k, v in hf_layout(model).items() if k != "lm_head.weight"}
    folder = write_hf_folder(tmp_path / "hf", model, state)
    loaded, info = load_checkpoint(folder)
    assert info.extra["format"] == "huggingface-gpt2" and info.tokenizer is None
    ids = torch.tensor(PROMPT)
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))


def test_hf_shape_mismatch_names_the_hf_key(tmp_path):
    model = make_tiny_model(qkv_bias=True)
    state = hf_layout(model)
    state["transformer.h.1.attn.c_attn.weight"] = state["transformer.h.1.attn.c_attn.weight"].T
    del state["transformer.h.0.mlp.c_fc.bias"]
    folder = write_hf_folder(tmp_path / "hf", model, state)
    with pytest.raises(CheckpointError) as err:
        load_hf_gpt2(folder)
    msg = str(err.value)
    assert "shape mismatch for h.1.attn.c_attn.weight: expected [32, 96], found [96, 32]" in msg
    assert "missing key h.0.mlp.c_fc.bias (expected shape [128])" in msg


def test_unsupported_hf_config_is_named(tmp_path):
    folder = write_hf_folder(tmp_path / "hf", make_tiny_model(qkv_bias=True))
    raw = json.loads((folder / "config.json").read_text())
    raw["activation_function"] = "relu"
    (folder / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="activation_function 'relu' is not supported"):
        load_hf_gpt2(folder)


@pytest.fixture(scope="module")
def hf_model():
    if not HAS_TRANSFORMERS:
        pytest.skip("transformers is not installed (optional: pip install transformers)")
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=300,
                                      n_positions=32)).eval()


@needs_transformers
@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "pytorch_model.bin"])
def test_hf_gpt2_logits_and_greedy_tokens_match_transformers(tmp_path, hf_model, safe):
    if safe:
        hf_model.save_pretrained(tmp_path)
    else:
        hf_model.save_pretrained(tmp_path, safe_serialization=False)
        if not (tmp_path / "pytorch_model.bin").exists():  # transformers 5 writes safetensors only
            (tmp_path / "model.safetensors").unlink()
            torch.save(hf_model.state_dict(), tmp_path / "pytorch_model.bin")
    assert (tmp_path / ("model.safetensors" if safe else "pytorch_model.bin")).exists()
    ours, cfg = load_hf_gpt2(tmp_path)
    assert (cfg.vocab_size, cfg.context_length, cfg.emb_dim, cfg.n_layers) == (300, 32, 64, 2)
    ids = torch.tensor(PROMPT)
    with torch.no_grad():
        theirs_logits = hf_model(ids).logits
        ours_logits = ours(ids)
    assert ours_logits.shape == theirs_logits.shape
    torch.testing.assert_close(ours_logits, theirs_logits, atol=1e-4, rtol=0)
    hf_step = lambda x: hf_model(x).logits  # noqa: E731
    assert greedy(ours, PROMPT[0], 20) == greedy(hf_step, PROMPT[0], 20)
