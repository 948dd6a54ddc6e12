"""nbpool's widgets as a person sees them in JupyterLab: the progress bar's end states and the
worker table, found by the CSS classes the widgets promise (issue 3)."""

from __future__ import annotations

import re

import pytest

WIDGET_TIMEOUT_MS = 15_000

pytestmark = [pytest.mark.browser, pytest.mark.widgets, pytest.mark.timeout(240)]


def _bar(page):
    from playwright.sync_api import expect

    progress = page.locator(".nbpool-progress")
    expect(progress).to_have_count(1, timeout=WIDGET_TIMEOUT_MS)
    return progress, progress.locator(".nbpool-progress-fill")


def _rgb(locator) -> tuple[int, ...]:
    """The colour the bar is drawn in, as the browser computed it."""
    text = locator.evaluate("e => getComputedStyle(e).backgroundColor")
    return tuple(int(v) for v in re.findall(r"\d+", text)[:3])


def test_progress_bar_ends_green_at_total(lab):
    from playwright.sync_api import expect

    page = lab.run_notebook("progress_success.ipynb")
    progress, bar = _bar(page)
    expect(bar).to_have_class(re.compile(r"\bnbpool-progress-success\b"), timeout=WIDGET_TIMEOUT_MS)
    expect(progress).to_contain_text("20/20")
    red, green, blue = _rgb(bar)
    assert green > red and green > blue, (red, green, blue)
    assert bar.evaluate("e => e.getBoundingClientRect().width") == bar.evaluate(
        "e => e.parentElement.getBoundingClientRect().width")  # full
    lab.screenshot("page")
    lab.screenshot("progress", progress)


def test_progress_bar_turns_red_on_error(lab):
    from playwright.sync_api import expect

    page = lab.run_notebook("progress_error.ipynb")
    progress, bar = _bar(page)
    expect(bar).to_have_class(re.compile(r"\bnbpool-progress-danger\b"), timeout=WIDGET_TIMEOUT_MS)
    expect(bar).not_to_have_class(re.compile(r"\bnbpool-progress-success\b"))
    red, green, blue = _rgb(bar)
    assert red > green and red > blue, (red, green, blue)
    expect(lab.cell_outputs(1)).to_contain_text("boom at 7")
    lab.screenshot("page")
    lab.screenshot("progress", progress)


def test_show_workers_has_a_row_per_worker(lab):
    from playwright.sync_api import expect

    page = lab.run_notebook("inspect.ipynb")
    expect(page.locator(".nbpool-insights")).to_have_count(1, timeout=WIDGET_TIMEOUT_MS)
    workers = page.locator(".nbpool-workers")
    expect(workers).to_have_count(1, timeout=WIDGET_TIMEOUT_MS)
    expect(workers.locator(".nbpool-worker-row")).to_have_count(2, timeout=WIDGET_TIMEOUT_MS)
    lab.screenshot("page")
