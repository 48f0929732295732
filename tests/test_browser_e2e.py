"""End to end in a real browser: upload a folder, train, look at the results, try a picture.

Starts ``streamlit run app.py`` on a free port (runs, workspace and caches in a temporary folder)
and drives Debian's Chromium headless through Playwright. Screenshots of every page go to
``test-artifacts/`` (git-ignored) so a person can look at them.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from browser_support import CHROMIUM, browser_dirs, nav as _nav, shot as _shot, streamlit_server
from browser_support import wait_idle as _wait_idle

CLASSES = ("bag", "sandal", "trouser")
PER_CLASS = 12

pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict:
    return browser_dirs(tmp_path_factory, "e2e")


@pytest.fixture
def server(dirs):
    with streamlit_server(dirs) as srv:
        yield srv


@pytest.fixture(scope="module")
def picture_folder(tmp_path_factory) -> Path:
    """3 classes x 12 pictures from the bundled sample, as a user's folder ``my-clothes/<class>/``."""
    from tl_core.data.sample import sample_dir

    root = tmp_path_factory.mktemp("upload") / "my-clothes"
    for c in CLASSES:
        (root / c).mkdir(parents=True)
        for f in sorted((sample_dir() / c).iterdir())[:PER_CLASS]:
            shutil.copy(f, root / c / f.name)
    return root


def test_upload_train_results_try(server, picture_folder):
    from playwright.sync_api import expect, sync_playwright

    t0 = time.time()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            page.goto(server["url"])
            expect(page.get_by_text("Transfer Lab", exact=False).first).to_be_visible(timeout=90_000)
            expect(page.get_by_role("button", name="Try it with the sample data")).to_be_visible()
            expect(page.locator('[data-testid="stGraphVizChart"] svg').first).to_be_attached(timeout=30_000)
            _wait_idle(page)
            _shot(page, "0_home")

            # Data: drag in a folder (Playwright fills the webkitdirectory input with the folder).
            _nav(page, "Data")
            folder_input = page.locator('input[type="file"][webkitdirectory]')
            expect(folder_input).to_have_count(1, timeout=60_000)
            folder_input.set_input_files(str(picture_folder))
            expect(page.get_by_text(f"Saved {len(CLASSES) * PER_CLASS} files")).to_be_visible(timeout=90_000)
            expect(page.get_by_text("What is in your data")).to_be_visible(timeout=60_000)
            for c in CLASSES:
                expect(page.get_by_text(f"{c} · {PER_CLASS} pictures")).to_be_visible(timeout=60_000)
            expect(page.locator('[data-testid="stPlotlyChart"]').first).to_be_visible()
            _wait_idle(page)
            _shot(page, "1_data")

            # Layers: keep the default preset, look at the drawing and the cost.
            _nav(page, "Layers")
            expect(page.get_by_text("Parameters that learn")).to_be_visible(timeout=90_000)
            _wait_idle(page, 120_000)
            _shot(page, "3_layers")

            # Train: two epochs, Start, wait for the live curves.
            _nav(page, "Train")
            epochs = page.get_by_role("spinbutton", name="Epochs (passes over your pictures)")
            expect(epochs).to_be_visible(timeout=60_000)
            epochs.fill("2")
            epochs.press("Enter")
            _wait_idle(page)
            expect(epochs).to_have_value("2")
            _wait_idle(page)
            page.get_by_role("button", name="Start training").click()
            # points on the live chart: plotly draws markers as paths inside .scatterlayer
            page.wait_for_function(
                "() => document.querySelectorAll('[data-testid=\"stPlotlyChart\"] .scatterlayer .trace .points path')"
                ".length > 0", timeout=150_000)
            expect(page.get_by_text("Training finished")).to_be_visible(timeout=150_000)
            _wait_idle(page)
            _shot(page, "4_train")

            # Results: the confusion matrix.
            _nav(page, "Results")
            expect(page.get_by_text("Confusion matrix", exact=True)).to_be_visible(timeout=90_000)
            expect(page.locator('[data-testid="stPlotlyChart"] .heatmaplayer, '
                                '[data-testid="stPlotlyChart"] .hm').first).to_be_attached(timeout=90_000)
            expect(page.get_by_text("Accuracy").first).to_be_visible()
            _wait_idle(page, 120_000)
            # click the (sandal, sandal) cell: its pictures are listed below the matrix
            chart = page.locator('[data-testid="stPlotlyChart"]').filter(
                has=page.locator(".heatmaplayer")).first
            drag = chart.locator(".nsewdrag").first
            drag.scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            box = drag.bounding_box()
            row = col = CLASSES.index("sandal")
            n = len(CLASSES)
            page.mouse.click(box["x"] + (col + 0.5) * box["width"] / n, box["y"] + (row + 0.5) * box["height"] / n)
            expect(page.get_by_text("that the model called sandal (right)", exact=False)).to_be_visible(
                timeout=60_000)
            _wait_idle(page, 120_000)
            expect(page.get_by_text("Where it looked", exact=False)).to_be_visible(timeout=120_000)
            _wait_idle(page, 120_000)
            _shot(page, "5_results")

            # Try: one picture through the uploader.
            _nav(page, "Try & export")
            expect(page.get_by_text("Try it", exact=True)).to_be_visible(timeout=90_000)
            photo = sorted((picture_folder / "sandal").iterdir())[-1]
            page.locator('input[type="file"]:not([webkitdirectory])').first.set_input_files(str(photo))
            expect(page.get_by_text("sure").first).to_be_visible(timeout=90_000)
            expect(page.get_by_text("Red: the parts", exact=False)).to_be_visible(timeout=120_000)
            _wait_idle(page, 120_000)
            _shot(page, "6_try")
            # take the model home: the bundle is made on click and arrives as a zip
            with page.expect_download(timeout=120_000) as dl:
                page.get_by_role("button", name="Download the bundle (.zip)").click()
            bundle = Path(dl.value.path())
            import zipfile

            with zipfile.ZipFile(bundle) as zf:
                names = zf.namelist()
            assert any(n.endswith("model.safetensors") for n in names), names
            assert any(n.endswith("labels.json") for n in names), names

            # Model page last: it times every model in the background (kept away from the training).
            _nav(page, "Model")
            expect(page.get_by_text("Chosen:")).to_be_visible(timeout=60_000)
            _wait_idle(page)
            _shot(page, "2_model")
            exceptions = page.locator('[data-testid="stException"]')
            assert exceptions.count() == 0
        except Exception:
            _shot(page, "failure")
            print(Path(server["log"]).read_text()[-5000:])
            raise
        finally:
            browser.close()
    assert time.time() - t0 < 300


def test_restart_then_open_a_page_by_its_url(dirs):
    """After a server restart, a bookmarked page opens inside the app (navigation, no "page not
    found") and the runs trained before the restart are still listed."""
    from playwright.sync_api import expect, sync_playwright

    with streamlit_server(dirs) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(srv["url"] + "/Train")  # the very first request of this server
            expect(page.get_by_role("heading", name="Train")).to_be_visible(timeout=90_000)
            expect(page.locator('[data-testid="stSidebarNav"] a', has_text="Home")).to_be_visible()
            _wait_idle(page)
            assert "Page not found" not in page.locator("body").inner_text()
            if any(dirs["runs"].glob("*/config.json")):  # the first test trained one
                expect(page.get_by_text("All runs")).to_be_visible()
                expect(page.get_by_text("Training finished").first).to_be_visible()
            _shot(page, "7_train_after_restart")
        finally:
            browser.close()
