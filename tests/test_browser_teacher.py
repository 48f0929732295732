"""The teacher's walk-through (issue 11) in a real browser: a folder of real photos with its own train/
and val/ folders, dragged in, trained twice, compared, saved as a project and opened on "another
computer" (a second server with its own folders), then every page looked at again on a 1024x768
projector in the same browser session.

Asserted on the way: the split numbers the folder really gives (80 to learn from, 50 to check with),
one epoch number on the Train page while it trains, the runs table's contents, the compare view,
the project round trip (same runs, same accuracy), nothing cut off at either size, and no request
leaving the machine. Screenshots go to ``test-artifacts/teacher_*.png``: look at them.
"""
from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from browser_support import CHROMIUM, CUT_OFF_JS, browser_dirs, nav, shot, streamlit_server, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

PETS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "pets" / "few"
TRAIN_PER_CLASS, VAL_PER_CLASS = 40, 25
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
LOCAL_SCHEMES = {"data", "blob", "about", "chrome-extension", "devtools"}

# Every epoch number the Train page shows at one moment: the bar's text and the "Epochs done" metric
# (and the sidebar's bar, which must not be there on this page). Not the faded leftovers of the
# previous draw that Streamlit keeps on screen until their replacement arrives (data-stale).
EPOCHS_SHOWN_JS = r"""
() => {
  const fresh = el => !el.closest('[data-stale="true"]');
  const main = document.querySelector('[data-testid="stMain"]');
  const bars = [...main.querySelectorAll('[data-testid="stProgress"]')].filter(fresh).map(e => e.innerText);
  const metrics = [...main.querySelectorAll('[data-testid="stMetric"]')].filter(fresh)
    .filter(m => /Epochs done/.test(m.innerText)).map(m => m.querySelector('[data-testid="stMetricValue"]').innerText);
  const sidebar = [...document.querySelectorAll('[data-testid="stSidebar"] [data-testid="stProgress"]')]
    .filter(fresh).map(e => e.innerText);
  return {bars, metrics, sidebar};
}
"""

# What the runs table says: glide's grid keeps an accessible copy of its cells in the page.
TABLE_TEXT_JS = r"""
(first) => {
  for (const table of document.querySelectorAll('[data-testid="stDataFrame"]')) {
    const head = [...table.querySelectorAll('th, [role="columnheader"]')].map(h => h.innerText.trim());
    if (head[0] !== first && head[1] !== first) continue;
    const rows = [...table.querySelectorAll('tbody tr, [role="row"]')]
      .map(r => [...r.querySelectorAll('td, [role="gridcell"]')].map(c => c.innerText.trim()))
      .filter(r => r.length);
    return {head, rows};
  }
  return null;
}
"""


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in LOCAL_SCHEMES:
        return True
    return parts.scheme in {"http", "https", "ws", "wss"} and (parts.hostname or "") in LOCAL_HOSTS


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory) -> Path:
    """cats_and_dogs/{train,val}/{cat,dog}: real colour photos, 40 + 40 to learn from, 25 + 25 to check."""
    if not PETS.is_dir():
        pytest.skip(f"the pets photos are not at {PETS}")
    root = tmp_path_factory.mktemp("teacher") / "cats_and_dogs"
    for side, source, count in (("train", "train", TRAIN_PER_CLASS), ("val", "test", VAL_PER_CLASS)):
        for label in ("cat", "dog"):
            dest = root / side / label
            dest.mkdir(parents=True)
            for f in sorted((PETS / source / label).iterdir())[:count]:
                shutil.copy(f, dest / f.name)
    return root


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict:
    return browser_dirs(tmp_path_factory, "teacher-a")


@pytest.fixture(scope="module")
def other_computer(tmp_path_factory) -> dict:
    return browser_dirs(tmp_path_factory, "teacher-b")


def _heading(page, name: str, timeout: float = 90_000) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_role("heading", name=name, exact=True).first).to_be_visible(timeout=timeout)


def _look(page, name: str, problems: dict) -> None:
    """Nothing cut off on this page at this size, no error box; a screenshot kept."""
    wait_idle(page, 120_000)
    page.wait_for_timeout(600)  # plotly and the grid settle their size
    cut = page.evaluate(CUT_OFF_JS)
    if cut:
        problems[name] = cut
    assert page.locator('[data-testid="stException"]').count() == 0, name
    shot(page, f"teacher_{name}")


def _metric(page, label: str) -> str:
    metric = page.locator('[data-testid="stMain"] [data-testid="stMetric"]', has_text=label).first
    return metric.locator('[data-testid="stMetricValue"]').inner_text().strip()


