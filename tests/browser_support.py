"""What the browser tests share: the app server as `make run` starts it, the folders it uses, and
the small Playwright helpers (navigate, wait for Streamlit to be idle, full-page screenshots)."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"

# Every element whose text must be read whole: buttons and links that act, headings, tabs, metric
# labels, widget labels. One of them (or a child) that clips its text (overflow hidden/clip or an
# ellipsis) while its text is wider than its box is cut off. Tab bars that scroll hide whole tabs,
# cards shorter than their text clip it (or spill it over what follows), tables that scroll
# sideways hide columns.
CUT_OFF_JS = r"""
() => {
  const roots = document.querySelectorAll([
    'button', '[data-testid="stPageLink"] a', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', '[role="tab"]',
    '[data-testid="stMetricLabel"]', '[data-testid="stMetricValue"]', '[data-testid="stWidgetLabel"]',
    '[data-testid="stMarkdownContainer"] p'].join(','));
  const visible = el => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  const clips = cs => cs.textOverflow === 'ellipsis' || ['hidden', 'clip'].includes(cs.overflowX);
  const out = [];
  const right = document.documentElement.clientWidth;
  for (const root of roots) {
    if (!visible(root) || root.closest('[data-testid="stSidebar"][aria-expanded="false"]')) continue;
    if (root.closest('[data-testid="stToolbar"], [data-testid="stHeader"], .modebar, [data-testid="stDataFrame"]'))
      continue;
    for (const el of [root, ...root.querySelectorAll('*')]) {
      // (not screen-reader-only text, 1 px wide)
      if (!visible(el) || el.getBoundingClientRect().width <= 2 || !(el.innerText || '').trim()) continue;
      if (el.closest('[data-testid="stIconMaterial"], .material-symbols-rounded')) continue;
      if (clips(getComputedStyle(el)) && el.scrollWidth > el.clientWidth + 1) {
        out.push(`${root.tagName.toLowerCase()}: "${(root.innerText || '').trim().slice(0, 60)}"`
                 + ` (${el.scrollWidth} px of text in ${el.clientWidth} px)`);
        break;
      }
      if (el.getBoundingClientRect().right > right + 1) {  // spills off the screen's right edge
        out.push(`${root.tagName.toLowerCase()}: "${(root.innerText || '').trim().slice(0, 60)}"`
                 + ` runs off the right edge (to ${Math.round(el.getBoundingClientRect().right)} of ${right} px)`);
        break;
      }
    }
  }
  // a bordered card (Home's steps, Model's cards) whose text is taller than the card: clipped or spilling out
  for (const card of document.querySelectorAll('[data-testid="stVerticalBlock"]')) {
    if (!visible(card) || parseFloat(getComputedStyle(card).borderTopWidth) < 1) continue;
    const bottom = card.getBoundingClientRect().bottom;
    const lowest = Math.max(...[...card.querySelectorAll('p, span, a, button, img')]
      .filter(visible).map(e => e.getBoundingClientRect().bottom), 0);
    if (lowest > bottom + 2)
      out.push(`card "${(card.innerText || '').trim().slice(0, 40)}" is too short for its text`
               + ` (text ends ${Math.round(lowest - bottom)} px below it)`);
  }
  // a table whose columns run off its right edge
  for (const table of document.querySelectorAll('[data-testid="stDataFrame"]')) {
    const scroller = table.querySelector('.dvn-scroller');
    const first = (table.querySelector('th, [role="columnheader"]') || {}).innerText || '';
    if (visible(table) && scroller && scroller.scrollWidth > scroller.clientWidth + 1)
      out.push(`table starting "${first.trim()}" scrolls sideways`
               + ` (${scroller.scrollWidth} in ${scroller.clientWidth} px)`);
  }
  for (const bar of document.querySelectorAll('[role="tablist"]')) {
    if (visible(bar) && bar.scrollWidth > bar.clientWidth + 1)
      out.push(`tab bar: "${bar.innerText.replace(/\s+/g, ' ').slice(0, 80)}" scrolls`
               + ` (${bar.scrollWidth} in ${bar.clientWidth} px)`);
  }
  return [...new Set(out)];
}
"""


def browser_dirs(tmp_path_factory, name: str) -> dict:
    """Runs and workspace in a fresh folder; the feature and converted-weights cache is shared with
    the other tests (see conftest.py). Skips when Chromium or Playwright is missing."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed at /usr/bin/chromium")
    pytest.importorskip("playwright.sync_api")
    tmp = tmp_path_factory.mktemp(name)
    return {"tmp": tmp, "runs": tmp / "runs", "workspace": tmp / "workspace",
            "cache": tmp_path_factory.getbasetemp() / "tl-cache"}


