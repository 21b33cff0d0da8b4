"""``samplekit serve`` on the command line: without the serve extra it says what to install (one
``error:`` line, exit 2; the import is blocked to test it), the core never imports the extra, and
bad options fail before any model is loaded."""

from __future__ import annotations

import socket
import subprocess
import sys

from typer.testing import CliRunner

from samplekit.cli import app
from serve_helpers import needs_serve

runner = CliRunner()

BLOCKED = """
import sys
for name in ("fastapi", "uvicorn", "sse_starlette"):
    sys.modules[name] = None  # import fastapi now raises ImportError, as when it is not installed
import samplekit, samplekit.cli, samplekit.scheduler, samplekit.serve.mapping, samplekit.serve.protocol
loaded = [m for m in ("fastapi", "uvicorn", "sse_starlette", "starlette") if sys.modules.get(m) is not None]
print("loaded:", loaded, flush=True)
sys.argv = ["samplekit", "serve", "--port", "0"]
samplekit.cli.main()
"""


def test_without_the_extra_serve_says_what_to_install_and_the_core_never_imports_it():
    result = subprocess.run([sys.executable, "-c", BLOCKED], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "loaded: []"
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "pip install 'samplekit-lm[serve]'" in lines[0], \
        result.stderr


def test_a_default_chain_the_fields_cannot_write_is_refused_before_loading(tmp_path):
    needs_serve()
    config = tmp_path / "odd.yaml"
    config.write_text("chain:\n  - top_p: {p: 0.9}\n  - temperature: 0.7\n  - multinomial\n")
    result = runner.invoke(app, ["serve", "--config", str(config), "--port", "0"])
    assert result.exit_code == 2 and "cannot write this chain" in result.stderr, result.output
    unknown = runner.invoke(app, ["serve", "--config", "nonesuch", "--port", "0"])
    assert unknown.exit_code == 2 and "no such config file or preset" in unknown.stderr


def test_a_port_in_use_is_one_error_line():
    needs_serve()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["serve", "--port", str(port)])
    assert result.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in result.stderr, result.output
