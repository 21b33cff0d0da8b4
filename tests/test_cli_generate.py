"""`samplekit generate`: seeds, flag/config precedence, streaming, batches, clean errors.

Every test runs offline: a tiny random GPTModel checkpoint saved in the usage guide's dict format
and a tiny tiktoken rank file written here, passed with --tokenizer.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from samplekit.cli import app
from samplekit.overrides import build_config, parse_set
from samplekit.errors import ConfigError

runner = CliRunner()
REPO = Path(__file__).resolve().parent.parent
MERGES = [b"th", b"he", b"the", b" t", b" the", b"er"]
VOCAB = 256 + len(MERGES) + 1  # bytes, merges, <|endoftext|>
CONTEXT = 16


def write_tiny_checkpoint(folder: Path, **extra) -> tuple[Path, Path]:
    """A random GPTModel checkpoint (``torch.save`` of the guide's dict) and its .tiktoken file."""
    from samplekit.model.gpt import GPTModel, ModelConfig

    folder.mkdir(parents=True, exist_ok=True)
    ranks = [bytes([b]) for b in range(256)] + MERGES
    tok = folder / "tiny.tiktoken"
    tok.write_text("".join(f"{base64.b64encode(t).decode()} {i}\n" for i, t in enumerate(ranks)))
    config = dict(vocab_size=VOCAB, context_length=CONTEXT, emb_dim=32, n_heads=4, n_layers=2,
                  drop_rate=0.0, qkv_bias=False)
    torch.manual_seed(0)
    model = GPTModel(ModelConfig(**config))
    ckpt = folder / "tiny.pt"
    torch.save({"model_state_dict": model.state_dict(), "config": config, "epoch": 3,
                "train_loss": 4.25, "val_loss": 4.5, **extra}, ckpt)
    return ckpt, tok


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


def gen(tiny, *args: str, prompt: str = "the three"):
    ckpt, tok = tiny
    return runner.invoke(app, ["generate", prompt, "--checkpoint", str(ckpt), "--tokenizer", str(tok),
                               "--device", "cpu", *args])


def gen_json(tiny, *args: str, prompt: str = "the three") -> list[dict]:
    result = gen(tiny, "--json", "--set", "stop_on_eos=false", *args, prompt=prompt)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def tokens(tiny, *args: str) -> list[list[int]]:
    return [r["tokens"] for r in gen_json(tiny, *args)]


# -- determinism and precedence -------------------------------------------------------------------
def test_same_seed_gives_the_same_tokens_twice(tiny):
    first = tokens(tiny, "--seed", "7", "--length", "8")
    assert first == tokens(tiny, "--seed", "7", "--length", "8")
    assert len(first[0]) == 8


def test_different_seeds_give_different_tokens(tiny):
    assert tokens(tiny, "--seed", "1", "-n", "12") != tokens(tiny, "--seed", "2", "-n", "12")


def test_temperature_zero_equals_the_greedy_preset(tiny):
    greedy = tokens(tiny, "--config", "greedy", "-n", "10")
    assert tokens(tiny, "--temperature", "0", "--seed", "3", "-n", "10") == greedy
    assert tokens(tiny, "--temperature", "0", "--seed", "4", "-n", "10") == greedy


def test_top_k_flag_overrides_the_config_file(tiny):
    # top_k 1 keeps only the largest logit (ties have measure zero with random float logits).
    greedy = tokens(tiny, "--config", "greedy", "-n", "10")
    creative = str(REPO / "configs" / "creative.yaml")
    assert tokens(tiny, "--config", creative, "--top-k", "1", "--seed", "5", "-n", "10") == greedy
    assert tokens(tiny, "--config", creative, "--top-k-tokens", "1", "--seed", "6", "-n", "10") == greedy


def test_set_overrides_the_sampling_flags(tiny):
    greedy = tokens(tiny, "--config", "greedy", "-n", "10")
    got = tokens(tiny, "--temperature", "1.5", "--set", "temperature.value=0", "--seed", "9", "-n", "10")
    assert got == greedy
    assert len(tokens(tiny, "--length", "3", "--set", "max_new_tokens=5")[0]) == 5


def test_length_and_max_new_tokens_are_the_same_option(tiny):
    assert len(tokens(tiny, "--length", "4")[0]) == 4
    assert len(tokens(tiny, "--max-new-tokens", "6")[0]) == 6
    assert len(tokens(tiny, "-n", "2")[0]) == 2


def test_prompt_option_gives_the_same_text_as_the_positional_prompt(tiny):
    ckpt, tok = tiny
    args = ["--checkpoint", str(ckpt), "--tokenizer", str(tok), "--seed", "1", "-n", "6", "--json"]
    a = runner.invoke(app, ["generate", "hello there", *args])
    b = runner.invoke(app, ["generate", "--prompt", "hello there", *args])
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    assert json.loads(a.stdout) == json.loads(b.stdout)


def test_build_config_precedence_is_defaults_then_file_then_flags_then_set():
    # no --config: the built-in default, which the balanced preset spells out
    assert build_config(None).resolved() == build_config(str(REPO / "configs" / "balanced.yaml")).resolved()
    cfg = build_config("creative", temperature=0.5, top_k=7, length=9, seed=3, stop=["\n"])
    chain = cfg.resolved()["chain"]
    assert chain[0] == {"temperature": {"value": 0.5}} and chain[1] == {"top_k": {"k": 7, "min_tokens_to_keep": 1}}
    assert (cfg.run["max_new_tokens"], cfg.run["seed"], tuple(cfg.run["stop"])) == (9, 3, ("\n",))
    cfg = build_config("creative", temperature=0.5, length=9,
                       sets=["temperature.value=0.25", "max_new_tokens=11"])
    assert cfg.resolved()["chain"][0] == {"temperature": {"value": 0.25}}
    assert cfg.run["max_new_tokens"] == 11


def test_flags_insert_temperature_then_top_k_before_the_selector_when_missing():
    chain = build_config("greedy", temperature=0.7, top_k=5).resolved()["chain"]
    assert [next(iter(p)) for p in chain] == ["temperature", "top_k", "greedy"]


def test_set_values_are_parsed_as_yaml():
    assert parse_set("top_k.k=20") == ("top_k.k", 20)
    assert parse_set("stop=[a, 'b c']") == ("stop", ["a", "b c"])
    assert parse_set("seed=null") == ("seed", None)
    assert parse_set("temperature.value=0.5") == ("temperature.value", 0.5)
    for bad in ("top_k", "=3", "top_k.k.x=1", "top k=1", "top_k.k=[1"):
        with pytest.raises(ConfigError, match="--set"):
            parse_set(bad)


# -- output ---------------------------------------------------------------------------------------
def test_streamed_output_is_the_prompt_then_the_generated_text(tiny):
    (result,) = gen_json(tiny, "--seed", "11", "-n", "8")
    streamed = gen(tiny, "--seed", "11", "-n", "8", "--set", "stop_on_eos=false")
    assert streamed.exit_code == 0, streamed.output
    assert streamed.stdout == "the three" + result["text"] + "\n"


def test_num_samples_prints_each_sample_after_its_header(tiny):
    result = gen(tiny, "--seed", "1", "-n", "5", "--num-samples", "3")
    assert result.exit_code == 0, result.output
    for i in (1, 2, 3):
        assert f"--- sample {i} ---\nthe three" in result.stdout, result.stdout
    assert "--- sample 4 ---" not in result.stdout


def test_json_has_one_result_per_sample_and_rows_differ(tiny):
    results = gen_json(tiny, "--seed", "1", "-n", "12", "--num-samples", "3")
    assert len(results) == 3
    assert {"tokens", "text", "finish_reason"} <= set(results[0])
    assert all(len(r["tokens"]) == 12 and r["finish_reason"] == "length" for r in results)
    assert len({tuple(r["tokens"]) for r in results}) == 3  # row i is seeded seed + i


def test_json_is_json_lines_with_the_fields_and_names_of_run(tiny):
    """One compact object per line; each line's seed, given alone to --seed, reproduces that sample."""
    result = gen(tiny, "--json", "-N", "3", "-n", "4", "--seed", "5", "--set", "stop_on_eos=false")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and result.stdout.endswith("}\n") and not result.stdout.startswith("[")
    rows = [json.loads(line) for line in lines]
    assert [set(r) for r in rows] == [{"index", "text", "tokens", "finish_reason", "prompt_tokens",
                                       "completion_tokens", "seed"}] * 3
    assert [(r["index"], r["seed"], r["completion_tokens"]) for r in rows] == [(0, 5, 4), (1, 6, 4), (2, 7, 4)]
    assert all(r["prompt_tokens"] == rows[0]["prompt_tokens"] > 0 for r in rows)
    (alone,) = gen_json(tiny, "-n", "4", "--seed", "7")
    assert alone["tokens"] == rows[2]["tokens"]


def test_json_without_a_seed_reports_the_seed_that_reproduces_it(tiny):
    (drawn,) = gen_json(tiny, "-n", "5")
    assert isinstance(drawn["seed"], int) and 0 <= drawn["seed"] < 2**63
    (again,) = gen_json(tiny, "-n", "5", "--seed", str(drawn["seed"]))
    assert again["tokens"] == drawn["tokens"]


@pytest.mark.parametrize("piped", ["the three\n", "the three\r\n", "the three"])
def test_standard_input_and_a_prompt_file_lose_one_final_newline_like_an_argument(tiny, tmp_path, piped):
    """`echo PROMPT | generate -` and a file written by an editor give the argument's sample."""
    ckpt, tok = tiny
    expected = gen(tiny, "--json", "-n", "4", "--seed", "3").stdout
    common = ["--checkpoint", str(ckpt), "--tokenizer", str(tok), "--device", "cpu", "--json", "-n", "4",
              "--seed", "3"]
    from_stdin = runner.invoke(app, ["generate", "-", *common], input=piped)
    assert from_stdin.exit_code == 0, from_stdin.output
    assert from_stdin.stdout == expected
    path = tmp_path / "prompt.txt"
    path.write_bytes(piped.encode())
    from_file = runner.invoke(app, ["generate", "--prompt-file", str(path), *common])
    assert from_file.stdout == expected


def test_only_one_final_newline_is_dropped():
    from samplekit.cli.inputs import strip_final_newline

    assert strip_final_newline("a\n\n") == "a\n" and strip_final_newline("a\r\n") == "a"
    assert strip_final_newline("a\r") == "a\r" and strip_final_newline("") == ""


def test_a_length_past_the_window_warns_only_when_the_user_chose_it(tiny, tmp_path):
    """A preset's max_new_tokens (or the default) is "up to": no warning; --length, --set or the
    user's own config file asking for more than the window does warn."""
    quiet = gen(tiny, "--config", "greedy", "--seed", "1", "--set", "stop_on_eos=false")  # 200 > 16
    assert quiet.exit_code == 0 and "context window" not in quiet.stderr, quiet.stderr
    own = tmp_path / "long.yaml"
    own.write_text("chain: [greedy]\nmax_new_tokens: 20\n")
    for args in (["--config", "greedy", "-n", "20"], ["--config", "greedy", "--set", "max_new_tokens=20"],
                 ["--config", str(own)]):
        loud = gen(tiny, "--seed", "1", *args)
        assert loud.exit_code == 0 and "context window of 16 tokens" in loud.stderr, (args, loud.stderr)


def test_the_bundled_presets_fit_the_demo_models_window_with_a_short_prompt():
    from samplekit.config import load_config, preset_names

    for name in preset_names():
        assert load_config(name).run["max_new_tokens"] + len("ROMEO:") <= 256, name


def test_a_prompt_longer_than_the_model_context_still_generates(tiny):
    long_prompt = "xq" * 40  # far more tokens than the context of 16
    results = gen_json(tiny, "-n", "20", "--seed", "0", prompt=long_prompt)
    assert len(results[0]["tokens"]) == 20
    assert results[0]["prompt_tokens"] > CONTEXT


def test_empty_prompt_starts_from_end_of_text(tiny):
    (result,) = gen_json(tiny, "-n", "3", "--seed", "0", prompt="")
    assert result["prompt_tokens"] == 1 and len(result["tokens"]) == 3


def test_lint_warnings_of_the_chosen_config_go_to_stderr_only(tiny, tmp_path):
    cfg = tmp_path / "lint.yaml"
    cfg.write_text("chain:\n  - top_k: 5\n  - greedy\n")
    result = gen(tiny, "--config", str(cfg), "-n", "2", "--json")
    assert result.exit_code == 0, result.output
    assert "warning: chain[0].top_k" in result.stderr
    assert all(json.loads(line) for line in result.stdout.splitlines())


# -- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, expected", [
    (["--temperature", "-1"], ["temperature", "-1.0", "[0, inf)"]),
    (["--top-k", "0"], ["--top-k-tokens", "0", "[1, inf)"]),
    (["--device", "tpu"], ["'tpu'", "cpu, cuda, mps"]),
    (["--set", "top_k"], ["--set", "PROCESSOR.PARAM=VALUE"]),
    (["--set", "top_k.k=0"], ["top_k.k", "out of range"]),
    (["--set", "top_k.k=many"], ["top_k.k", "'many'", "integer"]),
    (["--set", "nosuch.k=1"], ["unknown processor 'nosuch'"]),
    (["--set", "top_p.p=0.5"], ["no 'top_p' processor"]),
    (["--set", "maxtokens=3"], ["unknown setting"]),
    (["--length", "0"], ["max_new_tokens", "[1, 1000000]"]),
    (["--seed", "-1"], ["seed", "-1"]),
    (["--config", "nosuchpreset"], ["nosuchpreset", "presets: "]),
    (["--config", "/no/such/file.yaml"], ["/no/such/file.yaml", "no such config file"]),
])
def test_bad_flag_values_exit_2_with_a_message_and_no_traceback(tiny, args, expected):
    result = gen(tiny, *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "error: " in result.stderr
    for fragment in expected:
        assert fragment in result.stderr, result.stderr


@pytest.mark.parametrize("args", [["--num-samples", "0"], ["--temperature", "hot"], ["--top-k", "1.5"]])
def test_malformed_flag_types_are_usage_errors_with_exit_2(tiny, args):
    result = gen(tiny, *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_missing_checkpoint_exits_2_naming_the_path(tmp_path):
    missing = tmp_path / "missing.pt"
    result = runner.invoke(app, ["generate", "hi", "--checkpoint", str(missing)])
    assert result.exit_code == 2, result.output
    assert str(missing) in result.stderr and "Traceback" not in result.output


def test_a_file_that_is_not_a_checkpoint_exits_2(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    result = runner.invoke(app, ["generate", "hi", "--checkpoint", str(bad)])
    assert result.exit_code == 2, result.output
    assert "bad.pt" in result.stderr and "Traceback" not in result.output


def test_bad_config_file_exits_2_naming_file_and_path(tiny, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("chain:\n  - temperature: 0.8\n  - top_k: {k: -3}\n  - multinomial\n")
    result = gen(tiny, "--config", str(cfg))
    assert result.exit_code == 2, result.output
    assert "bad.yaml" in result.stderr and "chain[1].top_k.k" in result.stderr and "-3" in result.stderr


def test_prompt_twice_or_missing_is_a_usage_error(tiny):
    ckpt, tok = tiny
    both = runner.invoke(app, ["generate", "a", "--prompt", "b", "--checkpoint", str(ckpt)])
    neither = runner.invoke(app, ["generate", "--checkpoint", str(ckpt)])
    for result in (both, neither):
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output


def test_a_tokenizer_larger_than_the_model_vocabulary_is_a_clean_error(tmp_path):
    ckpt, _ = write_tiny_checkpoint(tmp_path)
    big = tmp_path / "big.tiktoken"
    ranks = [bytes([b]) for b in range(256)] + [bytes([a, b]) for a in b"abcdefgh" for b in b"abcdefgh"]
    big.write_text("".join(f"{base64.b64encode(t).decode()} {i}\n" for i, t in enumerate(ranks)))
    result = runner.invoke(app, ["generate", "hi", "--checkpoint", str(ckpt), "--tokenizer", str(big)])
    assert result.exit_code == 2, result.output
    assert "vocab_size" in result.stderr and "Traceback" not in result.output


def test_stop_flag_cuts_the_text_where_the_stop_string_begins(tiny):
    (full,) = gen_json(tiny, "--config", "greedy", "-n", "30")
    text = full["text"]
    starts = [i for i, ch in enumerate(text) if i > 0 and ch.isascii() and ch.isprintable()]
    assert starts, f"the greedy text has no printable ASCII to stop at: {text!r}"
    stop = text[starts[0]]
    (cut,) = gen_json(tiny, "--config", "greedy", "-n", "30", "--stop", stop)
    assert cut["finish_reason"] == "stop"
    assert cut["text"] == text[:text.index(stop)]
    streamed = gen(tiny, "--config", "greedy", "-n", "30", "--stop", stop, "--set", "stop_on_eos=false")
    assert streamed.stdout == "the three" + cut["text"] + "\n"


def test_generate_with_the_demo_checkpoint_works_offline_by_default():
    from samplekit.demo import DEMO_CHECKPOINT

    if not Path(DEMO_CHECKPOINT).exists():
        pytest.xfail(f"the demo checkpoint {DEMO_CHECKPOINT} is not built yet")
    result = runner.invoke(app, ["generate", "ROMEO:", "-n", "12", "--seed", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ROMEO:") and len(result.stdout) > len("ROMEO:\n")