def train_sample_run(dirs: dict, **model_settings) -> Path:
    """One epoch on the bundled sample with the offline weights, through the public API, into the
    server's runs folder (so Results and Try have something to draw)."""
    import tl_core
    from tl_core import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tl_core.data.sample import sample_dir

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TL_CACHE_DIR", str(dirs["cache"]))
        result = tl_core.train(RunConfig(data=DataConfig(root=str(sample_dir())),
                                         model=ModelConfig(weights="offline", **model_settings),
                                         train=TrainConfig(epochs=1)), runs_dir=dirs["runs"])
    assert result.status == "finished", result
    return Path(result.run_dir)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError("streamlit did not become healthy")


@contextlib.contextmanager
def streamlit_server(dirs: dict, like_make_run: bool = False):
    """``streamlit run app.py`` on a free port; stopping it and starting another on the same folders is
    a server restart. ``like_make_run``: only the address and port on the command line, exactly as
    ``make run`` starts it, so ``.streamlit/config.toml`` is what is tested (file watcher, usage stats)."""
    env = dict(os.environ, TL_RUNS_DIR=str(dirs["runs"]), TL_WORKSPACE=str(dirs["workspace"]),
               TL_CACHE_DIR=str(dirs["cache"]), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
               MALLOC_ARENA_MAX="1")   # as `make run` starts it
    port = free_port()
    log_path = dirs["tmp"] / f"streamlit-{port}.log"
    flags = [] if like_make_run else ["--server.headless", "true", "--browser.gatherUsageStats", "false",
                                      "--server.fileWatcherType", "none"]
    with served([sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1",
                 "--server.port", str(port), *flags], env, port, log_path) as server:
        yield server


@contextlib.contextmanager
def served(cmd: list[str], env: dict, port: int, log_path: Path, stop_timeout: float = 15):
    """``cmd`` (a server on ``port``) started from the repository, its output in ``log_path``, until it
    answers; ended (killed when it does not stop within ``stop_timeout`` seconds) when the block ends."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, proc)
            yield {"url": url, "log": log_path, "pid": proc.pid}
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()


def requests_leaving(page, url: str) -> list[str]:
    """A list that fills with every request ``page`` makes anywhere but ``url`` (the app's own server)
    and the browser's own data:, blob: and about: addresses: it must stay empty."""
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(url)
            and not r.url.startswith(("data:", "blob:", "about:")) else None)
    return outside


def nav(page, label: str) -> None:
    page.locator('[data-testid="stSidebarNav"] a', has_text=label).first.click()


def wait_idle(page, timeout: float = 60_000) -> None:
    """Until Streamlit has finished running the script and no spinner is left."""
    page.wait_for_timeout(500)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stSpinner\"]')", timeout=timeout)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout)


def shot(page, name: str) -> None:
    """The whole page: Streamlit scrolls inside its main block, so grow the viewport to fit it."""
    ARTIFACTS.mkdir(exist_ok=True)
    height = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll('[data-testid=\"stMain\"], "
        "[data-testid=\"stMainBlockContainer\"]')].map(e => e.scrollHeight), 1000)")
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": min(int(height) + 80, 8000)})
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    page.set_viewport_size(size)
