"""The command line under hostile input (issue 10, groups 3, 4, 7 and 8): every user error is ONE
``error: ...`` line on stderr and exit 2, never a traceback; plus the newcomer's features: a
version, shell completion, a prompt from standard input or a file, escapes in ``--stop``, strict
compact JSON, a warning past the context window, and what ``bench`` is about to do.

Generation runs on a tiny random checkpoint (context 16) or the bundled demo model, 2 tokens.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import time
from importlib import metadata

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import samplekit
from samplekit.cli import app
from samplekit.cli.bench import preview
from samplekit.cli.errors import GuardedGroup, user_message
from samplekit.cli.inputs import unescape
from samplekit.errors import CheckpointError, ConfigError
from tests.cli_assertions import assert_one_error_line, time_limit
from tests.helpers_models import make_tiny_checkpoint

runner = CliRunner()
TORCH_ADVICE = (
    "Weights only load failed. This file can still be loaded, to do so you have two options, do those "
    "steps only if you trust the source of the checkpoint. \n\t(1) In PyTorch 2.6, we changed the default "
    "value of the `weights_only` argument in `torch.load` from `False` to `True`. Re-running `torch.load` "
    "with `weights_only` set to `False` will likely succeed, but it can result in arbitrary code execution. "
    "Do it only if you got the file from a trusted source.\n\t(2) Alternatively, to load with "
    "`weights_only=True` please check the recommended steps in the following error message.\n\t"
    "WeightsUnpickler error: Unsupported global: GLOBAL __main__.Foo was not an allowed global by default. "
    "Please use `torch.serialization.add_safe_globals([__main__.Foo])` or the "
    "`torch.serialization.safe_globals([__main__.Foo])` context manager to allowlist this global if you "
    "trust this class/function.\n\nCheck the documentation of torch.load to learn more about types "
    "accepted by default with weights_only https://pytorch.org/docs/stable/generated/torch.load.html.")
RESAVE_HINT = (
    "ckpt.pt: the checkpoint contains Python objects (here: __main__.Foo) that would run code on load, "
    "and samplekit refuses it (it loads with torch.load(weights_only=True)).\n"
    "If you trust the file, re-save it as a plain dict of tensors and numbers:\n"
    "    ckpt = torch.load(path, weights_only=False)  # runs the file's code: trusted files only\n"
    "    torch.save({'model_state_dict': ckpt['model_state_dict']}, 'clean.pt')")


def invoke(*args: str, input: str | bytes | None = None):
    return runner.invoke(app, list(args), input=input)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random checkpoint (context 16) with its tokenizer beside it."""
    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("tiny")))


def gen(tiny, *args: str, input=None):
    return invoke("generate", "--checkpoint", tiny, "--device", "cpu", *args, input=input)


# -- 7. usage errors, and every user error on one line ------------------------------------------------
@pytest.mark.parametrize("args, fragments", [
    (["generate", "x", "--bogus"], ["No such option: --bogus", "see `samplekit generate --help`"]),
    (["generate", "x", "--length", "abc"], ["--length", "see `samplekit generate --help`"]),
    (["generate", "x", "--seed", "1.5"], ["--seed"]),
    (["generate", "x", "-N", "0"], ["--num-samples"]),
    (["generate", "x", "-N", "100000"], ["--num-samples", "1024"]),
    (["generate", "x", "--stop"], ["--stop"]),
    (["nosuchcommand"], ["nosuchcommand", "see `samplekit --help`"]),
    (["config", "show", "--nope"], ["--nope", "see `samplekit config show --help`"]),
])
def test_usage_errors_are_one_error_line_with_a_hint_not_a_box(args, fragments):
    assert_one_error_line(invoke(*args), *fragments)


def test_a_missing_prompt_is_one_error_line():
    assert_one_error_line(invoke("generate"), "no prompt", "--prompt-file", "`-`")


def test_the_help_still_works():
    result = invoke("generate", "--help")
    assert result.exit_code == 0 and "--prompt-file" in result.stdout


