"""``samplekit generate``: load a checkpoint, build the chain, stream the text.

Precedence, lowest first: built-in defaults < the config file (``--config``) < the sampling
flags (``--temperature``, ``--top-k-tokens``, ``--length``, ``--seed``, ``--stop``) < ``--set``.
The prompt comes from the argument (``-``: standard input), ``--prompt`` or ``--prompt-file``;
``--stop`` values take C-style escapes (``"\\n\\n"``: two newlines).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from typing import Annotated, Any, Optional

import typer

from samplekit.cli.inputs import read_prompt, unescape
from samplekit.cli.options import Compile, Dtype, Threads, TrustRemoteCode, one_of, use_threads
from samplekit.errors import ConfigError
from samplekit.overrides import apply_sets, build_config, parse_set  # noqa: F401 - the CLI's, and re-exported

PROMPT_HELP = ("The prompt (or use --prompt / --prompt-file); - reads it from standard input. "
               "From standard input or a file, one final newline is dropped, as $(cat FILE) does.")
MAX_SAMPLES = 1024  # --num-samples at most


def generate(
    prompt_arg: Annotated[Optional[str], typer.Argument(metavar="PROMPT", help=PROMPT_HELP,
                                                        show_default=False)] = None,
    prompt: Annotated[Optional[str], typer.Option("--prompt", "-p", help="The prompt text.")] = None,
    prompt_file: Annotated[Optional[str], typer.Option(
        "--prompt-file", metavar="PATH", help="Read the prompt from this UTF-8 file (at most 1 MiB).")] = None,
    checkpoint: Annotated[str, typer.Option(
        "--checkpoint", "-c", help="A .pt checkpoint, a Hugging Face GPT-2 folder, or 'demo'.")] = "demo",
    model_folder: Annotated[Optional[str], typer.Option(
        "--model", "-m", metavar="FOLDER", help="A Hugging Face causal LM folder, run through transformers "
        "with its own tokenizer (--tokenizer: another tokenizer folder).")] = None,
    trust_remote_code: TrustRemoteCode = False,
    config: Annotated[Optional[str], typer.Option(
        "--config", help="A YAML chain config, or a preset name (see `samplekit config presets`). "
                         "Default: temperature 0.8, top_k 50, multinomial.")] = None,
    length: Annotated[Optional[int], typer.Option(
        "--length", "-n", show_default="200, or the config's max_new_tokens",
        help="Tokens to generate at most, 1 to 1,000,000 (also --max-new-tokens).")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens", hidden=True)] = None,
    temperature: Annotated[Optional[float], typer.Option(
        "--temperature", "-t", help="Temperature (0: greedy); inserted if the chain has none.")] = None,
    top_k: Annotated[Optional[int], typer.Option(
        "--top-k-tokens", "--top-k", "-k",
        help="Keep the k most likely tokens; inserted after temperature if the chain has no top_k.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N, mps or auto.")] = "auto",
    threads: Threads = None,
    dtype: Dtype = None,
    compile_: Compile = False,
    seed: Annotated[Optional[int], typer.Option(
        help="Random seed, 0 <= seed < 2**63 (same seed, same text).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", metavar="PROC.PARAM=VALUE",
        help="Override one setting (VALUE is YAML), e.g. top_k.k=20 or max_new_tokens=50. Repeatable.")] = None,
    stop: Annotated[Optional[list[str]], typer.Option(
        "--stop", metavar="TEXT",
        help="Stop at this string (not printed); escapes such as \\n work (\\\\ is a backslash). "
             "Repeatable.")] = None,
    tokenizer: Annotated[Optional[str], typer.Option(
        help="A tiktoken encoding name or a .tiktoken rank file (default: the checkpoint's).")] = None,
    num_samples: Annotated[int, typer.Option("--num-samples", "-N", min=1, max=MAX_SAMPLES,
                                             help="Samples to generate, as one batch (at most 1024).")] = 1,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print JSON Lines: one object per sample, with `run`'s fields.")] = False,
) -> None:
    """Generate text from a prompt, streaming it as it is produced."""
    length = one_of("--length", length, "--max-new-tokens", max_new_tokens)
    text = read_prompt(prompt_arg, prompt, prompt_file)
    stop = [unescape(s, "--stop") for s in stop] if stop else None
    cfg = build_config(config, temperature=temperature, top_k=top_k, length=length, seed=seed,
                       stop=stop, sets=set_ or [])
    chain = cfg.build_chain()
    check_seed_rows(cfg.run["seed"], num_samples)

    from samplekit.cli.models import load_command_model
    from samplekit.lint import lint_chain
    from samplekit.model.tokenizer import encode_prompt

    use_threads(threads)
    # an unknown --dtype fails before the model loads
    model, enc, info = load_command_model(checkpoint, device, dtype=dtype, compile=compile_, model_folder=model_folder,
                                          tokenizer=tokenizer, trust_remote_code=trust_remote_code)
    if config or set_:  # the built-in default chain plus flags is ours: no lint noise for it
        for warning in lint_chain(chain, vocab_size=info.config.vocab_size):
            typer.echo(f"warning: {warning}", err=True)

    from samplekit import engine

    run = cfg.run
    options: dict[str, Any] = dict(
        chain=chain, max_new_tokens=run["max_new_tokens"], seed=run["seed"], stop=tuple(run["stop"]),
        stop_on_eos=run["stop_on_eos"], max_time=run["max_time"], tokenizer=enc,
    )
    ids = encode_prompt(enc, text, getattr(info.config, "vocab_size", None))
    if "max_new_tokens" in cfg.chosen:  # a preset's or the default length is "up to": no warning
        warn_past_context(len(ids), run["max_new_tokens"], getattr(info.config, "context_length", None))
    prompts = [ids] * num_samples
    if as_json:
        if options["seed"] is None:  # drawn here, so that each line's seed reproduces its sample
            options["seed"] = draw_seed(num_samples)
        results = engine.generate(model, prompts, **options)
        typer.echo(json_lines(sample_lines(results, len(ids), options["seed"])), nl=False)
    elif num_samples == 1:
        out = sys.stdout
        out.write(text)
        out.flush()
        try:
            for event in engine.generate_stream(model, prompts, **options):
                if event.row == 0 and event.text:
                    out.write(event.text)
                    out.flush()
        finally:  # the text so far stays, ended by a newline, even when generation fails
            try:
                out.write("\n")
                out.flush()
            except OSError:
                pass
    else:
        results = engine.generate(model, prompts, **options)
        for i, result in enumerate(results, 1):
            typer.echo(f"--- sample {i} ---")
            typer.echo(text + _result_text(result))


def check_seed_rows(seed: int | None, rows: int) -> None:
    """Row i of a batch uses ``seed + i``: every one must stay below 2**63 (torch's seed range)."""
    from samplekit.config import SEED_LIMIT

    if seed is not None and seed + rows - 1 >= SEED_LIMIT:
        raise ConfigError(f"--seed {seed} with --num-samples {rows}: sample i uses seed + i, which must stay "
                          f"below 2**63 (torch's manual_seed range); use a seed of at most {SEED_LIMIT - rows}")


def warn_past_context(prompt_tokens: int, max_new_tokens: int, context_length: int | None) -> None:
    """One ``warning:`` line when the prompt plus the new tokens pass the model's context window."""
    if not context_length or prompt_tokens + max_new_tokens <= context_length:
        return
    start = max(context_length - prompt_tokens, 0)
    typer.echo(f"warning: the prompt ({prompt_tokens} tokens) plus up to {max_new_tokens} new tokens pass "
               f"the model's context window of {context_length} tokens: "
               + (f"after {start} new tokens " if start else "from the first new token ")
               + "each step re-feeds the whole window instead of one token, about 16x slower per token; "
               "lower --length or shorten the prompt to stay fast", err=True)


def draw_seed(rows: int) -> int:
    """A random seed whose ``rows`` row seeds (``seed + i``) all stay below 2**63."""
    import secrets

    from samplekit.config import SEED_LIMIT

    return secrets.randbelow(SEED_LIMIT - rows + 1)


def sample_lines(results: list[Any], prompt_tokens: int, seed: int) -> list[dict]:
    """``--json``'s records, with ``samplekit run``'s field names: one per sample, ``seed`` the one
    that reproduces it (``generate PROMPT --seed SEED``)."""
    return [{"index": i, "text": _result_text(r), "tokens": list(r.tokens), "finish_reason": r.finish_reason,
             "prompt_tokens": prompt_tokens, "completion_tokens": len(r.tokens), "seed": seed + i}
            for i, r in enumerate(results)]


def json_lines(rows: list[Any]) -> str:
    """JSON Lines: one compact, strict JSON object per line (no NaN or Infinity), each ending in a newline."""
    return "".join(json.dumps(_plain(r), ensure_ascii=False, allow_nan=False) + "\n" for r in rows)


def _result_text(result: Any) -> str:
    if isinstance(result, str):
        return result
    return getattr(result, "text", "") or ""


def _plain(value: Any) -> Any:
    """JSON-ready: dataclasses become dicts, tensors lists, tuples lists, NaN and infinities null."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "value") and hasattr(value, "name"):  # an enum
        return value.value
    return str(value)
