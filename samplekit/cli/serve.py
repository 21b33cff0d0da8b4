"""``samplekit serve``: the OpenAI-compatible server and the playground (samplekit.serve).

Needs the ``serve`` extra (FastAPI, uvicorn, sse-starlette); without it the command prints one
``error:`` line saying what to install and exits 2. Binds to 127.0.0.1 unless ``--host`` says
otherwise.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Annotated, Optional

import typer

from samplekit.cli.options import Compile, Dtype, Threads, TrustRemoteCode, use_threads
from samplekit.errors import ConfigError


def serve(
    checkpoint: Annotated[str, typer.Option(
        "--checkpoint", "-c", help="A .pt checkpoint, a Hugging Face GPT-2 folder, or 'demo'.")] = "demo",
    model_folder: Annotated[Optional[str], typer.Option(
        "--model", "-m", metavar="FOLDER", help="A Hugging Face causal LM folder, run through transformers "
        "with its own tokenizer (and chat template).")] = None,
    tokenizer: Annotated[Optional[str], typer.Option(
        help="A tiktoken encoding name or .tiktoken file (default: the checkpoint's).")] = None,
    trust_remote_code: TrustRemoteCode = False,
    config: Annotated[str, typer.Option(
        "--config", help="The default sampling fields: a preset name or a YAML config the request fields can "
                         "write (requests override them field by field).")] = "balanced",
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, max=1024,
                                           help="Rows decoded together at most.")] = 32,
    api_key: Annotated[Optional[str], typer.Option(
        "--api-key", envvar="SAMPLEKIT_API_KEY",
        help="Require Authorization: Bearer KEY on every endpoint but /health (or set SAMPLEKIT_API_KEY).")] = None,
    name: Annotated[Optional[str], typer.Option(
        "--name", help="The model's id in the API (default: demo, or the checkpoint's or folder's name).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N, mps or auto.")] = "auto",
    threads: Threads = None,
    dtype: Dtype = None,
    compile_: Compile = False,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn's: critical, error, warning, info, "
                                                               "debug.")] = "info",
) -> None:
    """Serve the model over an OpenAI-compatible HTTP API, with a playground at /."""
    from samplekit.serve import require_serve

    require_serve()
    if log_level not in ("critical", "error", "warning", "info", "debug", "trace"):
        raise ConfigError(f"--log-level {log_level!r}: expected critical, error, warning, info or debug")
    if api_key is not None and not api_key.strip():
        raise ConfigError("--api-key: the key is empty")
    from samplekit.cli.models import check_dtype

    check_dtype(dtype)  # an unknown name fails before the model loads
    _check_port(host, port)

    from samplekit.config import load_config
    from samplekit.serve import mapping

    cfg = load_config(config)
    defaults = mapping.defaults_from_config(cfg)

    use_threads(threads)
    model, enc, vocab_size, context_length = _load(checkpoint, model_folder, tokenizer, device, trust_remote_code,
                                                   dtype, compile_)
    model_id = name or ("demo" if model_folder is None and checkpoint == "demo"
                        else Path(model_folder or checkpoint).expanduser().resolve().name.removesuffix(".pt"))

    from samplekit.model.tokenizer import encode_prompt
    from samplekit.plugins import get_registry
    from samplekit.scheduler import Scheduler
    from samplekit.serve.app import create_app
    from samplekit.serve.engine import Engine
    from samplekit.serve.protocol import Served

    registry = get_registry()
    served = Served(model_id, enc, vocab_size, context_length, registry, mapping.ChainCache(registry), defaults)
    engine = Engine(lambda: Scheduler(model, tokenizer=enc, max_batch=max_batch))
    engine.start(warm=encode_prompt(enc, "", vocab_size))
    loopback = _is_loopback(host)
    app = create_app(engine, served, api_key=api_key, loopback=loopback)
    if not loopback and api_key is None:
        typer.echo(f"warning: listening on {host} without --api-key: anyone who can reach this machine can use "
                   "the model", err=True)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"samplekit serve: http://{shown}:{port}/ (model {model_id!r}, context {context_length}, max batch "
               f"{max_batch}, defaults from {config}{', API key required' if api_key else ''})", err=True)

    import uvicorn

    from samplekit.serve.http import Protocol, raise_open_files_limit

    raise_open_files_limit()
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level in ("debug", "trace"),
                    timeout_graceful_shutdown=5, http=Protocol)
    finally:
        engine.close()


def _load(checkpoint: str, model_folder: str | None, tokenizer: str | None, device: str, trust_remote_code: bool,
          dtype: str | None = None, compile: bool = False):
    """(model, tokenizer, vocabulary size, context length), as ``samplekit generate`` loads them."""
    from samplekit.cli.models import load_command_model

    model, enc, info = load_command_model(checkpoint, device, dtype=dtype, compile=compile,
                                          model_folder=model_folder, tokenizer=tokenizer,
                                          trust_remote_code=trust_remote_code)
    return model, enc, int(info.config.vocab_size), getattr(info.config, "context_length", None)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port(host: str, port: int) -> None:
    """Fail early (before loading the model) when the address cannot be listened on."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host!r}: {exc.strerror or exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