def test_user_message_drops_unsafe_advice_and_keeps_one_line():
    for text in (TORCH_ADVICE, f"ckpt.pt is not a readable PyTorch checkpoint: {TORCH_ADVICE}", RESAVE_HINT):
        line = user_message(text)
        assert "\n" not in line and "\t" not in line
        assert "weights_only=False" not in line and "set to `False`" not in line, line
        assert "safe_globals" not in line and "If you trust" not in line, line
    assert "Unsupported global: GLOBAL __main__.Foo" in user_message(TORCH_ADVICE)
    assert "samplekit refuses it" in user_message(RESAVE_HINT)
    assert user_message("invalid config:\n  emb_dim: -1\n  n_heads: 0") == "invalid config: emb_dim: -1 n_heads: 0"


def boundary_app(exc: BaseException) -> typer.Typer:
    """A one-command app behind samplekit's boundary, raising ``exc``."""
    guarded = typer.Typer(cls=GuardedGroup, add_completion=False)

    @guarded.command()
    def boom() -> None:
        raise exc

    @guarded.command()
    def other() -> None:
        pass

    return guarded


@pytest.mark.parametrize("exc, fragments", [
    (CheckpointError(RESAVE_HINT), ["samplekit refuses it"]),
    (CheckpointError(f"x.pt is not a readable PyTorch checkpoint: {TORCH_ADVICE}"), ["__main__.Foo"]),
    (ConfigError("line one\nline two\n"), ["line one line two"]),
    (ConfigError("x" * 100000), []),
    (FileNotFoundError(2, "No such file or directory", "/no/such/prompt.txt"), ["/no/such/prompt.txt"]),
    (IsADirectoryError(21, "Is a directory", "/tmp"), ["/tmp: Is a directory"]),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), ["not valid UTF-8"]),
    (RecursionError("maximum recursion depth exceeded"), ["nested too deep"]),
    (MemoryError(), ["out of memory"]),
])
def test_the_boundary_prints_user_errors_as_one_line(exc, fragments):
    result = runner.invoke(boundary_app(exc), ["boom"])
    line = assert_one_error_line(result, *fragments)
    assert "weights_only=False" not in line and len(line) <= 2010


def test_a_genuine_bug_is_not_disguised_as_a_user_error():
    result = runner.invoke(boundary_app(KeyError("internal")), ["boom"])
    assert isinstance(result.exception, KeyError)


# -- 4. run settings and flags refused up front --------------------------------------------------------
@pytest.mark.parametrize("args, fragments", [
    (["--seed", "18446744073709551616"], ["--seed", "18446744073709551616", "2**63", "manual_seed"]),
    (["--seed", "-1"], ["--seed", "-1"]),
    (["--length", "1000000000000"], ["--length", "max_new_tokens", "1000000000000", "[1, 1000000]"]),
    (["--stop", ""], ["--stop", "empty"]),
    (["--set", "stop=['']"], ["--set", "stop", "empty"]),
    (["--temperature", "1e-40"], ["--temperature", "1e-40", "float32"]),
    (["--temperature", "inf"], ["--temperature", "finite"]),
    (["--temperature", "nan"], ["--temperature", "nan"]),
    (["--set", "temperature.value=.inf"], ["temperature.value", "finite"]),
    (["--top-k", "99999999999"], ["--top-k-tokens", "99999999999"]),
    (["--stop", "\udcff"], ["--stop", "lone surrogate"]),
    (["--stop", "a\\q"], ["--stop", "\\q is not an escape", "a literal backslash is \\\\"]),
    (["--stop", "end\\"], ["a backslash at the end"]),
    (["--set", "seed=2001-02-30"], ["--set seed", "2001-02-30", "timestamp"]),
    (["--set", "seed=!!python/object:os.system ls"], ["--set seed", "could not determine a constructor"]),
    (["--set", "banned_tokens.tokens=[1]"], ["no 'banned_tokens' processor"]),
    (["--seed", str(2**63 - 1), "-N", "2"], ["--seed 9223372036854775807 with --num-samples 2", "2**63"]),
])
def test_bad_flag_values_are_refused_before_generating(tiny, args, fragments):
    assert_one_error_line(gen(tiny, "x", "-n", "2", *args), *fragments)


def test_a_prompt_of_invalid_utf8_bytes_is_refused(tiny):
    assert_one_error_line(gen(tiny, "ab\udcff", "-n", "2"), "the prompt", "not valid UTF-8")