def _train(page, epochs: int) -> list[dict]:
    """Set the epochs, press Start, and watch the page until the run ends; every moment's epoch numbers."""
    from playwright.sync_api import expect

    field = page.get_by_role("spinbutton", name="Epochs (passes over your pictures)")
    field.fill(str(epochs))
    field.press("Enter")
    wait_idle(page)
    runs_before = len(page.evaluate(TABLE_TEXT_JS, "When")["rows"]) if page.evaluate(TABLE_TEXT_JS, "When") else 0
    start = page.get_by_role("button", name="Start training")
    start.click()
    seen = []
    deadline = time.time() + 400
    while time.time() < deadline:  # until the new run is in the table, finished, and Start is back
        seen.append(page.evaluate(EPOCHS_SHOWN_JS))
        table = page.evaluate(TABLE_TEXT_JS, "When")
        if (table and len(table["rows"]) > runs_before and start.is_enabled()
                and page.get_by_text("Training finished", exact=False).count()):
            break
        page.wait_for_timeout(300)
    expect(page.get_by_text("Training finished", exact=False).first).to_be_visible(timeout=5_000)
    wait_idle(page, 120_000)
    return seen


def _one_epoch_number(moments: list[dict]) -> None:
    """At every moment the bar and the metric agree, and the sidebar shows no second clock."""
    shown = 0
    for moment in moments:
        numbers = set()
        for text in moment["bars"]:
            numbers |= {int(m.group(1)) for m in re.finditer(r"(\d+) of \d+ epochs", text)}
        for text in moment["metrics"]:
            numbers |= {int(m.group(1)) for m in re.finditer(r"(\d+) / \d+", text)}
        assert len(numbers) <= 1, f"two epoch numbers at once: {moment}"
        assert not moment["sidebar"], f"a second progress bar in the sidebar on the Train page: {moment}"
        shown += bool(numbers)
    assert shown, f"no epoch number was ever shown: {moments[-3:]}"


def _runs_table(page) -> dict:
    page.wait_for_function(TABLE_TEXT_JS, arg="When", timeout=60_000)  # the grid draws after the page
    table = page.evaluate(TABLE_TEXT_JS, "When")
    assert table is not None, "no runs table"
    return table


