"""Nothing leaves the machine, and Home shows its words at once (issue 11, "No blind waits").

Starts the app the way ``make run`` does (only address and port on the command line, so
``.streamlit/config.toml`` decides the file watcher and usage statistics), on a fresh server with
a run trained beforehand, and clicks through every page in Debian's Chromium while recording every
request the browser makes: each must go to this computer. Also times Home's first words on the
fresh server, in a first and a second tab. Screenshots go to ``test-artifacts/``.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from browser_support import CHROMIUM, browser_dirs, nav as _nav, shot as _shot, streamlit_server
from browser_support import train_sample_run, wait_idle as _wait_idle

ROOT = Path(__file__).resolve().parent.parent
HOME_WORDS_WITHIN_S = 15.0  # issue 11 asks for 5 s on a laptop; generous here because CI machines vary
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
LOCAL_SCHEMES = {"data", "blob", "about", "chrome-extension", "devtools"}

pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in LOCAL_SCHEMES:
        return True
    return parts.scheme in {"http", "https", "ws", "wss"} and (parts.hostname or "") in LOCAL_HOSTS


def test_is_local_tells_apart():
    assert is_local("http://127.0.0.1:8501/_stcore/health")
    assert is_local("ws://localhost:8501/_stcore/stream")
    assert is_local("data:image/png;base64,AAAA")
    assert is_local("blob:http://127.0.0.1:8501/0b1c")
    assert not is_local("https://fonts.googleapis.com/css?family=Source+Sans")
    assert not is_local("https://cdn.plot.ly/plotly-2.35.2.min.js")
    assert not is_local("http://127.0.0.1.example.com/x")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict:
    return browser_dirs(tmp_path_factory, "offline")


@pytest.fixture(scope="module")
def trained_run(dirs) -> Path:
    """One epoch on the bundled sample (offline weights), so Results and Try have something to draw."""
    return train_sample_run(dirs)


def inotify_watches(pid: int) -> int | None:
    """How many inotify watches the process holds (Linux), None where /proc cannot tell."""
    fdinfo = Path(f"/proc/{pid}/fdinfo")
    if not fdinfo.is_dir():
        return None
    count = 0
    for fd in fdinfo.iterdir():
        with contextlib.suppress(OSError):
            count += sum(1 for line in fd.read_text().splitlines() if line.startswith("inotify wd:"))
    return count


def _home_words_seconds(page, url: str) -> float:
    """Seconds from navigation to Home's heading being visible."""
    from playwright.sync_api import expect

    t0 = time.perf_counter()
    page.goto(url, wait_until="commit")
    expect(page.get_by_role("heading", name="Transfer Lab", exact=True)).to_be_visible(timeout=120_000)
    return time.perf_counter() - t0


def test_home_at_once_and_no_request_leaves_the_machine(dirs, trained_run):
    from playwright.sync_api import expect, sync_playwright

    requests: list[str] = []
    with streamlit_server(dirs, like_make_run=True) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.on("request", lambda r: requests.append(r.url))
        context.on("page", lambda pg: pg.on("websocket", lambda ws: requests.append(ws.url)))
        page = context.new_page()
        page.set_default_timeout(60_000)
        try:
            first = _home_words_seconds(page, srv["url"])
            print(f"Home words, first tab of a fresh server: {first:.2f} s")
            # the slow part (the hardware line) fills in after the words
            expect(page.get_by_role("heading", name="This computer", exact=True)).to_be_visible(timeout=90_000)
            expect(page.locator('[data-testid="stAlert"]').first).to_be_visible(timeout=90_000)
            expect(page.locator('[data-testid="stGraphVizChart"] svg').first).to_be_attached(timeout=30_000)
            _wait_idle(page)
            _shot(page, "offline_0_home")
            # config.toml turns the file watcher off: it watched uploads and runs too (inotify floods)
            assert inotify_watches(srv["pid"]) in (0, None)

            second_tab = context.new_page()
            second = _home_words_seconds(second_tab, srv["url"])
            _wait_idle(second_tab)
            second_tab.close()
            print(f"Home words, second tab: {second:.2f} s")

            # Data, with the sample
            page.get_by_role("button", name="Try it with the sample data").click()
            expect(page.get_by_role("heading", name="Data", exact=True)).to_be_visible(timeout=90_000)
            expect(page.get_by_text("What is in your data")).to_be_visible(timeout=90_000)
            _wait_idle(page, 120_000)
            for label, heading in [("Model", "Model"), ("Layers", "Layers"), ("Train", "Train"),
                                   ("Results", "Results")]:
                _nav(page, label)
                expect(page.get_by_role("heading", name=heading, exact=True).first).to_be_visible(timeout=90_000)
                _wait_idle(page, 120_000)
            expect(page.get_by_text("Confusion matrix", exact=True)).to_be_visible(timeout=90_000)

            _nav(page, "Try & export")
            expect(page.get_by_text("Try it", exact=True)).to_be_visible(timeout=90_000)
            photo = sorted((ROOT / "assets" / "sample" / "sandal").iterdir())[-1]
            page.locator('input[type="file"]:not([webkitdirectory])').first.set_input_files(str(photo))
            expect(page.get_by_text("sure").first).to_be_visible(timeout=90_000)
            _wait_idle(page, 120_000)
            _shot(page, "offline_6_try")
            assert page.locator('[data-testid="stException"]').count() == 0
        except Exception:
            _shot(page, "offline_failure")
            print(Path(srv["log"]).read_text()[-5000:])
            raise
        finally:
            browser.close()
        log = Path(srv["log"]).read_text()

    outside = sorted({u for u in requests if not is_local(u)})
    assert requests and not outside, f"requests that leave the machine: {outside}"
    assert "Inotify" not in log, log[-3000:]
    assert first < HOME_WORDS_WITHIN_S and second < HOME_WORDS_WITHIN_S, (first, second)