def test_text_already_streamed_stays_when_generation_fails(tiny, monkeypatch):
    from samplekit import engine
    from samplekit.errors import GenerationError

    def stream(model, prompts, **options):
        yield engine.TokenEvent(row=0, token=5, step=0, text=" partial")
        raise GenerationError("step 1: row 0 has no finite logit")
    monkeypatch.setattr(engine, "generate_stream", stream)
    result = gen(tiny, "x", "-n", "3")
    assert_one_error_line(result, "step 1: row 0 has no finite logit")
    assert result.stdout == "x partial\n"


# -- 7. --stop escapes and the README example ---------------------------------------------------------
def test_unescape_reads_c_style_escapes():
    assert unescape(r"\n\n", "--stop") == "\n\n"
    assert unescape(r"a\tb\\n\"\'\x41\u00e9\U0001F600\0", "--stop") == "a\tb\\n\"'A\u00e9\U0001F600\0"
    assert unescape("plain", "--stop") == "plain"
    for bad in ("\\q", "\\", "\\x4", "\\u12", "\\U00110000"):
        with pytest.raises(ConfigError):
            unescape(bad, "--stop")


def test_stop_newline_escape_stops_the_demo_model_at_its_first_newline():
    """Seed 1 writes "ROMEO: for you shall think\\nThis man..."; --stop "\\n" ends it at the newline."""
    free = invoke("generate", "ROMEO:", "-n", "12", "--seed", "1", "--device", "cpu")
    assert free.exit_code == 0 and free.stdout.startswith("ROMEO: for you shall think\nThis")
    stopped = invoke("generate", "ROMEO:", "-n", "12", "--seed", "1", "--device", "cpu", "--stop", "\\n")
    assert stopped.exit_code == 0, stopped.output
    assert stopped.stdout == "ROMEO: for you shall think\n"
    rows = [json.loads(line) for line in invoke("generate", "ROMEO:", "-n", "12", "--seed", "1", "--device", "cpu",
                                                "--stop", "\\n", "--json").stdout.splitlines()]
    assert rows[0]["finish_reason"] == "stop" and rows[0]["text"] == " for you shall think"


def test_a_literal_backslash_n_is_written_doubled(tiny):
    rows = [json.loads(line) for line in gen(tiny, "x", "-n", "3", "--seed", "1", "--stop", "\\\\n", "--json").stdout.splitlines()]
    assert rows[0]["finish_reason"] in ("length", "eos")


# -- 7. strict, compact JSON ---------------------------------------------------------------------------
def test_info_json_is_strict_json_with_null_for_nan_and_infinity(tmp_path):
    ckpt = make_tiny_checkpoint(tmp_path, best_loss=float("nan"), notes={"best": float("inf"), "x": [1.0, float("-inf")]})
    result = invoke("info", str(ckpt), "--json")
    assert result.exit_code == 0, result.output

    def refuse(name):
        raise AssertionError(f"{name} is not JSON")
    data = json.loads(result.stdout, parse_constant=refuse)
    assert data["metadata"]["best_loss"] is None and data["metadata"]["notes"] == {"best": None, "x": [1.0, None]}
    json.dumps(data, allow_nan=False)


def test_json_results_are_one_compact_line_each(tiny):
    result = gen(tiny, "x", "-n", "5", "-N", "3", "--seed", "1", "--set", "stop_on_eos=false", "--json")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and result.stdout.endswith("\n")
    rows = [json.loads(line) for line in lines]
    assert all(len(r["tokens"]) == 5 for r in rows)


# -- 8. version, completion, prompt sources, context warning, bench preview ----------------------------
def test_version_comes_from_the_package_metadata():
    assert samplekit.__version__ == metadata.version("samplekit-lm")
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout == f"samplekit {samplekit.__version__}\n"


def test_shell_completion_is_offered():
    assert "--install-completion" in invoke("--help").stdout
    result = invoke("--show-completion", "bash")
    assert result.exit_code == 0 and "_SAMPLEKIT_COMPLETE" in result.stdout


def test_a_prompt_from_stdin_or_a_file_equals_the_same_prompt_as_an_argument(tiny, tmp_path):
    expected = gen(tiny, "the three", "-n", "4", "--seed", "3", "--json").stdout
    from_stdin = gen(tiny, "-", "-n", "4", "--seed", "3", "--json", input="the three")
    assert from_stdin.exit_code == 0, from_stdin.output
    assert from_stdin.stdout == expected
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("the three", encoding="utf-8")
    from_file = gen(tiny, "--prompt-file", str(prompt), "-n", "4", "--seed", "3", "--json")
    assert from_file.exit_code == 0, from_file.output
    assert from_file.stdout == expected


