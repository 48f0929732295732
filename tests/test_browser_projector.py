"""Projector-ready (issue 11): every page at 1024x768 and at 1400x900 in a real browser, with nothing
cut off, the "Next" actions as real buttons, and a presentation toggle that makes the type bigger.

One tiny run is trained first through the public API (1 epoch, 64 px pictures) into the server's
runs folder, so Results and Try have something to draw. Screenshots go to ``test-artifacts/``
(``proj_<width>_<page>.png``): look at them.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from browser_support import CHROMIUM, browser_dirs, nav as _nav, shot as _shot, streamlit_server
from browser_support import CUT_OFF_JS, train_sample_run, wait_idle as _wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

VIEWPORTS = [(1024, 768), (1400, 900)]
# (screenshot name, sidebar label, heading); the Model page last: it times every model in the background
PAGES = [("0_home", None, "Transfer Lab"), ("1_data", "Data", "Data"), ("3_layers", "Layers", "Layers"),
         ("4_train", "Train", "Train"), ("5_results", "Results", "Results"), ("6_try", "Try & export", "Try & export"),
         ("2_model", "Model", "Model")]

# A "Next: ..." action must be a real button: a <button>, or a link drawn as one (a border or a
# filled background and some padding), not a small grey text link.
NEXT_ACTIONS_JS = r"""
() => [...document.querySelectorAll('a, button')]
  .filter(el => /^\s*(arrow_forward)?\s*Next\b/.test(el.innerText || ''))
  .filter(el => el.getBoundingClientRect().width > 0)
  .map(el => {
    const cs = getComputedStyle(el);
    const filled = cs.backgroundColor !== 'rgba(0, 0, 0, 0)' && cs.backgroundColor !== 'transparent';
    const bordered = parseFloat(cs.borderTopWidth) >= 1 && cs.borderTopStyle !== 'none';
    return {text: el.innerText.trim(), tag: el.tagName.toLowerCase(), height: el.getBoundingClientRect().height,
            button: el.tagName === 'BUTTON' || ((filled || bordered) && parseFloat(cs.paddingLeft) >= 8)};
  })
"""

BASE_FONT_JS = r"""
() => parseFloat(getComputedStyle(document.querySelector('[data-testid="stMainBlockContainer"] p')
                                  || document.body).fontSize)
"""


SESSION = "projector-test"   # the browser session (?session=...) whose choices trained_run writes


def _url(srv: dict) -> str:
    return f"{srv['url']}/?session={SESSION}"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict:
    return browser_dirs(tmp_path_factory, "projector")


@pytest.fixture(scope="module")
def trained_run(dirs) -> Path:
    """One epoch at 64 px on the bundled sample, trained through the public API (a few seconds), and
    the sample chosen as the data, as the Home button leaves it."""
    from tl_core.data.sample import sample_dir

    run_dir = train_sample_run(dirs, image_size=64)
    session = dirs["workspace"] / "sessions" / SESSION
    session.mkdir(parents=True, exist_ok=True)
    (session / "ui_state.json").write_text(json.dumps(
        {"data_root": str(sample_dir()), "data_source": "sample", "val_fraction": 0.2, "model_name": None,
         "freeze": {"preset": "head", "frozen_groups": None, "layer_lr_decay": 1.0}, "train": {},
         "run_dir": str(run_dir)}), encoding="utf-8")
    return run_dir


@pytest.fixture(scope="module")
def wide_photo(dirs) -> Path:
    """A sample picture on a wide canvas (320 x 200): Grad-CAM must keep that shape."""
    from PIL import Image

    from tl_core.data.sample import sample_dir

    src = sorted((sample_dir() / "sandal").iterdir())[-1]
    canvas = Image.new("RGB", (320, 200), (235, 235, 235))
    canvas.paste(Image.open(src).convert("RGB").resize((200, 200)), (60, 0))
    path = dirs["tmp"] / "wide-sandal.png"
    buf = io.BytesIO()
    canvas.save(buf, "PNG")
    path.write_bytes(buf.getvalue())
    return path


def _open(page, url: str, label: str | None, heading: str) -> None:
    from playwright.sync_api import expect

    if label is None:
        page.goto(url)
    else:
        _nav(page, label)
    expect(page.get_by_role("heading", name=heading, exact=True).first).to_be_visible(timeout=90_000)
    _wait_idle(page, 120_000)


def _page_ready(page, name: str, photo: Path) -> None:
    """What each page needs before it is looked at: a picture on Try, the Grad-CAM on Results."""
    from playwright.sync_api import expect

    if name == "5_results":
        expect(page.get_by_text("Confusion matrix", exact=True)).to_be_visible(timeout=90_000)
        expect(page.get_by_text("Where it looked", exact=False)).to_be_visible(timeout=120_000)
    elif name == "6_try":
        page.locator('input[type="file"]:not([webkitdirectory])').first.set_input_files(str(photo))
        expect(page.get_by_text("sure").first).to_be_visible(timeout=90_000)
        expect(page.get_by_text("Red: the parts", exact=False)).to_be_visible(timeout=120_000)
    elif name == "2_model":
        expect(page.get_by_text("Chosen:")).to_be_visible(timeout=60_000)
    _wait_idle(page, 120_000)
    page.wait_for_timeout(800)  # plotly and images settle their size


def _heat_aspect(page) -> float | None:
    """Width / height of the Grad-CAM picture on the Try page (its caption says "Red: the parts")."""
    return page.evaluate(r"""
      () => { const figs = '[data-testid="stImage"], [data-testid="stImageContainer"]';
              for (const fig of document.querySelectorAll(figs)) {
                if (!/Red: the parts/.test(fig.innerText || '')) continue;
                const img = fig.querySelector('img');
                if (img && img.naturalHeight) return img.naturalWidth / img.naturalHeight; }
              return null; }""")


def test_every_page_fits_a_projector_and_a_laptop(dirs, trained_run, wide_photo):
    from playwright.sync_api import sync_playwright

    problems: dict[str, list[str]] = {}
    next_found: dict[str, list[dict]] = {}
    aspects: list[float | None] = []
    with streamlit_server(dirs) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            for width, height in VIEWPORTS:
                page = browser.new_page(viewport={"width": width, "height": height})
                page.set_default_timeout(60_000)
                try:
                    for name, label, heading in PAGES:
                        _open(page, _url(srv), label, heading)
                        _page_ready(page, name, wide_photo)
                        cut = page.evaluate(CUT_OFF_JS)
                        if cut:
                            problems[f"{width}x{height} {name}"] = cut
                        nexts = page.evaluate(NEXT_ACTIONS_JS)
                        if nexts:
                            next_found[f"{width} {name}"] = nexts
                        if name == "6_try":
                            aspects.append(_heat_aspect(page))
                        assert page.locator('[data-testid="stException"]').count() == 0, name
                        _shot(page, f"proj_{width}_{name}")
                    if width == 1024:
                        _home_primary_above_the_fold(page, _url(srv))
                except Exception:
                    _shot(page, f"proj_{width}_failure")
                    print(Path(srv["log"]).read_text()[-5000:])
                    raise
                finally:
                    page.close()
        finally:
            browser.close()

    assert not problems, "cut off:\n" + "\n".join(f"{k}: {v}" for k, v in problems.items())
    pages_with_next = {k.split(" ", 1)[1] for k in next_found}
    assert {"1_data", "2_model", "3_layers", "5_results"} <= pages_with_next, next_found
    not_buttons = {k: [n for n in v if not n["button"]] for k, v in next_found.items()}
    assert not any(not_buttons.values()), f"'Next' actions that are not buttons: {not_buttons}"
    assert aspects and all(a is not None and abs(a - 320 / 200) < 0.05 for a in aspects), aspects


def _home_primary_above_the_fold(page, url: str) -> None:
    """Home's "Try it with the sample data" is seen without scrolling at 1024x768."""
    from playwright.sync_api import expect

    page.goto(url)
    button = page.get_by_role("button", name="Try it with the sample data")
    expect(button).to_be_visible(timeout=90_000)
    _wait_idle(page)
    box = button.bounding_box()
    print(f"Home at 1024x768: 'Try it with the sample data' top at {box['y']:.0f} px")
    assert box["y"] + box["height"] <= 768, f"Home's primary button is below the fold at 1024x768: {box}"


