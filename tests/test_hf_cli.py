"""`samplekit generate|info|bench --model FOLDER` and bad input: one `error:` line, exit 2.

Bad input: a folder that is not a model, a model that is not a causal LM, a missing, mismatched
or too large tokenizer, custom code without --trust-remote-code, transformers not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("transformers", reason="the hf extra: pip install 'samplekit-lm[hf]'")

from typer.testing import CliRunner  # noqa: E402

from samplekit.cli import app  # noqa: E402
from tests.hf_fixtures import byte_level_tokenizer, model_folder  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def assert_one_error_line(result, *fragments: str) -> str:
    """Exit 2, exactly one ``error:`` line on stderr (other lines only warnings), no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and all(line.startswith(("error: ", "warning: ")) for line in lines), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def tokenizer():
    return byte_level_tokenizer()


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tokenizer):
    """A tiny Llama with a byte-level tokenizer (400 ids) and a padded vocabulary (448 rows)."""
    return model_folder(tmp_path_factory.mktemp("hf-cli"), "llama", tokenizer=tokenizer, vocab=448)


def test_generate_streams_from_a_model_folder_with_a_chain_stop_and_seed(folder):
    args = ["generate", "ROMEO:", "--model", str(folder), "--config", "creative", "-n", "12", "--seed", "3"]
    first, again = invoke(*args), invoke(*args)
    assert first.exit_code == 0, (first.output, first.exception)
    assert first.stdout.startswith("ROMEO:") and first.stdout == again.stdout and len(first.stdout) > len("ROMEO:\n")
    rows = [json.loads(line) for line in invoke(*args, "--num-samples", "2", "--json").stdout.splitlines()]
    assert len(rows) == 2 and all(0 < len(r["tokens"]) <= 12 and max(r["tokens"]) < 400 for r in rows)


def test_info_shows_architecture_parameters_vocabulary_context_and_tokenizer(folder):
    result = invoke("info", "--model", str(folder))
    assert result.exit_code == 0, (result.output, result.exception)
    for fragment in ("LlamaForCausalLM", "448 output rows", "the tokenizer decodes 400", "context      64",
                     "byte-level", "<|endoftext|>"):
        assert fragment in result.stdout, result.stdout
    data = json.loads(invoke("info", "--model", str(folder), "--json").stdout)
    assert data["num_parameters"] > 0 and data["tokenizer"]["n_vocab"] == 400 and data["vocab_size"] == 448


def test_bench_runs_on_a_model_folder_against_its_own_transformers_generate(folder):
    result = invoke("bench", "--model", str(folder), "--compare", "hf", "-b", "2", "-n", "4", "--repeats", "1",
                    "--prompt-tokens", "4", "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    report = json.loads(result.stdout)
    assert report["model"] == str(folder) and report["config"]["architecture"] == "LlamaForCausalLM"
    assert report["batches"][0]["ratios"]["speedup_vs_hf"] > 0


def test_not_a_model_folder(tmp_path):
    assert_one_error_line(invoke("generate", "hi", "--model", str(tmp_path / "nope")), "no such folder")
    assert_one_error_line(invoke("generate", "hi", "--model", str(tmp_path)), "no config.json", "save_pretrained")
    (tmp_path / "config.json").write_text("{not json")
    assert_one_error_line(invoke("info", "--model", str(tmp_path)), "config.json", "JSON")


def test_weights_missing_or_broken(tmp_path, folder):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(folder, bare)
    (bare / "model.safetensors").unlink()
    assert_one_error_line(invoke("generate", "hi", "--model", str(bare)), "no PyTorch weights")
    (bare / "model.safetensors").write_bytes(b"\x00" * 64)
    assert_one_error_line(invoke("generate", "hi", "--model", str(bare)), "transformers cannot load the model")


def test_a_model_that_is_not_a_causal_lm(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    BertForMaskedLM(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=16)).save_pretrained(tmp_path / "bert")
    assert_one_error_line(invoke("generate", "hi", "--model", str(tmp_path / "bert")),
                          "BertForMaskedLM is not a causal language model")
    from transformers import T5Config, T5ForConditionalGeneration

    T5ForConditionalGeneration(T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=16, num_layers=1, num_heads=2)
                               ).save_pretrained(tmp_path / "t5")
    assert_one_error_line(invoke("info", "--model", str(tmp_path / "t5")), "'t5'", "causal")


def test_missing_and_mismatched_tokenizers(tmp_path, folder):
    no_tokenizer = model_folder(tmp_path, "gpt2", name="bare", vocab=400)
    assert_one_error_line(invoke("generate", "hi", "--model", str(no_tokenizer)), "no tokenizer files",
                          "--tokenizer")
    small_model = model_folder(tmp_path, "gpt2", name="small", vocab=300)
    assert_one_error_line(invoke("generate", "hi", "--model", str(small_model), "--tokenizer", str(folder)),
                          "400 token ids", "scores only 300", "--tokenizer")
    ok = invoke("generate", "hi", "--model", str(no_tokenizer), "--tokenizer", str(folder), "-n", "3")
    assert ok.exit_code == 0, (ok.output, ok.exception)


def custom_code_folder(root, tokenizer):
    """A model whose config names its own code (auto_map, an unknown model_type)."""
    folder = model_folder(root, "llama", tokenizer=tokenizer, name="custom")
    (folder / "configuration_custom.py").write_text(
        "from transformers import LlamaConfig\n\n\nclass CustomConfig(LlamaConfig):\n"
        "    model_type = 'samplekit-custom'\n")
    (folder / "modeling_custom.py").write_text(
        "from transformers import LlamaForCausalLM\n\nfrom .configuration_custom import CustomConfig\n\n\n"
        "class CustomForCausalLM(LlamaForCausalLM):\n    config_class = CustomConfig\n")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="samplekit-custom", architectures=["CustomForCausalLM"],
                  auto_map={"AutoConfig": "configuration_custom.CustomConfig",
                            "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_custom_code_is_refused_without_trust_remote_code_and_runs_with_it(tmp_path, tokenizer):
    folder = custom_code_folder(tmp_path, tokenizer)
    for command in ("generate", "info"):
        args = [command, "hi", "--model", str(folder)] if command == "generate" else [command, "--model", str(folder)]
        assert_one_error_line(invoke(*args), "--trust-remote-code", "modeling_custom.CustomForCausalLM")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_MODULES_CACHE": str(tmp_path / "modules")}
    run = subprocess.run([sys.executable, "-c", "from samplekit.cli import main; main()", "generate", "hi",
                          "--model", str(folder), "--trust-remote-code", "-n", "3", "--seed", "0"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("hi")


def test_without_transformers_every_hf_command_says_what_to_install(monkeypatch, folder):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` raises ImportError
    for args in (["generate", "hi", "--model", str(folder)], ["info", "--model", str(folder)],
                 ["bench", "--model", str(folder)], ["export", "demo", "--to-hf", str(folder / "out")]):
        assert_one_error_line(invoke(*args), "transformers", "pip install 'samplekit-lm[hf]'")


def test_the_core_and_the_cli_import_no_transformers():
    code = ("import sys, samplekit, samplekit.engine, samplekit.cli, samplekit.hf, samplekit.bench\n"
            "assert 'transformers' not in sys.modules, 'transformers was imported'\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
