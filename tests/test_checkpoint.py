"""Checkpoint loading and saving: round trips, safety, precise errors, atomic writes."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
import torch

from samplekit.errors import CheckpointError, SampleKitError
from samplekit.model.checkpoint import (CheckpointInfo, load_checkpoint, resolve_checkpoint_path,
                                        save_checkpoint)
from samplekit.model.device import DeviceError, resolve_device
from samplekit.model.gpt import GPTModel, ModelConfig
from tests.helpers_models import TINY_VOCAB_SIZE, make_tiny_checkpoint, make_tiny_model

PROMPT = torch.tensor([[1, 5, 7, 200, 3, 9]])


def _raw(path: Path) -> dict:
    return torch.load(path, weights_only=True)


class _RunsCode:
    """Unpickling this object would run a shell command that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_round_trip_keeps_metadata_and_logits(tmp_path):
    model = make_tiny_model(seed=3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(PROMPT).sum().backward()
    opt.step()
    tok = {"name": "gpt2"}
    path = save_checkpoint(tmp_path / "m.pt", model, epoch=4, train_loss=1.5, val_loss=1.75,
                           optimizer=opt, tokenizer=tok, training={"lr": 1e-3, "steps": 10},
                           corpus="tiny")
    loaded, info = load_checkpoint(path)
    assert isinstance(info, CheckpointInfo)
    assert info.path == path and info.config == model.config
    assert (info.epoch, info.train_loss, info.val_loss) == (4, 1.5, 1.75)
    assert info.tokenizer == tok
    assert info.extra == {"training": {"lr": 1e-3, "steps": 10}, "corpus": "tiny"}
    assert info.num_parameters == model.num_parameters()
    assert "optimizer_state_dict" in _raw(path)
    with torch.no_grad():
        assert torch.equal(loaded(PROMPT), model.eval()(PROMPT))


def test_loaded_model_is_in_eval_mode_float32_on_cpu(tmp_path):
    model, _ = load_checkpoint(make_tiny_checkpoint(tmp_path))
    assert not model.training and all(not m.training for m in model.modules())
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_checkpoint_info_is_frozen(tmp_path):
    _, info = load_checkpoint(make_tiny_checkpoint(tmp_path))
    with pytest.raises(AttributeError):
        info.epoch = 7  # type: ignore[misc]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_load_as_float32(tmp_path, dtype):
    model = make_tiny_model()
    path = save_checkpoint(tmp_path / "m.pt", model.to(dtype))
    assert _raw(path)["model_state_dict"]["tok_emb.weight"].dtype == dtype
    loaded, _ = load_checkpoint(path)
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    assert torch.equal(loaded.tok_emb.weight, model.tok_emb.weight.float())


def test_malicious_pickle_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model_state_dict": {}, "config": {}, "payload": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    assert "would run code on load" in msg and "refuses" in msg and "posix.system" in msg
    assert "weights_only" not in msg and "trusted" not in msg  # never torch's advice to disable it
    assert not marker.exists()


def test_a_pickle_of_other_python_objects_is_refused_on_one_line_without_torchs_advice(tmp_path):
    import argparse

    path = tmp_path / "args.pt"
    torch.save({"model_state_dict": {}, "config": {}, "args": argparse.Namespace(lr=1)}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: samplekit refuses this checkpoint") and "argparse.Namespace" in msg
    assert "\n" not in msg and "weights_only" not in msg and "safe_globals" not in msg


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_garbage_file_is_a_checkpoint_error_naming_the_file(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pt is not a readable PyTorch checkpoint") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)


def test_non_dict_checkpoint_is_refused(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="must be a dict.*found list"):
        load_checkpoint(path)


def test_missing_required_keys_are_named(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"epoch": 1}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "'model_state_dict'" in str(err.value) and "'config'" in str(err.value)


def test_config_values_of_the_wrong_type_are_all_named(tmp_path):
    path = make_tiny_checkpoint(tmp_path)
    raw = _raw(path)
    raw["config"].update(emb_dim="32", qkv_bias=1, n_layers=True, layer_norm_eps=0)
    torch.save(raw, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert "config.emb_dim must be a positive int, found '32'" in msg
    assert "config.qkv_bias must be a bool" in msg and "config.n_layers" in msg
    assert "config.layer_norm_eps must be a finite positive number, found 0" in msg


def test_missing_unexpected_and_mismatched_keys_are_all_named_with_shapes_on_one_line(tmp_path):
    path = make_tiny_checkpoint(tmp_path)
    raw = _raw(path)
    sd = raw["model_state_dict"]
    del sd["trf_blocks.1.ff.layers.0.bias"]
    sd["trf_blocks.0.extra.weight"] = torch.zeros(3, 2)
    sd["trf_blocks.0.att.W_key.weight"] = torch.zeros(16, 32)
    torch.save(raw, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and "\n" not in msg
    assert "missing key trf_blocks.1.ff.layers.0.bias (expected shape [128])" in msg
    assert "unexpected key 'trf_blocks.0.extra.weight' (shape [3, 2])" in msg
    assert "shape mismatch for trf_blocks.0.att.W_key.weight: expected [32, 32], found [16, 32]" in msg


def test_a_config_size_that_differs_from_the_weights_is_named_with_the_tensor_that_says_so(tmp_path):
    path = make_tiny_checkpoint(tmp_path)
    raw = _raw(path)
    raw["model_state_dict"]["pos_emb.weight"] = torch.zeros(8, 32)
    torch.save(raw, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(err.value) == (f"{path}: the config does not describe these weights: config.context_length "
                              "is 16, but pos_emb.weight has shape [8, 32]: it must be 8")


def test_a_long_list_of_key_problems_is_cut_and_counted(tmp_path):
    path = make_tiny_checkpoint(tmp_path)
    raw = _raw(path)
    raw["model_state_dict"].update({f"trf_blocks.0.junk{i}": torch.zeros(1) for i in range(40)})
    torch.save(raw, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.endswith("; and 34 more") and len(msg) < 800


def test_qkv_bias_mismatch_gets_a_hint(tmp_path):
    path = make_tiny_checkpoint(tmp_path, qkv_bias=True)
    raw = _raw(path)
    raw["config"]["qkv_bias"] = False
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="set qkv_bias to true"):
        load_checkpoint(path)


@pytest.mark.parametrize("prefix", ["_orig_mod.", "module.", "module._orig_mod."])
def test_wrapper_prefixes_on_state_dict_keys_are_accepted(tmp_path, prefix):
    path = make_tiny_checkpoint(tmp_path)
    raw = _raw(path)
    raw["model_state_dict"] = {prefix + k: v for k, v in raw["model_state_dict"].items()}
    torch.save(raw, path)
    model, _ = load_checkpoint(path)
    assert torch.equal(model.tok_emb.weight, make_tiny_model().tok_emb.weight)


def test_guides_causal_mask_buffers_are_ignored(tmp_path):
    path = make_tiny_checkpoint(tmp_path)
    raw = _raw(path)
    raw["model_state_dict"]["trf_blocks.0.att.mask"] = torch.triu(torch.ones(16, 16), diagonal=1)
    torch.save(raw, path)
    model, _ = load_checkpoint(path)
    assert "trf_blocks.0.att.mask" not in model.state_dict()


def test_saving_a_compiled_or_wrapped_model_stores_plain_keys(tmp_path):
    model = make_tiny_model()
    wrapped = torch.nn.DataParallel(model)
    path = save_checkpoint(tmp_path / "m.pt", wrapped)
    assert set(_raw(path)["model_state_dict"]) == set(model.state_dict())


def test_failed_save_leaves_the_old_checkpoint_intact_and_no_temp_file(tmp_path, monkeypatch):
    path = make_tiny_checkpoint(tmp_path)
    before = path.read_bytes()

    def boom(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, make_tiny_model(seed=9), epoch=2)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.pt", "tiny.tiktoken"]


def test_save_refuses_metadata_that_loading_would_refuse(tmp_path):
    with pytest.raises(CheckpointError, match="plain data"):
        save_checkpoint(tmp_path / "m.pt", make_tiny_model(), corpus=Path("data.txt"))
    assert not (tmp_path / "m.pt").exists()


def test_folder_that_is_not_a_hf_model_is_explained(tmp_path):
    with pytest.raises(CheckpointError, match="not a Hugging Face GPT-2 model.*config.json"):
        load_checkpoint(tmp_path)


def test_demo_resolves_to_the_bundled_checkpoint_when_installed():
    try:
        demo = importlib.import_module("samplekit.demo")
        expected = Path(demo.DEMO_CHECKPOINT)
    except (ImportError, AttributeError):
        with pytest.raises(CheckpointError, match="demo model is not installed"):
            resolve_checkpoint_path("demo")
        pytest.skip("samplekit.demo.DEMO_CHECKPOINT does not exist yet")
    if not expected.exists():
        with pytest.raises(CheckpointError, match="demo model is not installed"):
            resolve_checkpoint_path("demo")
        pytest.skip(f"the demo checkpoint {expected} has not been built")
    assert resolve_checkpoint_path("demo") == expected
    model, info = load_checkpoint("demo")
    assert isinstance(model, GPTModel) and info.path == expected


def test_resolve_device_accepts_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}


def test_resolve_device_names_the_bad_value_and_the_allowed_ones():
    with pytest.raises(DeviceError, match=r"'tpu'.*auto, cpu, cuda, mps") as err:
        resolve_device("tpu")
    assert isinstance(err.value, SampleKitError)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_unavailable_cuda_is_a_clear_error():
    with pytest.raises(DeviceError, match="'cuda' is not available.*available here: cpu"):
        resolve_device("cuda")


def test_default_config_checkpoint_of_the_guide_loads(tmp_path):
    # The guide's format: config dict with the GPT_CONFIG keys, extra keys ignored.
    cfg = {"vocab_size": TINY_VOCAB_SIZE, "context_length": 8, "emb_dim": 16, "n_heads": 2,
           "n_layers": 1, "drop_rate": 0.1, "qkv_bias": False, "notes": "ignored"}
    model = GPTModel(ModelConfig.from_dict(cfg))
    path = tmp_path / "guide.pt"
    torch.save({"model_state_dict": model.state_dict(), "config": cfg, "epoch": 3,
                "train_loss": 2.0, "val_loss": 2.5}, path)
    loaded, info = load_checkpoint(path)
    assert info.config == ModelConfig.from_dict(cfg) and info.tokenizer is None
