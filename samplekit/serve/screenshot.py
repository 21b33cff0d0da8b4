"""Take a screenshot of the playground: ``python -m samplekit.serve.screenshot out.png``.

Starts ``samplekit serve`` on the demo model (or uses ``--url`` of a running server), runs two
chains side by side in headless Chromium, clicks a token to open its per-step view, and saves a
PNG. Needs the serve extra, selenium, and Debian's chromium + chromium-driver.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samplekit.serve.screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the PNG to write")
    parser.add_argument("--url", help="a running server (default: start one on the demo model)")
    parser.add_argument("--api-key", help="the server's API key, if it has one")
    parser.add_argument("--prompt", default="ROMEO:")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    from samplekit.serve.browser import open_browser, run_playground
    from samplekit.serve.local import LocalServer

    server = None if args.url else LocalServer().start()
    url = args.url or server.url
    driver = open_browser()
    try:
        shown = run_playground(driver, url, prompt=args.prompt, seed=args.seed, api_key=args.api_key)
        driver.set_window_size(1400, max(1100, driver.execute_script("return document.body.scrollHeight") + 40))
        driver.save_screenshot(args.out)
    finally:
        driver.quit()
        if server is not None:
            server.stop()
    if shown["message"]:
        print(f"the page said: {shown['message']}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{c}: {v['tokens']} tokens" for c, v in shown["columns"].items())
    print(f"{args.out}: {counts}; detail stages {shown.get('detail', {}).get('stages')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