def test_bad_prompt_sources_are_one_error_line(tiny, tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xff")
    (tmp_path / "big.txt").write_bytes(b"a" * ((1 << 20) + 1))
    cases = [
        (["--prompt-file", str(tmp_path / "missing.txt")], ["no such prompt file"]),
        (["--prompt-file", str(tmp_path)], ["is a directory"]),
        (["--prompt-file", str(tmp_path / "bad.txt")], ["not valid UTF-8", "line 2"]),
        (["--prompt-file", str(tmp_path / "big.txt")], ["the limit is 1 MiB"]),
        (["x", "--prompt", "y"], ["given twice"]),
        (["x", "--prompt-file", str(tmp_path / "bad.txt")], ["given twice"]),
    ]
    if os.path.exists("/dev/zero"):
        cases.append((["--prompt-file", "/dev/zero"], ["is a device"]))
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo")
        cases.append((["--prompt-file", str(tmp_path / "fifo")], ["FIFO"]))
    for args, fragments in cases:
        assert_one_error_line(gen(tiny, *args, "-n", "2"), *fragments)
    assert_one_error_line(gen(tiny, "-", "-n", "2", input=b"\xff\xfe"), "standard input", "not valid UTF-8")


def test_passing_the_context_window_prints_one_warning_saying_it_is_slower(tiny):
    result = gen(tiny, "the three", "-n", "20", "--seed", "1")  # context 16
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1, result.stderr
    assert "context window of 16 tokens" in warnings[0] and "16x slower" in warnings[0]
    quiet = gen(tiny, "the three", "-n", "3", "--seed", "1")
    assert "warning" not in quiet.stderr


def test_bench_says_how_long_it_takes_and_what_its_units_mean():
    lines = preview(None, "demo", (1, 8), 128, 3, ())
    assert "roughly" in lines[0] and " s " in lines[0] or "min" in lines[0]
    assert "per decoding step of the whole batch" in lines[1] and "at batch 8" in lines[1]
    assert "decoding steps" in preview(None, "model.pt", (1,), 16, 1, ())[0]
    assert_one_error_line(invoke("bench", "--batch-size", "0"), "--batch-size 0", "1 to 1024")


# -- the fuzz test --------------------------------------------------------------------------------------
HOSTILE_YAML = ["2001-02-30", "!!float abc", "!!int abc", "!!bool maybe", "!!timestamp x", "[" * 300 + "]" * 300,
                "{a: &a [x,x,x,x,x,x,x,x,x], b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], c: [*b,*b,*b,*b,*b,*b,*b,*b,*b]}",
                "!!python/object:os.system ls", "{1: 2}", "{k: 1, k: 2}", ".inf", ".nan", "-.inf", "1e-40", "1e300",
                "18446744073709551616", "-1", "0", "''", "['']", "['\\udcff']", "null", "[1, -5]", "{-5: 1, 3: 1}",
                "'\\n'", "3", "0.5", "true", "&a [*a]", "*undefined", "- a\n- b", "\t", "%", "!!binary AA=="]
SET_KEYS = ["seed", "max_new_tokens", "stop", "stop_on_eos", "max_time", "temperature.value", "top_k.k",
            "multinomial.x", "nosuch.x", "top_k", "", "a.b.c", "1x"]
TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from(["\\", "\n", "\udcff", "\0", "%", "-"]), max_size=12)