def test_presentation_mode_bigger_type_remembered_and_nothing_cut_off(dirs, trained_run, wide_photo):
    """Switched on from the sidebar on Data: the type grows and the sidebar folds away; then the walk
    through the steps by the "Next" buttons alone (no sidebar), every page still big and whole."""
    from playwright.sync_api import expect, sync_playwright

    problems: dict[str, list[str]] = {}
    with streamlit_server(dirs) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1024, "height": 768})
        page.set_default_timeout(60_000)
        try:
            _open(page, _url(srv), None, "Transfer Lab")
            _open(page, _url(srv), "Data", "Data")
            normal = page.evaluate(BASE_FONT_JS)
            toggle = page.locator('[data-testid="stSidebar"]').get_by_text("Presentation mode", exact=False)
            expect(toggle).to_be_visible()
            toggle.click()
            _wait_idle(page)
            page.wait_for_timeout(800)
            big = page.evaluate(BASE_FONT_JS)
            assert big >= normal * 1.15, (normal, big)
            # the sidebar makes room for the pictures: folded away
            expect(page.locator('[data-testid="stSidebar"][aria-expanded="true"]')).to_have_count(0, timeout=10_000)
            for name, heading in [("1_data", "Model"), ("2_model", "Layers"), ("3_layers", "Train"),
                                  ("4_train", "Results"), ("5_results", "Try & export"), ("6_try", None)]:
                if name == "6_try":
                    _page_ready(page, name, wide_photo)
                cut = page.evaluate(CUT_OFF_JS)
                if cut:
                    problems[name] = cut
                assert page.evaluate(BASE_FONT_JS) >= normal * 1.15, f"{name}: presentation mode forgotten"
                _shot(page, f"proj_1024_presentation_{name}")
                if heading is None:
                    break
                page.locator('[data-testid="stMain"] button', has_text="Next").first.click()
                expect(page.get_by_role("heading", name=heading, exact=True).first).to_be_visible(timeout=90_000)
                _wait_idle(page, 120_000)
                if heading == "Results":
                    _page_ready(page, "5_results", wide_photo)
                page.wait_for_timeout(800)
        except Exception:
            _shot(page, "proj_presentation_failure")
            print(Path(srv["log"]).read_text()[-5000:])
            raise
        finally:
            browser.close()
    assert not problems, "cut off in presentation mode:\n" + "\n".join(f"{k}: {v}" for k, v in problems.items())
