"""``samplekit generate``: load a checkpoint, build the chain, stream the text.

Precedence, lowest first: built-in defaults < the config file (``--config``) < the sampling
flags (``--temperature``, ``--top-k-tokens``, ``--length``, ``--seed``, ``--stop``) < ``--set``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Annotated, Any, Optional

import typer
import yaml

from samplekit.errors import ConfigError

PROMPT_HELP = "The prompt (or use --prompt)."


def generate(
    prompt_arg: Annotated[Optional[str], typer.Argument(metavar="PROMPT", help=PROMPT_HELP,
                                                        show_default=False)] = None,
    prompt: Annotated[Optional[str], typer.Option("--prompt", "-p", help="The prompt text.")] = None,
    checkpoint: Annotated[str, typer.Option(
        "--checkpoint", "-c", help="A .pt checkpoint, a Hugging Face GPT-2 folder, or 'demo'.")] = "demo",
    config: Annotated[Optional[str], typer.Option(
        "--config", help="A YAML chain config, or a preset name (see `samplekit config presets`). "
                         "Default: temperature 0.8, top_k 50, multinomial.")] = None,
    length: Annotated[Optional[int], typer.Option(
        "--length", "--max-new-tokens", "-n", help="Tokens to generate at most.")] = None,
    temperature: Annotated[Optional[float], typer.Option(
        "--temperature", "-t", help="Temperature (0: greedy); inserted if the chain has none.")] = None,
    top_k: Annotated[Optional[int], typer.Option(
        "--top-k-tokens", "--top-k", "-k",
        help="Keep the k most likely tokens; inserted after temperature if the chain has no top_k.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N, mps or auto.")] = "auto",
    seed: Annotated[Optional[int], typer.Option(help="Random seed (same seed, same text).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", metavar="PROC.PARAM=VALUE",
        help="Override one setting (VALUE is YAML), e.g. top_k.k=20 or max_new_tokens=50. Repeatable.")] = None,
    stop: Annotated[Optional[list[str]], typer.Option(
        "--stop", metavar="TEXT", help="Stop at this string (not printed). Repeatable.")] = None,
    tokenizer: Annotated[Optional[str], typer.Option(
        help="A tiktoken encoding name or a .tiktoken rank file (default: the checkpoint's).")] = None,
    num_samples: Annotated[int, typer.Option("--num-samples", "-N", min=1,
                                             help="Samples to generate, as one batch.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Generate text from a prompt, streaming it as it is produced."""
    text = _one_prompt(prompt_arg, prompt)
    cfg = build_config(config, temperature=temperature, top_k=top_k, length=length, seed=seed,
                       stop=stop, sets=set_ or [])
    chain = cfg.build_chain()

    from samplekit.lint import lint_chain
    from samplekit.model.checkpoint import load_checkpoint
    from samplekit.model.device import resolve_device
    from samplekit.model.tokenizer import tokenizer_for_checkpoint

    target = resolve_device(device)
    model, info = load_checkpoint(checkpoint, target)
    enc = tokenizer_for_checkpoint(info, tokenizer)
    if config or set_:  # the built-in default chain plus flags is ours: no lint noise for it
        for warning in lint_chain(chain, vocab_size=info.config.vocab_size):
            typer.echo(f"warning: {warning}", err=True)

    from samplekit import engine

    run = cfg.run
    options: dict[str, Any] = dict(
        chain=chain, max_new_tokens=run["max_new_tokens"], seed=run["seed"], stop=tuple(run["stop"]),
        stop_on_eos=run["stop_on_eos"], max_time=run["max_time"], tokenizer=enc,
    )
    prompts = [encode_prompt(enc, text)] * num_samples
    if as_json:
        results = engine.generate(model, prompts, **options)
        typer.echo(json.dumps([_plain(r) for r in results], indent=2, ensure_ascii=False))
    elif num_samples == 1:
        out = sys.stdout
        out.write(text)
        out.flush()
        for event in engine.generate_stream(model, prompts, **options):
            if event.row == 0 and event.text:
                out.write(event.text)
                out.flush()
        out.write("\n")
        out.flush()
    else:
        results = engine.generate(model, prompts, **options)
        for i, result in enumerate(results, 1):
            typer.echo(f"--- sample {i} ---")
            typer.echo(text + _result_text(result))


def build_config(config: str | None, *, temperature: float | None = None, top_k: int | None = None,
                 length: int | None = None, seed: int | None = None, stop: list[str] | None = None,
                 sets: list[str] = ()):
    """The validated ChainConfig: defaults < config file < sampling flags < ``--set``."""
    from samplekit.config import default_config, load_config

    cfg = load_config(config) if config else default_config()
    if temperature is not None:
        cfg.set_or_insert("temperature", "value", temperature, origin="--temperature")
    if top_k is not None:
        cfg.set_or_insert("top_k", "k", top_k, after=("temperature",), origin="--top-k-tokens")
    if length is not None:
        cfg.set_value("max_new_tokens", length, origin="--length")
    if seed is not None:
        cfg.set_value("seed", seed, origin="--seed")
    if stop:
        cfg.set_value("stop", list(stop), origin="--stop")
    apply_sets(cfg, sets)
    return cfg


def apply_sets(cfg, sets: list[str]) -> None:
    """Apply ``--set PROC.PARAM=VALUE`` overrides in order (VALUE parsed with yaml.safe_load)."""
    for item in sets:
        path, value = parse_set(item)
        cfg.set_value(path, value, origin="--set")


def parse_set(item: str) -> tuple[str, Any]:
    """``"top_k.k=20"`` -> ``("top_k.k", 20)``; a malformed item is a ConfigError."""
    path, eq, raw = item.partition("=")
    path = path.strip()
    if not eq or not path or any(not part.isidentifier() for part in path.split(".")) or path.count(".") > 1:
        raise ConfigError(f"--set {item!r}: expected PROCESSOR.PARAM=VALUE (e.g. top_k.k=20) "
                          "or RUN_SETTING=VALUE (e.g. max_new_tokens=50)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: the value {raw!r} is not valid YAML "
                          f"({getattr(exc, 'problem', None) or exc})") from None
    return path, value


def _one_prompt(positional: str | None, option: str | None) -> str:
    if positional is not None and option is not None:
        raise typer.BadParameter("give the prompt once: as an argument or with --prompt, not both",
                                 param_hint="PROMPT")
    text = positional if positional is not None else option
    if text is None:
        raise typer.BadParameter("missing: pass it as an argument or with --prompt",
                                 param_hint="PROMPT")
    return text


def encode_prompt(enc, text: str) -> list[int]:
    """The prompt's token ids; special tokens such as ``<|endoftext|>`` may be written literally,
    and an empty prompt starts from ``<|endoftext|>`` (unconditional generation)."""
    from samplekit.model.tokenizer import end_of_text_id

    ids = enc.encode(text, allowed_special=enc.special_tokens_set)
    if not ids:
        eot = end_of_text_id(enc)
        if eot is None:
            raise ConfigError("the prompt is empty and the tokenizer has no <|endoftext|> to start from; "
                              "pass a prompt")
        ids = [eot]
    return ids


def _result_text(result: Any) -> str:
    if isinstance(result, str):
        return result
    return getattr(result, "text", "") or ""


def _plain(value: Any) -> Any:
    """JSON-ready: dataclasses become dicts, tensors lists, tuples lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "value") and hasattr(value, "name"):  # an enum
        return value.value
    return str(value)
