"""Options several commands share, declared once."""

from __future__ import annotations

from typing import Annotated

import typer

TrustRemoteCode = Annotated[bool, typer.Option(
    "--trust-remote-code", help="Allow a --model folder's own Python code to run.")]
