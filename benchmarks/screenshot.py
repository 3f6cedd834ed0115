"""Open an HTML file in headless Chromium with every non-file request blocked, print the requests made, failed
requests and console errors, and save a full-page screenshot.

    .venv/bin/python benchmarks/screenshot.py REPORT.html OUT.png [--width 1280]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from playwright.sync_api import sync_playwright


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("html")
    parser.add_argument("png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=0, help="only the top N pixels (default: the whole page)")
    args = parser.parse_args()
    page_uri = Path(args.html).resolve().as_uri()
    requests, failed, errors = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": args.width, "height": args.height or 900})
        page.on("requestfailed", lambda r: failed.append(r.url))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))

        def only_files(route):
            requests.append(route.request.url)
            route.continue_() if route.request.url.startswith("file:") else route.abort()

        page.route("**/*", only_files)
        page.goto(page_uri)
        page.wait_for_load_state("load")
        page.screenshot(path=args.png, full_page=not args.height)
        browser.close()
    outside = [u for u in requests if not u.startswith("file:")]
    print(json.dumps({"requests": len(requests), "non_file_requests": outside, "failed_requests": failed,
                      "console_errors": errors}, indent=2))


if __name__ == "__main__":
    main()
