"""A Hugging Face folder given to `--model` is refused with one line, before anything is read
whole or allocated, when its files or sizes cannot be a model: the bounds of --checkpoint.

The folders are written here (a config.json and, where the check comes after it, an empty
weights file): no real weights are needed for the refusals.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from samplekit.cli import app
from samplekit.errors import CheckpointError, TokenizerError
from samplekit.hf import limits
from tests.cli_assertions import assert_one_error_line, time_limit

pytest.importorskip("transformers", reason="the hf extra: pip install 'samplekit-lm[hf]'")
from samplekit.hf.info import describe  # noqa: E402
from samplekit.hf.load import load_model, load_tokenizer  # noqa: E402

runner = CliRunner()
GPT2 = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 320, "n_positions": 64,
        "n_embd": 32, "n_layer": 2, "n_head": 4, "n_inner": None, "dtype": "float32"}
LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 320, "hidden_size": 32,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 64,
         "max_position_embeddings": 64}
SIZE_KEYS = [(base, key) for base in (GPT2, LLAMA) for key in base
             if any(key in keys for keys, _ in limits.DIMENSIONS.values())]


def folder_with(root: Path, config: dict, *, weights: bool = True, name: str = "model") -> Path:
    folder = root / name
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    if weights:
        (folder / "model.safetensors").write_bytes(b"")  # present: the checks before reading it run
    return folder


def sparse(path: Path, size: int) -> Path:
    """A file of ``size`` bytes that takes no disk space."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


@pytest.fixture
def bounded_time():
    """Fail (rather than hang allocating) after 60 s."""
    with time_limit(60, "refusing the model folder"):
        yield


@pytest.mark.parametrize("value", [-1, 0, 1_000_000_000, True, 2.0, "2", [2, 0]])
@pytest.mark.parametrize("command", ["generate", "run", "serve", "info"])
def test_an_impossible_layer_count_is_one_error_line_in_every_command(tmp_path, command, value, bounded_time):
    folder = str(folder_with(tmp_path, {**GPT2, "n_layer": value}))
    requests = tmp_path / "r.txt"
    requests.write_text("hi\n")
    argv = {"generate": ["generate", "hi", "--model", folder, "--device", "cpu"],
            "run": ["run", str(requests), "-o", str(tmp_path / "out.jsonl"), "--model", folder, "--device", "cpu"],
            "serve": ["serve", "--model", folder, "--device", "cpu", "--port", "0"],
            "info": ["info", "--model", folder]}[command]
    assert_one_error_line(runner.invoke(app, argv), "config.json", "n_layer", "from 1 to 1,024")


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(SIZE_KEYS),
       value=st.one_of(st.integers(-(2**70), 2**70), st.booleans(), st.floats(allow_nan=True), st.text(max_size=5),
                       st.lists(st.integers(-1, 3000), max_size=2), st.none()))
def test_any_size_value_is_loaded_past_or_refused_naming_its_key(tmp_path, case, value):
    """Invariant: whatever value a size key holds, loading raises a CheckpointError (never another
    exception, never an allocation): naming the key when the value (or an entry of a per-layer
    list) is out of its bounds, else reaching a later check (transformers building the config,
    the empty weights file)."""
    base, key = case
    _, high = next((keys, high) for keys, high in limits.DIMENSIONS.values() if key in keys)
    folder = folder_with(tmp_path, {**base, key: value})
    with pytest.raises(CheckpointError) as info:
        load_model(folder, device="cpu")
    message = str(info.value)
    def size(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= high

    plausible = value is None or size(value) or (isinstance(value, list) and value and all(map(size, value)))
    if isinstance(value, float) and not math.isfinite(value):  # NaN/Infinity: config.json is not strict JSON
        assert "config.json: invalid JSON file" in message and "not a JSON number" in message, message
    elif not plausible:
        assert f"{key} is" in message and f"from 1 to {high:,}" in message, message
    else:
        assert f"{key} is" not in message, message
    assert "\n" not in message


def test_a_config_past_the_memory_is_refused_before_allocating(tmp_path, bounded_time):
    """The largest sizes the bounds allow: 5e13 parameters, counted on the meta device."""
    huge = {**GPT2, "n_layer": 1024, "n_embd": 65536, "n_head": 256, "vocab_size": 1 << 24}
    message = str(pytest.raises(CheckpointError, load_model, folder_with(tmp_path, huge), device="cpu").value)
    assert "parameters" in message and "GiB of memory free on cpu" in message


def test_the_memory_check_uses_the_dtype_the_model_loads_in(tmp_path, monkeypatch):
    folder = folder_with(tmp_path, GPT2)
    params = limits.count_parameters(__import__("transformers"), folder, False)
    monkeypatch.setattr(limits, "available_memory", lambda device: 4 * params - 1)
    with pytest.raises(CheckpointError, match=f"{params:,} parameters"):
        load_model(folder, device="cpu")  # float32 on the CPU: 4 bytes each
    monkeypatch.setattr(limits, "available_memory", lambda device: 4 * params)
    with pytest.raises(CheckpointError, match="transformers cannot load the model"):  # past the check
        load_model(folder, device="cpu")


@pytest.mark.parametrize("name, limit", [("config.json", "1 MiB"), ("tokenizer_config.json", "16 MiB"),
                                         ("tokenizer.json", "256 MiB"), ("generation_config.json", "1 MiB")])
def test_a_3_gb_json_or_tokenizer_file_is_refused_without_reading_it(tmp_path, name, limit, bounded_time):
    folder = folder_with(tmp_path, GPT2)
    sparse(folder / name, 3 << 30)
    expected = f"{folder / name}: the file is 3072 MiB; the limit is {limit}"
    with pytest.raises(CheckpointError, match=expected.replace(".", r"\.")):
        load_model(folder, device="cpu")
    assert_one_error_line(runner.invoke(app, ["info", "--model", str(folder)]), name, limit)


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "model.safetensors"])
def test_a_fifo_in_a_model_folder_is_refused_not_read(tmp_path, name, bounded_time):
    import os

    folder = folder_with(tmp_path, GPT2, weights=name != "model.safetensors")
    if (folder / name).exists():
        (folder / name).unlink()
    os.mkfifo(folder / name)
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_model(folder, device="cpu")


def test_the_tokenizer_folder_gets_the_same_file_bounds(tmp_path):
    folder = tmp_path / "tok"
    folder.mkdir()
    sparse(folder / "tokenizer_config.json", 17 << 20)
    (folder / "tokenizer.json").write_text("{}")
    with pytest.raises((CheckpointError, TokenizerError), match="the limit is 16 MiB"):
        load_tokenizer(folder)


def test_info_checks_the_sizes_before_building_the_skeleton(tmp_path, bounded_time):
    folder = folder_with(tmp_path, {**LLAMA, "num_hidden_layers": 10**9})
    with pytest.raises(CheckpointError, match="num_hidden_layers is 1000000000"):
        describe(folder)


def test_a_config_transformers_refuses_is_one_error_line_in_info(tmp_path):
    folder = folder_with(tmp_path, {**GPT2, "n_layer": [2]})  # in bounds, but GPT-2 takes one int
    assert_one_error_line(runner.invoke(app, ["info", "--model", str(folder)]), "config.json",
                          "transformers cannot build a model of this config")
