"""A ``samplekit serve`` on a free localhost port, in a subprocess: for the screenshot script, the
load benchmark and the tests.

    with LocalServer(api_key="k") as server:
        print(server.url)            # http://127.0.0.1:PORT
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """``python -m samplekit serve ARGS --port P`` until ``stop``; ``url``, ``log()``."""

    def __init__(self, *args: str, api_key: str | None = None, threads: int | None = 1, startup: float = 180.0,
                 env: dict[str, str] | None = None):
        self.args, self.api_key, self.threads, self.startup = list(args), api_key, threads, startup
        self.env = {**os.environ, **(env or {})}
        self.port = 0
        self.process: subprocess.Popen | None = None
        self._log = tempfile.TemporaryFile()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "LocalServer":
        self.port = free_port()
        command = [sys.executable, "-m", "samplekit", "serve", *self.args, "--port", str(self.port),
                   "--log-level", "warning"]
        if self.threads:
            command += ["--threads", str(self.threads)]
        if self.api_key:
            command += ["--api-key", self.api_key]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + self.startup
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"samplekit serve exited with status {self.process.returncode}:\n{self.log()}")
            if self.health() is not None:
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"samplekit serve did not answer within {self.startup:.0f} s:\n{self.log()}")

    def health(self) -> dict | None:
        """GET /health, or None while the server does not answer."""
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return json.loads(response.read())
        except OSError:
            return None

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
