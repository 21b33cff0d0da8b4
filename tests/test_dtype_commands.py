"""``--dtype`` and ``--compile`` on every command that runs a model (run, serve, compare, explain,
record), as on ``generate``: the model runs in the dtype asked (``auto``: a ``--model`` folder's
saved one), an unknown name is one ``error:`` line and exit 2 before any model loads, and the
Hugging Face memory check counts the bytes of the dtype the model loads in."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from cli_assertions import assert_one_error_line
from samplekit.cli import app
from samplekit.model.precision import model_dtype

runner = CliRunner()
ALLOWED = "use float32, bfloat16, float16 or auto"


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


@pytest.fixture
def applied(monkeypatch):
    """What ``set_precision`` made of each model (its dtype) and the models ``compile`` was asked
    of (recorded, not compiled: compilation is too slow for a test)."""
    import samplekit.model.precision as precision

    seen: dict = {"dtypes": [], "compiled": []}
    original = precision.set_precision

    def spy(model, dtype=None, **kw):
        out = original(model, dtype, **kw)
        seen["dtypes"].append(model_dtype(out))
        return out

    monkeypatch.setattr(precision, "set_precision", spy)
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: seen["compiled"].append(type(self).__name__))
    return seen


def needs(module: str, extra: str) -> None:
    pytest.importorskip(module, reason=f"{module} (samplekit-lm[{extra}]) is not installed")


def needs_serve_extra() -> None:
    from serve_helpers import needs_serve

    needs_serve()


def command(name: str, tmp_path) -> list[str]:
    """A small real run of ``name`` on the demo model (its output checked by ``produced``)."""
    if name == "run":
        requests = tmp_path / "requests.txt"
        requests.write_text("ROMEO:\nJULIET:\n")
        return ["run", str(requests), "-o", str(tmp_path / "out.jsonl"), "--max-new-tokens", "5", "--quiet"]
    if name == "explain":
        return ["explain", "ROMEO:", "--steps", "3", "--top", "3", "--json"]
    if name == "record":
        return ["record", "--corpus", "demo-heldout", "--samples", "2", "--length", "6",
                "-o", str(tmp_path / "run.logits")]
    if name == "compare":
        needs("nltk", "lab")
        return ["compare", "greedy", "--samples", "2", "--length", "6", "--json"]
    assert name == "serve"
    needs_serve_extra()
    return ["serve", "--port", "0"]


def produced(name: str, result, tmp_path) -> None:
    """The command wrote what it should."""
    if name == "run":
        rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
        assert len(rows) == 2 and all(row["completion_tokens"] == 5 for row in rows), rows
    elif name == "explain":
        assert [json.loads(line)["step"] for line in result.stdout.splitlines()] == [0, 1, 2]
    elif name == "record":
        assert "recorded 12 positions" in result.stdout, result.stdout
        from samplekit.lab.record import load_record

        assert load_record(tmp_path / "run.logits").meta["dtype"] == "bfloat16"
    else:
        data = json.loads(result.stdout)
        assert data["settings"]["dtype"] == "bfloat16" and [r["name"] for r in data["rows"]] == ["greedy", "human"]


@pytest.mark.parametrize("name", ["run", "explain", "record", "compare"])
def test_each_command_runs_the_demo_model_in_bfloat16_and_compiles_it_when_asked(name, tmp_path, applied):
    result = runner.invoke(app, [*command(name, tmp_path), "--device", "cpu", "--dtype", "bfloat16", "--compile"])
    assert result.exit_code == 0, (result.output, result.exception)
    produced(name, result, tmp_path)
    assert applied["dtypes"] == [torch.bfloat16] and applied["compiled"] == ["GPTModel"], applied


@pytest.mark.parametrize("name", ["run", "explain", "record", "compare", "serve"])
def test_an_unknown_dtype_is_one_error_line_before_any_model_loads(name, tmp_path, monkeypatch):
    import samplekit.model.checkpoint as checkpoint

    loaded = []
    monkeypatch.setattr(checkpoint, "load_checkpoint", lambda *a, **kw: loaded.append(a) or 1 / 0)
    result = runner.invoke(app, [*command(name, tmp_path), "--device", "cpu", "--dtype", "int4"])
    assert_one_error_line(result, "unknown dtype 'int4'", ALLOWED)
    assert loaded == []
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "run.logits").exists()


def test_compare_refuses_dtype_with_a_logits_record_which_runs_no_model(tmp_path):
    out = tmp_path / "run.logits"
    assert runner.invoke(app, ["record", "--corpus", "demo-heldout", "--samples", "1", "--length", "4",
                               "-o", str(out), "--device", "cpu"]).exit_code == 0
    result = runner.invoke(app, ["compare", "greedy", "--logits", str(out), "--dtype", "bf16"])
    assert_one_error_line(result, "--dtype", "not used with --logits")


def test_serve_loads_its_model_in_the_dtype_asked(applied):
    from samplekit.cli.serve import _load

    model, enc, vocab_size, context = _load("demo", None, None, "cpu", False, "bf16", True)
    assert model_dtype(model) == torch.bfloat16 and applied["compiled"] == ["GPTModel"]
    assert vocab_size == 4096 and context and enc.encode_ordinary("ROMEO:")


def test_serve_answers_a_request_with_the_model_in_bfloat16():
    needs_serve_extra()
    from serve_helpers import KEY, post
    from samplekit.serve.local import LocalServer

    with LocalServer("--dtype", "bfloat16", "--max-batch", "4", api_key=KEY) as server:
        answer = post(server, "/v1/completions", {"model": "demo", "prompt": "ROMEO:", "max_tokens": 4,
                                                  "temperature": 0, "seed": 1})
    assert answer.status_code == 200, answer.text
    choice = answer.json()["choices"][0]
    assert answer.json()["usage"]["completion_tokens"] == 4 and isinstance(choice["text"], str)


def test_a_run_with_another_dtype_does_not_resume_but_an_alias_of_the_same_does():
    """Invariant: the output's model fingerprint names the dtype (one name per dtype); without
    --dtype it is what it was, so earlier outputs still resume."""
    from samplekit.jobs.models import ModelSpec

    plain = ModelSpec().fingerprint()
    assert "dtype" not in plain
    assert ModelSpec(dtype="bf16").fingerprint() == ModelSpec(dtype="bfloat16").fingerprint() == \
        {**plain, "dtype": "bfloat16"}
    assert ModelSpec(dtype="half").fingerprint()["dtype"] == "float16"


# --- Hugging Face folders: --dtype auto and the memory check ---------------------------------------

@pytest.fixture
def folder(tmp_path):
    """A tiny random Llama folder (float32 weights) with a byte-level tokenizer."""
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from tests.hf_fixtures import byte_level_tokenizer, model_folder

    return model_folder(tmp_path, "llama", tokenizer=byte_level_tokenizer(), vocab=448)


def saved_as(folder, dtype: str):
    """``folder`` with config.json saying its weights are saved in ``dtype``."""
    path = folder / "config.json"
    raw = json.loads(path.read_text())
    for key in ("dtype", "torch_dtype"):
        if key in raw:
            raw[key] = dtype
    raw.setdefault("dtype", dtype)
    path.write_text(json.dumps(raw))
    return folder


@pytest.mark.parametrize(("dtype", "saved", "expected"), [
    ("auto", "float32", torch.float32), ("auto", "bfloat16", torch.bfloat16),
    ("bfloat16", "float32", torch.bfloat16), ("float32", "bfloat16", torch.float32)])
def test_a_model_folder_loads_in_the_dtype_asked_or_its_saved_one_for_auto(folder, dtype, saved, expected):
    from samplekit.cli.models import load_command_model
    from samplekit.jobs.models import ModelSpec

    saved_as(folder, saved)
    model, _, _ = load_command_model("demo", "cpu", dtype=dtype, model_folder=str(folder))
    assert model_dtype(model) == expected
    model, _ = ModelSpec(folder=str(folder), device="cpu", dtype=dtype).load()  # samplekit run's loader
    assert model_dtype(model) == expected


def test_run_on_a_model_folder_in_bfloat16(folder, tmp_path, applied):
    requests = tmp_path / "p.txt"
    requests.write_text("hello there\n")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["run", str(requests), "-o", str(out), "--model", str(folder), "--device", "cpu",
                                 "--quiet", "--max-new-tokens", "3", "--set", "stop_on_eos=false",
                                 "--dtype", "bfloat16"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["completion_tokens"] == 3
    assert applied["dtypes"] == [torch.bfloat16]


def test_the_memory_checks_byte_count_halves_in_bfloat16_and_follows_the_saved_dtype_for_auto(folder):
    """Invariant: bytes per parameter are the loaded dtype's: 4 for float32 (the CPU default), 2 for
    bfloat16 and float16, the saved dtype's for auto."""
    from samplekit.hf.limits import load_bytes_per_parameter

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    raw = json.loads((folder / "config.json").read_text())
    default = load_bytes_per_parameter(raw, None, cpu)
    assert default == 4
    assert load_bytes_per_parameter(raw, torch.bfloat16, cpu) == default // 2
    assert load_bytes_per_parameter(raw, torch.float16, cpu) == 2
    assert load_bytes_per_parameter(raw, "bfloat16", cpu) == 2
    assert load_bytes_per_parameter(raw, "auto", cpu) == 4  # saved in float32
    bf16 = json.loads(saved_as(folder, "bfloat16").joinpath("config.json").read_text())
    assert load_bytes_per_parameter(bf16, "auto", cpu) == 2
    assert load_bytes_per_parameter(bf16, None, cpu) == 4  # the CPU default is float32 whatever was saved
    assert load_bytes_per_parameter(bf16, None, gpu) == 2  # elsewhere the saved dtype
    assert load_bytes_per_parameter({}, "auto", cpu) == 4  # none saved: float32


def test_a_model_that_fits_only_in_bfloat16_is_refused_in_float32_and_loads_in_bfloat16(folder, monkeypatch):
    import samplekit.hf.limits as limits
    from samplekit.errors import CheckpointError
    from samplekit.hf.load import load_model

    parameters = limits.count_parameters(__import__("transformers"), folder, False)
    monkeypatch.setattr(limits, "available_memory", lambda device: 3 * parameters)  # 2 bytes fit, 4 do not
    with pytest.raises(CheckpointError, match="at 4 bytes each"):
        load_model(folder, device="cpu")
    assert model_dtype(load_model(folder, device="cpu", dtype=torch.bfloat16)) == torch.bfloat16
    saved_as(folder, "bfloat16")
    assert model_dtype(load_model(folder, device="cpu", dtype="auto")) == torch.bfloat16
