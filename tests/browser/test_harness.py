"""The harness checked on tqdm's widget bar, which main already shows: it proves the server,
browser, run-all and selectors work before nbpool's own widgets exist."""

from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

WIDGET_TIMEOUT_MS = 15_000


def test_harness_sees_tqdm_bar_states(lab):
    from playwright.sync_api import expect

    page = lab.run_notebook("harness_tqdm.ipynb")
    bars = page.locator(".nbpool-progress")
    expect(bars).to_have_count(2, timeout=WIDGET_TIMEOUT_MS)
    ok, failed = bars.nth(0), bars.nth(1)
    expect(ok.locator(".widget-hprogress .progress-bar")).to_have_class(
        re.compile(r"\bprogress-bar-success\b"), timeout=WIDGET_TIMEOUT_MS)
    expect(ok).to_contain_text("20/20")
    expect(failed.locator(".widget-hprogress .progress-bar")).to_have_class(
        re.compile(r"\bprogress-bar-danger\b"), timeout=WIDGET_TIMEOUT_MS)
    expect(failed).to_contain_text("7/20")
    expect(lab.cell_outputs(2)).to_contain_text("ValueError: boom at 7")
    lab.screenshot("page")
