"""The Lab page in a real browser at 1024x768 (issue 14): start the data-size experiment on the bundled
sample, watch its bar with the time left, see the conclusion and the chart, then the same results in
presentation mode: bigger type, the chart no taller than the screen, nothing cut off, and no request
leaving the machine. Screenshots go to ``test-artifacts/lab_*.png``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from browser_support import (CHROMIUM, CUT_OFF_JS, browser_dirs, nav, requests_leaving, shot, streamlit_server,
                             wait_idle)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(1200)]

SESSION = "lab-browser"
BASE_FONT_JS = r"""
() => parseFloat(getComputedStyle(document.querySelector('[data-testid="stMainBlockContainer"] p')
                                  || document.body).fontSize)
"""


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict:
    from tl_core.data.sample import sample_dir

    found = browser_dirs(tmp_path_factory, "lab")
    # a cache of its own: the experiment computes its features while the browser watches (with the shared
    # cache it could end before its first second, too soon to show the time left)
    found["cache"] = found["tmp"] / "cache"
    session = found["workspace"] / "sessions" / SESSION
    session.mkdir(parents=True, exist_ok=True)
    (session / "ui_state.json").write_text(json.dumps({"data_root": str(sample_dir()), "data_source": "sample",
                                                       "val_fraction": 0.2}), encoding="utf-8")
    return found


def _number(page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    wait_idle(page)


def test_lab_data_size_in_the_browser_at_1024_and_in_presentation_mode(dirs):
    from playwright.sync_api import expect, sync_playwright

    with streamlit_server(dirs) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1024, "height": 768})
        page.set_default_timeout(60_000)
        outside = requests_leaving(page, srv["url"])
        try:
            page.goto(f"{srv['url']}/?session={SESSION}")
            expect(page.get_by_role("heading", name="Transfer Lab", exact=True).first).to_be_visible(timeout=90_000)
            nav(page, "Lab")
            expect(page.get_by_role("heading", name="Lab", exact=True).first).to_be_visible(timeout=90_000)
            wait_idle(page)

            page.get_by_text("How many pictures do I need?", exact=True).click()
            wait_idle(page)
            _number(page, "Picks per share", 1)
            page.get_by_role("combobox", name="Picture size the model sees").click()   # the model's own 224 px: a few seconds
            page.get_by_role("option", name="the model's own").click()
            wait_idle(page)
            _number(page, "Passes over the pictures (epochs)", 2)
            page.get_by_role("button", name="Start the experiment").click()
            bar = page.locator('[data-testid="stProgress"]').first
            expect(bar).to_be_visible(timeout=120_000)
            expect(page.get_by_role("button", name="Stop")).to_be_visible()
            expect(page.get_by_text("left ·", exact=False).first).to_be_visible(timeout=300_000)  # the time left
            shot(page, "lab_1024_running")

            expect(page.get_by_text("pictures per category the model got", exact=False).first).to_be_visible(
                timeout=900_000)
            wait_idle(page, 120_000)
            expect(page.locator('[data-testid="stPlotlyChart"]').first).to_be_visible()
            page.wait_for_timeout(800)
            cut = page.evaluate(CUT_OFF_JS)
            shot(page, "lab_1024_results")
            assert not cut, f"cut off at 1024x768: {cut}"

            normal = page.evaluate(BASE_FONT_JS)
            page.locator('[data-testid="stSidebar"]').get_by_text("Presentation mode", exact=False).click()
            wait_idle(page)
            page.wait_for_timeout(1000)
            assert page.evaluate(BASE_FONT_JS) >= normal * 1.15
            chart = page.locator('[data-testid="stPlotlyChart"]').first
            chart.scroll_into_view_if_needed()
            box = chart.bounding_box()
            assert box and box["height"] <= 768, f"one chart per screen: {box}"
            cut = page.evaluate(CUT_OFF_JS)
            shot(page, "lab_1024_presentation")
            assert not cut, f"cut off in presentation mode: {cut}"
        except Exception:
            shot(page, "lab_failure")
            print(Path(srv["log"]).read_text()[-5000:])
            raise
        finally:
            browser.close()
    assert not outside, outside
