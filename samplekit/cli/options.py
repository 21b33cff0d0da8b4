"""Options several commands share, declared once."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

TrustRemoteCode = Annotated[bool, typer.Option(
    "--trust-remote-code", help="Allow a --model folder's own Python code to run.")]

Threads = Annotated[Optional[int], typer.Option(
    "--threads", min=1, max=1024, metavar="N",
    help="torch's CPU threads (default: torch's, fewer on a busy machine; OMP_NUM_THREADS is kept).")]


Dtype = Annotated[Optional[str], typer.Option(
    "--dtype", metavar="DTYPE",
    help="The model's weights and arithmetic: float32, bfloat16 or float16 (auto: a --model folder's saved "
         "dtype; default: float32 on the CPU). Logits stay float32.")]

Compile = Annotated[bool, typer.Option(
    "--compile", help="Compile the model's forward with torch.compile (the first tokens pay the compilation).")]


def use_precision(model: Any, dtype: str | None, compile: bool) -> Any:
    """Apply ``--dtype`` and ``--compile`` to a loaded model (samplekit.model.precision)."""
    from samplekit.model.precision import set_precision

    return set_precision(model, dtype, compile=compile)


def use_threads(threads: int | None) -> int:
    """Apply ``--threads`` (or the default, see samplekit.threads) before a command runs a model."""
    from samplekit.threads import apply_threads

    return apply_threads(threads)


def one_of(name: str, value: Any, alias: str, alias_value: Any) -> Any:
    """The value of an option given under its name or its hidden alias (kept out of the help so the
    option's name is not cut there); a ConfigError when given under both."""
    if value is not None and alias_value is not None:
        from samplekit.errors import ConfigError

        raise ConfigError(f"{name} and {alias} are the same option; give it once")
    return alias_value if value is None else value
