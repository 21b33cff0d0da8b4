"""``samplekit record``: the model's top-N logits over a text, stored once for replays."""

from __future__ import annotations

import hashlib
import time
from typing import Annotated, Optional

import typer

from samplekit.cli.options import Compile, Dtype, Threads, use_threads
from samplekit.lab.errors import LabError
from samplekit.safe_io import MiB

TEXT_LIMIT = 16 * MiB  # bytes of a --text file


def record(
    output: Annotated[str, typer.Option("--output", "-o", help="The record file to write.")],
    text: Annotated[Optional[str], typer.Option("--text", help="A UTF-8 text file to record.")] = None,
    corpus: Annotated[Optional[str], typer.Option(
        "--corpus", help="Record the human continuations of a corpus (demo-heldout).")] = None,
    checkpoint: Annotated[str, typer.Option(
        "--checkpoint", "-c", help="A .pt checkpoint, a Hugging Face GPT-2 folder, or 'demo'.")] = "demo",
    top: Annotated[int, typer.Option("--top", min=1, help="Logits kept per position (the vocabulary "
                                                          "size or more keeps whole rows).")] = 256,
    prompt_tokens: Annotated[int, typer.Option(
        "--prompt-tokens", min=1, help="--text: tokens of context before the first recorded one.")] = 32,
    samples: Annotated[Optional[int], typer.Option(
        "--samples", min=1, help="--corpus: the first this many passages (default: all).")] = None,
    length: Annotated[Optional[int], typer.Option(
        "--length", min=1, help="--corpus: recorded tokens per continuation at most (default: all).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N, mps or auto.")] = "auto",
    threads: Threads = None,
    dtype: Dtype = None,
    compile_: Compile = False,
) -> None:
    """Run the model once over a text (teacher-forced) and store what replaying a chain needs."""
    from samplekit.cli.models import check_dtype
    from samplekit.lab.record import pair_documents, record_logits, save_record, text_documents

    if (text is None) == (corpus is None):
        raise LabError("give the text to record: --text FILE or --corpus demo-heldout")
    check_dtype(dtype)  # an unknown name fails before the model loads
    from samplekit.engine import model_context_length

    content, source_sha = _read(text) if text is not None else (None, None)  # before the model loads
    use_threads(threads)
    model, enc, info = _load(checkpoint, device, dtype, compile_)
    context = model_context_length(model)
    if text is not None:
        ids, source = enc.encode_ordinary(content), f"text {text}"
        docs, prompts = text_documents(ids, context or 1024, prompt_tokens)
    else:
        from samplekit.lab.corpus import corpus_prompts

        prompt_set = corpus_prompts(corpus)
        n = samples or len(prompt_set.prompts)
        docs, prompts = pair_documents(enc, prompt_set.prompts[:n], prompt_set.continuations[:n], length)
        source, source_sha = f"corpus {corpus} ({len(docs)} passages)", None
    meta = {
        "source": source, "source_sha256": source_sha, "checkpoint": checkpoint,
        "checkpoint_path": str(info.path), "context_length": context,
        "tokenizer": info.tokenizer or enc.name,
        "tokenizer_dir": str(info.path if info.path.is_dir() else info.path.parent),
        "eos_token_ids": _eos(enc),
    }
    if dtype is not None:  # the logits of a half-precision model differ a little from float32's
        meta["dtype"] = dtype
    started = time.perf_counter()
    made = record_logits(model, docs, prompts, top_n=top, meta=meta)
    path = save_record(made, output)
    typer.echo(f"recorded {made.positions:,} positions of {source} (top {made.top_n} of "
               f"{made.vocab_size} logits) in {time.perf_counter() - started:.1f} s: "
               f"{path} ({path.stat().st_size / 1e6:.1f} MB)")


def _read(path: str) -> tuple[str, str]:
    """The text of ``--text`` (a regular UTF-8 file of at most TEXT_LIMIT bytes) and its sha256."""
    from samplekit.safe_io import decode_utf8, read_bytes

    data = read_bytes(path, limit=TEXT_LIMIT, what="--text file", error=LabError)
    return decode_utf8(data, path, "--text file", LabError), hashlib.sha256(data).hexdigest()


def _load(checkpoint: str, device: str, dtype: str | None = None, compile: bool = False):
    from samplekit.cli.models import load_command_model

    return load_command_model(checkpoint, device, dtype=dtype, compile=compile)


def _eos(enc) -> list[int]:
    from samplekit.model.tokenizer import end_of_text_id

    eot = end_of_text_id(enc)
    return [] if eot is None else [eot]
