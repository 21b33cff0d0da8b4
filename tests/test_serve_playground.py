"""The playground in a real headless browser (Debian's chromium + chromedriver, through selenium):
the page loads, asks the API for processors and presets, runs two chains side by side on one
prompt and seed, shows every generated token coloured, and a click shows the candidates before
and after each processor at that step, the chosen one marked. Skipped, saying why, without
chromium (CI installs it through .ci/run)."""

from __future__ import annotations

import importlib.util

import pytest

from serve_helpers import KEY, get, serve_server  # noqa: F401 - the fixture


@pytest.fixture
def browser():
    from samplekit.serve.browser import open_browser, programs

    if importlib.util.find_spec("selenium") is None:
        pytest.skip("selenium is not installed: pip install 'samplekit-lm[serve-test]'")
    if programs() is None:
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    driver = open_browser()
    yield driver
    driver.quit()


def test_the_page_streams_two_chains_and_shows_each_step(serve_server, browser):
    from samplekit.serve.browser import run_playground

    page = get(serve_server, "/", key=None)
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    shown = run_playground(browser, serve_server.url + "/", prompt="ROMEO:", max_tokens=12, seed=5, api_key=KEY)
    assert shown["message"] == ""
    a, b = shown["columns"]["col-a"], shown["columns"]["col-b"]
    assert a["chain"] == ["temperature", "top_k", "multinomial"]  # the server's default (balanced)
    assert b["chain"] == ["temperature", "top_k", "multinomial"] and "finish: length" in b["status"]
    assert a["tokens"] == b["tokens"] == 12
    assert a["text"].startswith("ROMEO:") and a["text"] != b["text"]  # same seed, other chain (creative)
    spans = browser.find_elements("css selector", "#col-a .output .tok")
    assert all(s.value_of_css_property("background-color") not in ("", "rgba(0, 0, 0, 0)") for s in spans)
    detail = shown["detail"]
    assert detail["stages"] == ["model (raw)", "temperature", "top_k"]
    assert detail["chosen"] >= 1 and detail["cells"] >= 3 * 8  # 8 candidates per stage, the chosen one marked
    assert "step 2" in detail["title"]
    # The only console errors: the 401s of the API calls made before the key was typed.
    assert [e for e in shown["console"] if "401" not in e["message"]] == []