def _flags(files: dict[str, str]):
    number = st.one_of(st.integers(-(2**70), 2**70).map(str), st.sampled_from(
        ["0", "1", "2", "-1", "nan", "inf", "-inf", "1e-40", "1e300", "abc", "", "0x10", "1_000", "2.5"]))
    return st.one_of(
        st.tuples(st.sampled_from(["--length", "-n", "--seed", "--top-k", "-N"]), number),
        st.tuples(st.just("--seed"), st.sampled_from([str(2**63 - 1), str(2**63 - 2), str(2**63)])),
        st.tuples(st.sampled_from(["--temperature", "-t"]), number),
        st.tuples(st.just("--stop"), TEXT),
        st.tuples(st.just("--set"), st.builds(lambda k, v: f"{k}={v}", st.sampled_from(SET_KEYS),
                                              st.sampled_from(HOSTILE_YAML) | TEXT)),
        st.tuples(st.just("--set"), TEXT),
        st.tuples(st.just("--config"), st.sampled_from(["greedy", "creative", "nosuch", *files.values()])),
        st.tuples(st.just("--tokenizer"), st.sampled_from(["nosuch", "gpt2", files["dir"], files["fifo"]])),
        st.tuples(st.just("--device"), st.sampled_from(["cpu", "auto", "bogus", "cuda:99"])),
        st.tuples(st.sampled_from(["--json", "--bogus", "--prompt-file"])),
    )


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    texts = {
        "laughs.yaml": "chain: [greedy]\nstop: " + HOSTILE_YAML[6] + "\n",
        "dup.yaml": "chain: [greedy]\nseed: 1\nseed: 2\n",
        "deep.yaml": "chain: [greedy]\nstop: " + "[" * 300 + "]" * 300 + "\n",
        "date.yaml": "chain: [greedy]\nseed: 2001-02-30\n",
        "keys.yaml": "chain:\n  - top_k: {1: 2}\n  - greedy\n",
        "long.yaml": "chain: [" + "top_k, " * 300 + "greedy]\n",
        "ok.yaml": "chain: [temperature: 0.7, multinomial]\nmax_new_tokens: 2\n",
    }
    files = {}
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="utf-8")
        files[name] = str(folder / name)
    (folder / "bad.yaml").write_bytes(b"chain: [greedy]\nstop: ['\xff']\n")
    files["bad.yaml"] = str(folder / "bad.yaml")
    files["dir"] = str(folder)
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "fifo.yaml")
    files["fifo"] = str(folder / "fifo.yaml")
    if os.path.exists("/dev/zero"):
        files["zero"] = "/dev/zero"
    return files


@pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="needs SIGALRM to bound the time")
def test_fuzzed_command_lines_exit_0_or_2_with_one_error_line_in_bounded_time_and_memory(tiny, hostile_files):
    """Invariant, over generated configs, --set values and flags: exit 0, or exit 2 with exactly one
    `error:` line on stderr; never a traceback or another exception; each command within 20 s;
    the whole run within 1 GiB of extra peak memory."""
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    outcomes = {0: 0, 2: 0}

    @settings(max_examples=int(os.environ.get("SAMPLEKIT_FUZZ_EXAMPLES", 70)), deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(command=st.sampled_from(["generate", "generate", "generate", "show", "validate"]),
           prompt=st.one_of(TEXT, st.just("-")),
           flags=st.lists(_flags(hostile_files), max_size=5), stdin=st.binary(max_size=20))
    def check(command, prompt, flags, stdin):
        args = [a for flag in flags for a in flag]
        if command == "generate":
            # The last --set wins: generation stays 2 tokens long whatever the flags say.
            argv = ["generate", prompt, "--checkpoint", tiny, *args, "--set", "max_new_tokens=2"]
        elif command == "show":
            argv = ["config", "show", *[a for flag in flags if flag[0] == "--set" for a in flag]]
        else:
            argv = ["config", "validate", *([flag[1] for flag in flags if flag[0] == "--config"] or ["greedy"])]
        start = time.perf_counter()
        with time_limit(20):
            result = runner.invoke(app, argv, input=stdin)
        assert time.perf_counter() - start < 20
        assert result.exception is None or isinstance(result.exception, SystemExit), (argv, repr(result.exception))
        assert result.exit_code in (0, 2), (argv, result.exit_code, result.output)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
        assert "Traceback" not in result.output, (argv, result.output)
        if result.exit_code == 2:
            if command == "validate":  # one error line per invalid file, then a summary
                assert errors and all(line.startswith("error: ") for line in errors[:-1]), result.stderr
            else:
                assert len(errors) == 1 and errors[0].startswith("error: "), (argv, result.stderr)
                assert len(errors[0]) <= 2010
        else:
            assert not errors, (argv, result.stderr)
        outcomes[result.exit_code] += 1

    check()
    print(f"fuzzed command lines: {outcomes[0]} exit 0, {outcomes[2]} exit 2")
    assert outcomes[0] and outcomes[2], outcomes  # both outcomes were reached
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mib < 1024, f"peak memory grew by {grown_mib:.0f} MiB"
