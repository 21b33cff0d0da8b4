"""``--dtype`` and ``--compile``: a model in half precision gives float32 logits close to float32's,
its cached decoding matches its own full forward, and bad names are one clear error."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from samplekit.bench.precision import greedy_agreement, heldout_windows
from samplekit.cli import app
from samplekit.model.gpt import GPTModel, ModelConfig
from samplekit.model.precision import PrecisionError, model_dtype, parse_dtype, saved_dtype, set_precision

HALF = (torch.bfloat16, torch.float16)


def tiny(seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=300, context_length=64, emb_dim=64, n_heads=4, n_layers=2, drop_rate=0.0,
                      qkv_bias=True)
    return GPTModel(cfg).eval()


@pytest.mark.parametrize(("name", "dtype"), [("float32", torch.float32), ("bf16", torch.bfloat16),
                                             ("BFloat16", torch.bfloat16), ("fp16", torch.float16),
                                             ("half", torch.float16), ("torch.float16", torch.float16),
                                             ("auto", None), (None, None)])
def test_dtype_names(name, dtype):
    assert parse_dtype(name) == dtype


@pytest.mark.parametrize("name", ["int8", "float64", "", "bf"])
def test_an_unknown_dtype_names_the_value_and_what_is_allowed(name):
    with pytest.raises(PrecisionError, match=rf"unknown dtype '{name}': use float32, bfloat16, float16 or auto"):
        parse_dtype(name)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("prepared", [False, True])
@torch.inference_mode()
def test_half_precision_decoding_matches_its_own_full_forward_in_float32_logits(dtype, prepared):
    """Invariant: the cached one-row steps (matrix-vector products) and the full forward (matrix
    products) of the same half-precision model give float32 logits within half-precision rounding,
    and the cache holds that dtype."""
    model = set_precision(tiny(), dtype)
    if prepared:
        model.prepare_for_inference()
    assert model_dtype(model) == dtype
    ids = torch.randint(0, 300, (1, 12), generator=torch.Generator().manual_seed(1))
    full = model(ids)
    cache = model.new_cache(1)
    steps = [model(ids[:, :4], cache=cache)] + [model(ids[:, t:t + 1], cache=cache) for t in range(4, 12)]
    stepped = torch.cat(steps, dim=1)
    assert full.dtype == stepped.dtype == torch.float32 and cache.keys[0].dtype == dtype
    assert torch.allclose(stepped, full, atol=0.1, rtol=0.05), (stepped - full).abs().max()


@pytest.mark.parametrize("dtype", HALF)
@torch.inference_mode()
def test_half_precision_logits_stay_close_to_float32s(dtype):
    reference = tiny()
    model = set_precision(tiny(), dtype)
    ids = torch.randint(0, 300, (2, 10), generator=torch.Generator().manual_seed(2))
    assert torch.allclose(model(ids), reference(ids), atol=0.1, rtol=0.05)


def test_auto_keeps_a_gpt_model_and_takes_a_hugging_face_models_saved_dtype():
    model = set_precision(tiny(), "auto")
    assert model_dtype(model) == torch.float32

    class Saved(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 2)
            self.config = type("Config", (), {"torch_dtype": "bfloat16"})()

    saved = Saved()
    assert saved_dtype(saved) == torch.bfloat16
    assert model_dtype(set_precision(saved, "auto")) == torch.bfloat16


def test_compile_compiles_the_forward_in_place(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: calls.append((self, kw)))
    model = tiny()
    assert set_precision(model, None, compile=True) is model
    assert calls == [(model, {"dynamic": True})]


def test_greedy_agreement_is_one_with_itself_and_less_with_another_model():
    windows = [torch.randint(0, 300, (1, 20), generator=torch.Generator().manual_seed(s)) for s in range(3)]
    assert greedy_agreement(tiny(0), tiny(0), windows) == 1.0
    assert greedy_agreement(tiny(0), tiny(1), windows) < 0.5


def test_the_held_out_windows_fit_the_context():
    windows = heldout_windows(64, limit=5)
    assert len(windows) == 5 and all(1 < w.shape[1] <= 64 and w.dtype == torch.long for w in windows)


def test_generate_takes_dtype_and_refuses_an_unknown_one_plainly():
    runner = CliRunner()
    good = runner.invoke(app, ["generate", "ROMEO:", "-n", "3", "--seed", "1", "--device", "cpu", "--dtype",
                               "float16"])
    assert good.exit_code == 0 and good.output.startswith("ROMEO:"), good.output
    bad = runner.invoke(app, ["generate", "ROMEO:", "-n", "3", "--device", "cpu", "--dtype", "int4"])
    assert bad.exit_code == 2 and "unknown dtype 'int4'" in bad.output and "Traceback" not in bad.output


@pytest.mark.parametrize("dtype", HALF)
@torch.inference_mode()
def test_another_models_linear_layers_compute_one_row_as_a_vector_product(dtype):
    """Invariant: after set_precision, an nn.Linear gives one row within rounding of F.linear (by
    addmv) and several rows exactly as F.linear; a copy of the model keeps its own weights."""
    import copy

    from torch.nn import functional as F

    model = set_precision(torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.Linear(96, 8)), dtype)
    layer = model[0]
    assert "forward" in layer.__dict__
    one, many = torch.randn(1, 1, 64, dtype=dtype), torch.randn(3, 64, dtype=dtype)
    assert torch.allclose(layer(one).float(), F.linear(one, layer.weight, layer.bias).float(), atol=0.05, rtol=0.02)
    assert torch.equal(layer(many), F.linear(many, layer.weight, layer.bias))
    twin = copy.deepcopy(model)
    twin[0].weight.zero_()
    assert torch.equal(twin[0](one), twin[0].bias.view(1, 1, -1)) and not torch.equal(model[0](one), twin[0](one))


@pytest.mark.parametrize("dtype", HALF)
@torch.no_grad()
def test_hugging_face_conv1d_layers_compute_one_row_from_a_copy_that_follows_the_weight(dtype):
    """Invariant: a transformers Conv1D (GPT-2's ``x @ W + b``) gives one row within rounding of its
    own forward and several rows exactly as its own forward, also after its weight changes."""
    pytest.importorskip("transformers")
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    layer = Conv1D(48, 32)
    reference = Conv1D(48, 32)
    reference.load_state_dict(layer.state_dict())
    model = set_precision(torch.nn.Sequential(layer), dtype)
    reference.to(dtype)
    one, many = torch.randn(1, 1, 32, dtype=dtype), torch.randn(2, 3, 32, dtype=dtype)
    for _ in range(2):
        assert torch.allclose(model(one).float(), reference(one).float(), atol=0.05, rtol=0.02)
        assert torch.equal(model(many), reference(many))
        layer.weight.mul_(-2.0)  # changed in place: the copy is remade
        reference.weight.mul_(-2.0)


def test_generate_runs_a_hugging_face_folder_in_its_saved_dtype_or_the_one_asked(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from tests.hf_fixtures import byte_level_tokenizer, model_folder

    folder = model_folder(tmp_path, "llama", tokenizer=byte_level_tokenizer(), vocab=448)
    seen = []
    import samplekit.model.precision as precision

    original = precision.set_precision
    monkeypatch.setattr(precision, "set_precision",
                        lambda model, dtype=None, **kw: seen.append(model_dtype(original(model, dtype, **kw))) or model)
    runner = CliRunner()
    for dtype, expected in (("bfloat16", torch.bfloat16), ("float16", torch.float16), ("auto", torch.float32)):
        result = runner.invoke(app, ["generate", "ROMEO:", "--model", str(folder), "-n", "4", "--seed", "1",
                                     "--device", "cpu", "--dtype", dtype])
        assert result.exit_code == 0 and result.stdout.startswith("ROMEO:"), (result.output, result.exception)
        assert seen[-1] == expected  # the random folder is saved in float32: auto keeps it


def test_bench_runs_the_model_in_the_dtype_asked():
    result = CliRunner().invoke(app, ["bench", "--shape", "tiny", "-b", "1", "-n", "2", "--prompt-tokens", "2",
                                      "--repeats", "1", "--dtype", "fp16", "--json"])
    assert result.exit_code == 0, result.output
    assert "(fp16)" in result.stdout


def test_the_precision_workload_compares_each_dtype_with_float32():
    from samplekit.bench import BenchSettings
    from samplekit.bench.precision import run_precision

    report = run_precision(BenchSettings(model="tiny", batch_sizes=(1,), new_tokens=3, prompt_tokens=2, repeats=1,
                                         options={"dtypes": "bf16", "agreement": "no"}))
    assert set(report["batches"]["1"]["tokens_per_s"]) == {"float32", "bf16"}
    assert report["batches"]["1"]["vs_float32"]["float32"] == 1.0 and "agreement" not in report
    with pytest.raises(PrecisionError, match="unknown dtype 'int4'"):
        run_precision(BenchSettings(model="tiny", options={"dtypes": "int4"}))
    with pytest.raises(ValueError, match="--option compile='maybe': use yes or no"):
        run_precision(BenchSettings(model="tiny", options={"compile": "maybe"}))
