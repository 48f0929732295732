"""A classroom server in a real browser (issue 15), started the way `make classroom` starts it (the
launcher, with the class and teacher codes in the environment), at 1024x768:

- a browser without the code sees the code form and nothing else, whatever page its address names;
- two students (two browser contexts) enter the code with their names and train on the bundled sample:
  the second training waits in line (its place and start time shown) and starts by itself after the
  first; neither student's pages name the other's run, even with the other's run id;
- the teacher (the teacher code at the door) sees both students with their runs and shows one; the
  teacher page's address alone (copied off the projector, or after a reload) asks for the code again.

Screenshots go to ``test-artifacts/classroom_*.png``: look at them.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from browser_support import (CHROMIUM, CUT_OFF_JS, browser_dirs, free_port, nav, served, shot,
                             wait_idle)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

CODE, TEACHER = "K7P4QX", "TEACH234"
ADA, BEN, NOBODY, TEACHER_SESSION = "classroom-ada", "classroom-ben", "classroom-nobody", "classroom-teacher"
# The cells of the first table (glide's grid keeps an accessible copy of them in the page).
TABLE_CELLS_JS = r"""
() => [...(document.querySelector('[data-testid="stDataFrame"]') || document).querySelectorAll(
         'td, [role="gridcell"]')].map(c => c.innerText.trim())
