"""``samplekit run``: a file of requests in, a resumable JSON Lines file of samples out.

Thin: the flags become a ``samplekit.jobs.runner.RunOptions``; everything else is in
``samplekit.jobs``.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from samplekit.cli.options import Compile, Dtype, Threads, TrustRemoteCode, one_of, use_threads
from samplekit.config import MAX_NEW_TOKENS, SEED_LIMIT
from samplekit.jobs.inputs import MAX_N

MAX_BATCH = 4096


def run(
    input_file: Annotated[str, typer.Argument(
        metavar="REQUESTS", help="JSON Lines (.jsonl: one {\"prompt\": ...} object per line) or plain text "
        "(one prompt per line).", show_default=False)],
    output: Annotated[str, typer.Option(
        "--output", "-o", metavar="PATH", help="The results, one JSON line per sample; rerun the same "
        "command to resume.", show_default=False)],
    config: Annotated[Optional[str], typer.Option(
        "--config", help="A YAML chain config or a preset name (a line's own 'config' replaces it).")] = None,
    checkpoint: Annotated[str, typer.Option(
        "--checkpoint", "-c", help="A .pt checkpoint, a Hugging Face GPT-2 folder, or 'demo'.")] = "demo",
    model_folder: Annotated[Optional[str], typer.Option(
        "--model", "-m", metavar="FOLDER", help="A Hugging Face causal LM folder, run through transformers.")] = None,
    trust_remote_code: TrustRemoteCode = False,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", "-b", min=1, max=MAX_BATCH, help="Rows decoding at once (continuous batching).")] = 32,
    seed: Annotated[Optional[int], typer.Option(
        min=0, max=SEED_LIMIT - 1, show_default=False,
        help="A line without a seed uses this plus its line number minus one (default 0).")] = None,
    n: Annotated[int, typer.Option(
        "--n", "--num-samples", "-N", min=1, max=MAX_N, help="Samples per request (a line's 'n' wins).")] = 1,
    max_new_tokens: Annotated[Optional[int], typer.Option(
        "--max-new-tokens", min=1, max=MAX_NEW_TOKENS, show_default="200, or the config's max_new_tokens",
        help="Tokens to generate at most (also --length).")] = None,
    length: Annotated[Optional[int], typer.Option("--length", min=1, max=MAX_NEW_TOKENS, hidden=True)] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", metavar="PROC.PARAM=VALUE", help="Override one setting for every request (VALUE is YAML). "
        "Repeatable.")] = None,
    skip_invalid: Annotated[bool, typer.Option(
        "--skip-invalid", help="Write invalid lines as error records and run the rest.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Start afresh even if the output holds results.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, no summary.")] = False,
    engine: Annotated[str, typer.Option(
        "--engine", metavar="local|ray", help="Run here, or on Ray Data (the samplekit ray extra).")] = "local",
    address: Annotated[Optional[str], typer.Option(
        "--address", help="The Ray cluster: auto, ray://HOST:10001, ... (default: RAY_ADDRESS, else a new "
        "local cluster).")] = None,
    workers: Annotated[int, typer.Option(
        "--workers", min=1, max=10_000, help="Ray actors, each with its own copy of the model.")] = 1,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N, mps or auto.")] = "auto",
    threads: Threads = None,
    dtype: Dtype = None,
    compile_: Compile = False,
) -> None:
    """Generate for every request of a file, writing one JSON line per sample (resumable)."""
    from samplekit.errors import ConfigError
    from samplekit.jobs.inputs import Defaults
    from samplekit.jobs.models import ModelSpec
    from samplekit.jobs.runner import RunOptions, run_job

    max_new_tokens = one_of("--max-new-tokens", max_new_tokens, "--length", length)
    if engine not in ("local", "ray"):
        raise ConfigError(f"--engine {engine!r}: expected local or ray")
    options = RunOptions(
        input=input_file, output=output,
        defaults=Defaults(config=config, sets=tuple(set_ or ()), seed=seed, n=n, max_new_tokens=max_new_tokens),
        model=ModelSpec(checkpoint=checkpoint, folder=model_folder, device=device,
                        trust_remote_code=trust_remote_code, dtype=dtype, compile=compile_),
        batch_size=batch_size, engine=engine, address=address, workers=workers, skip_invalid=skip_invalid,
        overwrite=overwrite, quiet=quiet)
    if engine == "local":  # Ray's workers choose their own
        use_threads(threads)
    status = run_job(options)
    if status:
        raise typer.Exit(status)
