"""``python -m samplekit.serve.screenshot``: every failure is one ``error:`` line and exit status 2,
and a server it started is stopped on every way out."""

from __future__ import annotations

import http.server
import threading

import pytest

from samplekit.serve import browser, local, screenshot

pytest.importorskip("selenium", reason="selenium is not installed: pip install 'samplekit-lm[serve-test]'")


class FakeServer:
    """Stands in for LocalServer: records start and stop."""

    started = stopped = 0
    url = "http://127.0.0.1:9"

    def start(self):
        FakeServer.started += 1
        return self

    def stop(self):
        FakeServer.stopped += 1


@pytest.fixture
def fake_server(monkeypatch):
    FakeServer.started = FakeServer.stopped = 0
    monkeypatch.setattr(local, "LocalServer", FakeServer)
    return FakeServer


@pytest.fixture
def key_server():
    """A server that answers 401 on /v1/models, as ``samplekit serve --api-key`` does without a key."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.headers.get("Authorization") == "Bearer right"
            self.send_response(200 if ok else 401)
            self.end_headers()
            self.wfile.write(b'{"data": []}' if ok else b'{"error": {}}')

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_without_chromium_it_says_so_and_starts_no_server(monkeypatch, capsys, fake_server, tmp_path):
    monkeypatch.setattr(browser, "programs", lambda: None)
    assert screenshot.main([str(tmp_path / "p.png")]) == 2
    assert "apt-get install chromium chromium-driver" in one_error_line(capsys)
    assert fake_server.started == 0


def test_a_browser_failure_stops_the_server_it_started(monkeypatch, capsys, fake_server, tmp_path):
    from selenium.common.exceptions import TimeoutException

    monkeypatch.setattr(browser, "programs", lambda: ("/bin/chromium", "/bin/chromedriver"))

    def broken(*args, **kwargs):
        raise TimeoutException()
    monkeypatch.setattr(browser, "open_browser", broken)
    assert screenshot.main([str(tmp_path / "p.png")]) == 2
    assert "TimeoutException" in one_error_line(capsys)
    assert (fake_server.started, fake_server.stopped) == (1, 1)


def test_a_server_that_needs_a_key_without_one_is_a_clear_error(monkeypatch, capsys, key_server, tmp_path):
    monkeypatch.setattr(browser, "programs", lambda: ("/bin/chromium", "/bin/chromedriver"))
    monkeypatch.delenv("SAMPLEKIT_API_KEY", raising=False)
    opened = []
    monkeypatch.setattr(browser, "open_browser", lambda *a, **k: opened.append(1))
    assert screenshot.main([str(tmp_path / "p.png"), "--url", key_server]) == 2
    assert "needs an API key: pass --api-key" in one_error_line(capsys)
    assert screenshot.main([str(tmp_path / "p.png"), "--url", key_server, "--api-key", "wrong"]) == 2
    assert "refused the API key" in one_error_line(capsys)
    assert not opened  # the browser never opened
    screenshot.check_server(key_server, "right")  # the right key passes


def test_no_server_at_the_url_is_a_clear_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(browser, "programs", lambda: ("/bin/chromium", "/bin/chromedriver"))
    port = local.free_port()
    assert screenshot.main([str(tmp_path / "p.png"), "--url", f"http://127.0.0.1:{port}"]) == 2
    assert f"no samplekit server answers at http://127.0.0.1:{port}" in one_error_line(capsys)
