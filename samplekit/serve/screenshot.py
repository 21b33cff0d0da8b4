"""Take a screenshot of the playground: ``python -m samplekit.serve.screenshot out.png``.

Starts ``samplekit serve`` on the demo model (or uses ``--url`` of a running server), runs two
chains side by side in headless Chromium, clicks a token to open its per-step view, and saves a
PNG. Needs the serve extra, selenium, and Debian's chromium + chromium-driver.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request


class ScreenshotError(Exception):
    """What went wrong, said in one line (printed as ``error: ...``, exit status 2)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samplekit.serve.screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the PNG to write")
    parser.add_argument("--url", help="a running server (default: start one on the demo model)")
    parser.add_argument("--api-key", default=os.environ.get("SAMPLEKIT_API_KEY") or None,
                        help="the server's API key, if it has one (default: SAMPLEKIT_API_KEY)")
    parser.add_argument("--prompt", default="ROMEO:")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    try:
        return _screenshot(args)
    except ScreenshotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _screenshot(args: argparse.Namespace) -> int:
    """Check the browser and the server first; whatever starts is stopped on every way out."""
    from samplekit.serve.browser import programs

    try:
        import selenium  # noqa: F401
    except ImportError:
        raise ScreenshotError("selenium is not installed: pip install 'samplekit-lm[serve-test]'") from None
    if programs() is None:
        raise ScreenshotError("chromium and chromedriver are needed: apt-get install chromium chromium-driver")
    if args.url:
        check_server(args.url.rstrip("/"), args.api_key)

    from selenium.common.exceptions import WebDriverException

    from samplekit.serve.browser import open_browser, run_playground
    from samplekit.serve.local import LocalServer

    server = driver = None
    try:
        if not args.url:
            try:
                server = LocalServer().start()
            except RuntimeError as exc:
                raise ScreenshotError(str(exc).splitlines()[0]) from None
        url = args.url or server.url
        try:
            driver = open_browser()
            shown = run_playground(driver, url, prompt=args.prompt, seed=args.seed, api_key=args.api_key)
            driver.set_window_size(1400, max(1100, driver.execute_script("return document.body.scrollHeight") + 40))
            driver.save_screenshot(args.out)
        except WebDriverException as exc:  # TimeoutException included: its message is often empty
            said = (exc.msg or "").strip().splitlines()
            raise ScreenshotError(f"the browser failed on {url}: {type(exc).__name__}"
                                  + (f": {said[0]}" if said else " (the playground did not finish in time)")) from None
    finally:
        if driver is not None:
            driver.quit()
        if server is not None:
            server.stop()
    if shown["message"]:
        raise ScreenshotError(f"the page said: {shown['message']}")
    counts = ", ".join(f"{c}: {v['tokens']} tokens" for c, v in shown["columns"].items())
    print(f"{args.out}: {counts}; detail stages {shown.get('detail', {}).get('stages')}")
    return 0


def check_server(url: str, api_key: str | None, timeout: float = 10.0) -> None:
    """A ScreenshotError unless ``url`` answers as a samplekit server that accepts ``api_key``."""
    request = urllib.request.Request(f"{url}/v1/models")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise ScreenshotError(f"{url} needs an API key: pass --api-key KEY (or set SAMPLEKIT_API_KEY)"
                                  if not api_key else f"{url} refused the API key given with --api-key") from None
        raise ScreenshotError(f"{url}/v1/models answered HTTP {exc.code}: is it a samplekit server?") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ScreenshotError(f"no samplekit server answers at {url} ({reason})") from None


if __name__ == "__main__":
    sys.exit(main())