def test_teacher_path_train_val_photos_two_runs_compare_project_round_trip(dirs, other_computer, teacher_folder):
    from playwright.sync_api import expect, sync_playwright

    requests: list[str] = []
    problems: dict[str, list[str]] = {}
    project_file = dirs["tmp"] / "cats_and_dogs.tlproj"
    n_train, n_val = 2 * TRAIN_PER_CLASS, 2 * VAL_PER_CLASS
    split_words = f"{n_train} pictures to learn from, {n_val} to check with"
    with streamlit_server(dirs) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
        context.on("request", lambda r: requests.append(r.url))
        page = context.new_page()
        page.set_default_timeout(60_000)
        try:
            page.goto(srv["url"])
            _heading(page, "Transfer Lab")
            _look(page, "1400_0_home", problems)
            session = parse_qs(urlsplit(page.url).query).get("session", [None])[0]
            assert session, f"the address names no browser session: {page.url}"

            # Data: drag in the folder with its own train/ and val/
            nav(page, "Data")
            _heading(page, "Data")
            page.locator('input[type="file"][webkitdirectory]').set_input_files(str(teacher_folder))
            expect(page.get_by_text(f"Saved {n_train + n_val} files")).to_be_visible(timeout=120_000)
            expect(page.get_by_text("What is in your data")).to_be_visible(timeout=120_000)
            expect(page.get_by_text(split_words).first).to_be_visible(timeout=60_000)
            expect(page.get_by_text("own train/ and val/ folders", exact=False).first).to_be_visible()
            _look(page, "1400_1_data", problems)

            nav(page, "Model")
            _heading(page, "Model")
            expect(page.get_by_text("Chosen:")).to_be_visible(timeout=60_000)
            _look(page, "1400_2_model", problems)
            nav(page, "Layers")
            _heading(page, "Layers")
            _look(page, "1400_3_layers", problems)

            # Train twice (3 passes, then 1), one epoch number on screen all along
            nav(page, "Train")
            _heading(page, "Train")
            expect(page.get_by_text(split_words).first).to_be_visible(timeout=60_000)
            _one_epoch_number(_train(page, epochs=3))
            first_accuracy = _metric(page, "Best accuracy")
            assert re.fullmatch(r"\d+\.\d%", first_accuracy), first_accuracy
            _one_epoch_number(_train(page, epochs=1))
            latest_accuracy = _metric(page, "Best accuracy")
            _look(page, "1400_4_train", problems)

            table = _runs_table(page)
            assert table["head"][:7] == ["When", "Data", "Model", "Layers", "Best accuracy", "Took", "State"], table
            assert len(table["rows"]) == 2, table
            for row in table["rows"]:
                text = " | ".join(row)
                assert "cats_and_dogs" in text and "own val/ folder" in text, text
                assert "EfficientNet-Lite0" in text and "new classifier only" in text, text
                assert re.search(r"\d+\.\d% \(\d+-\d+%\)", text), f"accuracy without its range: {text}"
                assert re.search(r"\b\d+ s\b|under a second|\d+ min", text), f"no time taken: {text}"
                assert "finished" in text, text

            # Compare: both runs picked, the verdict, the ranges, what was set differently
            expect(page.get_by_role("heading", name="Compare runs")).to_be_visible()
            verdict = page.locator('[data-testid="stAlert"]', has_text=re.compile(r"better|cannot|tell|same"))
            expect(verdict.first).to_be_visible()
            expect(page.get_by_text("What was set differently")).to_be_visible()
            assert page.evaluate(TABLE_TEXT_JS, "Run") is not None, "no score table in the compare view"
            expect(page.locator('[data-testid="stPlotlyChart"]').last).to_be_visible()

            # Results says which pictures it was checked on
            nav(page, "Results")
            _heading(page, "Results")
            expect(page.get_by_text(f"Checked on {n_val} pictures", exact=False)).to_be_visible(timeout=120_000)
            expect(page.get_by_text("val/", exact=False).first).to_be_visible()
            _look(page, "1400_5_results", problems)

            # Save the project from Home
            nav(page, "Home")
            _heading(page, "Transfer Lab")
            with page.expect_download(timeout=180_000) as download:
                page.get_by_role("button", name="Save this project").click()
            download.value.save_as(project_file)
            assert project_file.stat().st_size > 100_000

            # The same browser session on a projector: every page again, at 1024x768
            small = context.new_page()
            small.set_viewport_size({"width": 1024, "height": 768})
            small.goto(f"{srv['url']}/?session={session}")
            _heading(small, "Transfer Lab")
            assert not small.get_by_role("button", name="Continue where you left off").count(), \
                "the session's own choices were not found again from its address"
            _look(small, "1024_0_home", problems)
            for label, name in [("Data", "1_data"), ("Model", "2_model"), ("Layers", "3_layers"),
                                ("Train", "4_train"), ("Results", "5_results"), ("Try & export", "6_try")]:
                nav(small, label)
                _heading(small, label)
                if name == "1_data":
                    expect(small.get_by_text(split_words).first).to_be_visible(timeout=90_000)
                if name == "5_results":
                    expect(small.get_by_text("Confusion matrix", exact=True)).to_be_visible(timeout=90_000)
                _look(small, f"1024_{name}", problems)
            small.close()
        except Exception:
            shot(page, "teacher_failure")
            print(Path(srv["log"]).read_text()[-5000:])
            raise
        finally:
            browser.close()

    # "Another computer": a fresh server with its own runs and workspace opens the project file
    with streamlit_server(other_computer) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.on("request", lambda r: requests.append(r.url))
        page = context.new_page()
        page.set_default_timeout(60_000)
        try:
            page.goto(srv["url"])
            _heading(page, "Transfer Lab")
            page.locator('input[type="file"]').last.set_input_files(str(project_file))
            expect(page.get_by_text("2 run(s)", exact=False)).to_be_visible(timeout=180_000)
            nav(page, "Train")
            _heading(page, "Train")
            wait_idle(page, 120_000)
            table = _runs_table(page)
            assert len(table["rows"]) == 2, table
            # the pictures keep their folder's name on the other computer too
            assert all("cats_and_dogs · own val/ folder" in " ".join(row) for row in table["rows"]), table
            opened_accuracy = _metric(page, "Best accuracy")
            shot(page, "teacher_other_computer_train")
            assert opened_accuracy == latest_accuracy, (opened_accuracy, latest_accuracy)
        except Exception:
            shot(page, "teacher_other_computer_failure")
            print(Path(srv["log"]).read_text()[-5000:])
            raise
        finally:
            browser.close()

    assert not problems, "cut off:\n" + "\n".join(f"{k}: {v}" for k, v in problems.items())
    outside = sorted({u for u in requests if not is_local(u)})
    assert not outside, f"requests that left the machine: {outside}"
    print(f"teacher path: first run {first_accuracy}, second run {latest_accuracy}, opened elsewhere "
          f"{opened_accuracy}")