"""


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict:
    from tl_core.data.sample import sample_dir

    found = browser_dirs(tmp_path_factory, "classroom")
    # two categories of the bundled sample, 15 pictures each: each training takes seconds, even with
    # nothing cached
    pictures = found["tmp"] / "pictures"
    for category in sorted(p for p in sample_dir().iterdir() if p.is_dir())[:2]:
        (pictures / category.name).mkdir(parents=True)
        for picture in sorted(category.iterdir())[:15]:
            shutil.copy(picture, pictures / category.name / picture.name)
    # the students' choices, as if each had picked those pictures (their sessions are not admitted:
    # nothing of them is reachable before the code). Ben: one quick epoch of the classifier. Ada, who
    # starts first, fine-tunes everything for as many epochs as the class allows and stops once Ben is
    # seen waiting: her run must still be training when Ben's page shows his place, however slow that
    # page is on a busy machine (a run of a few seconds, or of 2 epochs, sometimes ended first, and
    # Ben's then rightly started at once instead of waiting)
    for token, choices in ((ADA, {"train": {"epochs": 30}, "freeze": {"preset": "none"}}),
                           (BEN, {"train": {"epochs": 1}})):
        folder = found["workspace"] / "sessions" / token
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ui_state.json").write_text(json.dumps({"data_root": str(pictures), "data_source": "upload",
                                                          **choices}), encoding="utf-8")
    return found


@pytest.fixture(scope="module")
def server(dirs):
    env = dict(os.environ, TL_WORKSPACE=str(dirs["workspace"]), TL_RUNS_DIR=str(dirs["runs"]),
               TL_CACHE_DIR=str(dirs["cache"]), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
               TL_CLASSROOM_CODE=CODE, TL_TEACHER_CODE=TEACHER)
    port = free_port()
    with served([sys.executable, "-m", "tl_core.app.classroom", "--host", "127.0.0.1", "--port", str(port),
                 "--allowed-hosts", "localhost 127.0.0.1"], env, port, dirs["tmp"] / "classroom.log",
                stop_timeout=30) as started:
        yield started


def _enter(page, url: str, token: str, code: str, name: str = "") -> None:
    page.goto(f"{url}/?session={token}")
    page.get_by_label("Class code", exact=True).fill(code)
    if name:
        page.get_by_label("Your name (optional: only your teacher sees it)").fill(name)
    page.get_by_role("button", name="Enter").click()
    wait_idle(page)


def _runs(dirs: dict, token: str) -> list[Path]:
    return sorted(p for p in (dirs["workspace"] / "sessions" / token / "runs").glob("*") if p.is_dir()
                  and not p.name.startswith("."))


def _status(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


def test_classroom_in_the_browser_code_isolation_queue_and_teacher(dirs, server):
    from playwright.sync_api import expect, sync_playwright

    import time

    t0 = time.time()

    def step(name: str) -> None:
        print(f"{time.time() - t0:6.1f} s  {name}")

    url = server["url"]
    banner = Path(server["log"]).read_text()
    assert f"Class code:      {CODE}" in banner and "http://127.0.0.1:" in banner and TEACHER in banner

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        pages = {}
        for who in ("ada", "ben", "teacher"):
            pages[who] = browser.new_context(viewport={"width": 1024, "height": 768}).new_page()
            pages[who].set_default_timeout(60_000)
        ada, ben, teacher = (pages[k] for k in ("ada", "ben", "teacher"))
        try:
            # -- no code: the code form, whatever the address names (here a bookmark of Train); no
            # navigation, no page, no choices; a wrong code is refused
            ada.goto(f"{url}/Train?session={ADA}")
            expect(ada.get_by_label("Class code", exact=True)).to_be_visible(timeout=90_000)
            wait_idle(ada)
            assert ada.locator('[data-testid="stSidebarNav"]').count() == 0
            assert ada.get_by_role("heading", name="Train").count() == 0
            assert ada.get_by_role("button", name="Start training").count() == 0
            ada.get_by_label("Class code", exact=True).fill("WRONG9")
            ada.get_by_role("button", name="Enter").click()
            expect(ada.get_by_text("That is not the class code", exact=False)).to_be_visible()
            shot(ada, "classroom_1024_code")
            assert not ada.evaluate(CUT_OFF_JS)
            step("no code")

            # -- two students enter the code (Ada lands on the page her address named) and open Train
            ada.get_by_label("Class code", exact=True).fill(CODE.lower())
            ada.get_by_label("Your name (optional: only your teacher sees it)").fill("Ada")
            ada.get_by_role("button", name="Enter").click()
            _enter(ben, url, BEN, CODE, "Ben")
            nav(ben, "Train")
            for page in (ada, ben):
                expect(page.get_by_role("button", name="Start training")).to_be_enabled(timeout=60_000)
                wait_idle(page)

            step("entered")
            # -- Ada starts, Ben starts: Ben waits in line, with his place and a start time
            ada.get_by_role("button", name="Start training").click()
            ben.get_by_role("button", name="Start training").click()
            expect(ben.get_by_text("Waiting in line: number 1 of 1.", exact=False)).to_be_visible(timeout=30_000)
            expect(ben.get_by_text("It should start", exact=False)).to_be_visible()
            shot(ben, "classroom_1024_waiting")
            cut = ben.evaluate(CUT_OFF_JS)
            assert not cut, f"cut off at 1024x768: {cut}"
            (ada_run,), (ben_run,) = _runs(dirs, ADA), _runs(dirs, BEN)
            assert _status(ben_run)["state"] == "queued" and _status(ada_run)["state"] == "running"

            # -- Ada stops hers once an epoch is done (its weights are kept), Ben's starts by itself and ends
            deadline = time.time() + 180
            while (_status(ada_run).get("epoch") or 0) < 1 and time.time() < deadline:
                time.sleep(0.5)
            assert (_status(ada_run).get("epoch") or 0) >= 1, _status(ada_run)
            ada.get_by_role("button", name="Stop").click()
            ben.goto(f"{url}/Train?session={BEN}")
            expect(ben.get_by_text("Training finished", exact=False).first).to_be_visible(timeout=300_000)
            a, b = _status(ada_run), _status(ben_run)
            assert a["state"] == "stopped" and b["state"] == "finished", (a, b)
            assert a["finished_at"] <= b["started_at"], (a, b)   # one at a time, in order

            step("trained")

            # -- isolation: neither lists nor opens the other's run, not even when the address names its id
            ben.goto(f"{url}/Results?session={BEN}&run={ada_run.name}")
            wait_idle(ben)
            assert ada_run.name not in ben.locator('[data-testid="stMain"]').inner_text()
            ben.get_by_role("combobox", name="Run").click()
            options = ben.get_by_role("option").all_inner_texts()
            assert len(options) == 1 and "finished" in options[0], options   # his own run only
            ben.keyboard.press("Escape")
            ada.goto(f"{url}/Train?session={ADA}&run={ben_run.name}")
            wait_idle(ada)
            assert ben_run.name not in ada.locator('[data-testid="stMain"]').inner_text()
            ada.wait_for_function(f"() => ({TABLE_CELLS_JS})().includes('stopped')", timeout=30_000)
            cells = ada.evaluate(TABLE_CELLS_JS)   # All runs: her one run
            assert cells.count("stopped") == 1 and "finished" not in cells, cells
            step("isolation")
            # -- the teacher: the teacher code at the door of the Teacher page's address
            teacher.goto(f"{url}/Teacher?session={TEACHER_SESSION}")
            teacher.get_by_label("Class code", exact=True).fill(TEACHER)
            teacher.get_by_role("button", name="Enter").click()
            expect(teacher.get_by_role("heading", name="Students (2)")).to_be_visible()
            wait_idle(teacher)
            step("teacher page")
            teacher.wait_for_function(f"() => ({TABLE_CELLS_JS})().includes('Ben')", timeout=30_000)
            cells = teacher.evaluate(TABLE_CELLS_JS)
            assert "Ada" in cells and "Ben" in cells, cells
            teacher.get_by_role("button", name="Show it on the projector").click()
            wait_idle(teacher)
            expect(teacher.locator('[data-testid="stPlotlyChart"]').first).to_be_visible(timeout=60_000)
            wait_idle(teacher)
            expect(teacher.get_by_role("heading", name="Students (2)")).to_have_count(0)   # the run alone
            teacher.wait_for_timeout(800)
            cut = teacher.evaluate(CUT_OFF_JS)
            shot(teacher, "classroom_1024_teacher_projector")
            assert not cut, f"cut off at 1024x768: {cut}"
            # the address alone (it shows on the projector) does not open the teacher view: Ada, who copied
            # it, is asked for the teacher code, and so is the teacher after a reload
            ada.goto(f"{url}/Teacher?session={TEACHER_SESSION}")
            expect(ada.get_by_label("Teacher code")).to_be_visible(timeout=60_000)
            expect(ada.get_by_role("heading", name="Students (2)")).to_have_count(0)
            teacher.reload()
            expect(teacher.get_by_label("Teacher code")).to_be_visible(timeout=60_000)
            teacher.get_by_label("Teacher code").fill(TEACHER)
            teacher.get_by_role("button", name="Open the teacher view").click()
            expect(teacher.get_by_role("heading", name="Students (2)")).to_be_visible(timeout=60_000)
            step("teacher view needs the code in each tab")
        except Exception:
            for name, page in pages.items():
                shot(page, f"classroom_failure_{name}")
            print(Path(server["log"]).read_text()[-5000:])
            raise
        finally:
            browser.close()
