"""A screenshot of the assistant page for the README: `taskfit serve` on the embedded model with the NLPCC KB subset,
two questions asked in headless Chromium, one rated, sources open. From the repository root with the venv active:

    python benchmarks/serve_screenshot.py [--out benchmarks/results/serve_page.png]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from serving import free_port, start_process  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nlpcc2016_kbqa"
QUESTIONS = ["空气干燥的外文名是什么？", "What is the other name of 空气干燥?"]


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/serve_page.png")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        server = start_process(["--task", "nlpcc_kbqa", "--kb", str(DATA / "kb_subset.jsonl"), "--db",
                                f"{folder}/a.sqlite"], port)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1000, "height": 900})
                page.goto(f"http://127.0.0.1:{port}/")
                for i, question in enumerate(QUESTIONS):
                    page.fill("#question", question)
                    page.click("#ask button[type=submit]")
                    page.locator("li.turn").nth(i).locator(".feedback").wait_for(timeout=120_000)
                first = page.locator("li.turn").nth(0)
                first.locator("details.sources summary").click()
                first.locator("button.up").click()
                first.locator(".note", has_text="Saved").wait_for()
                page.screenshot(path=args.out, full_page=True)
                browser.close()
        finally:
            server.kill()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
