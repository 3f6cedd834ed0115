"""The report opened in a real headless Chromium (Debian's `chromium`, installed by `make setup`): nothing is
fetched, nothing errs, a `<script>` in a prediction or an input stays text, and Chinese text is drawn with real
glyphs. Without the browser these tests fail: the page is the product."""

from __future__ import annotations

from taskfit.report.render import build, to_html
from test_report import make_run, pattern

EVIL = "<script>window.__owned = 1; alert(1)</script>"
CHINESE = "电影很好看"
# draws two CJK characters and two unassigned code points (drawn as the same empty box) with the element's font
GLYPHS = """(id) => { const font = getComputedStyle(document.getElementById(id) || document.body).font;
  const draw = (ch) => { const c = document.createElement('canvas'); c.width = 48; c.height = 48;
    const x = c.getContext('2d'); x.font = font; x.fillText(ch, 4, 36); return c.toDataURL(); };
  return [draw('电'), draw('影'), draw('\\u0378'), draw('\\u0379')]; }"""


def test_report_page_fetches_nothing_runs_nothing_and_draws_chinese(browser, tmp_path):
    n = 60
    inputs = [f"{EVIL} {CHINESE} {i}" for i in range(n)]
    make_run(tmp_path / "zero", pattern(n, 0.5, 1), inputs=inputs, task="影评")
    make_run(tmp_path / "cot", pattern(n, 0.9, 2), inputs=inputs, task="影评", strategy="cot",
             predictions=[EVIL] * n)
    page_file = tmp_path / "report.html"
    page_file.write_text(to_html(build([tmp_path], n_resamples=200)), encoding="utf-8")

    page = browser.new_page()
    requests, failed, errors, dialogs = [], [], [], []
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    def only_files(route):
        requests.append(route.request.url)
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            route.abort()

    page.route("**/*", only_files)
    page.goto(page_file.as_uri())
    page.wait_for_load_state("load")
    assert requests == [page_file.as_uri()]
    assert failed == [] and errors == [] and dialogs == []
    assert page.evaluate("window.__owned") is None
    assert page.locator("td", has_text="<script>").count() >= 2  # shown as text, in the input and prediction cells
    assert page.locator("h2", has_text="影评").count() == 1
    drawn = page.evaluate(GLYPHS, "nonexistent")
    assert drawn[0] != drawn[1] and drawn[2] == drawn[3] and drawn[2] not in drawn[:2], \
        "Chinese characters are drawn as empty boxes: install a CJK font (make setup installs fonts-wqy-zenhei)"
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    page.close()
