"""Real-browser test: JupyterLab runs a notebook and its widgets render and respond.

A fresh JupyterLab server (loopback, free port, no token, throw-away config/runtime/data
folders) serves a temporary *copy* of ``notebooks/``; Playwright drives Debian's chromium
(``/usr/bin/chromium``; ``playwright install`` is never needed). The test opens
``01_sign_and_ste.ipynb``, waits for the kernel to be idle, runs all cells, checks that the
ipywidgets controls and the plotly figures render, moves the quantizer explorer's ``clip_value``
slider and its ``quantizer`` dropdown, and checks that the figure's data follow (a round trip
through the Python kernel). A viewport screenshot goes to ``artifacts/lab.png``. The server and
its kernels are terminated at the end; no process is left behind.

Recipe and pitfalls: /work/shared/ENVIRONMENT.md §6 (wait for "Idle" before Run All; fresh
server per run; full-page screenshots come out blank).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
NB_DIR = ROOT / "notebooks"
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
NOTEBOOK = "01_sign_and_ste.ipynb"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
KERNEL_IDLE = re.compile(r"Python 3 \(ipykernel\) \| Idle")

# The explorer's figure: the plotly div in the same VBox as the clip_value slider. Its
# fingerprint is the title (it states the mismatch) plus every trace's y values.
_FINGERPRINT_JS = """() => {
    const slider = [...document.querySelectorAll('.widget-slider')]
        .find(e => e.textContent.includes('clip_value'));
    const box = slider && slider.closest('.widget-vbox');
    const gd = box && box.querySelector('.js-plotly-plot');
    if (!gd || !gd.data || gd.data.length < 2) return null;
    const ys = gd.data.map(t => Array.from(t.y && t.y.length !== undefined ? t.y : []));
    const title = gd.layout && gd.layout.title ? (gd.layout.title.text || '') : '';
    return JSON.stringify([title, ys]);
}"""
_CHANGED_JS = f"previous => {{ const now = ({_FINGERPRINT_JS})(); return now !== null && now !== previous; }}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/api/status", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"jupyter lab did not answer on {url} within {timeout:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    """Terminate the server's process group (server + kernels), then make sure it is gone."""
    pgid = proc.pid  # start_new_session=True: the server leads its own group
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + wait  # kernels may outlive the server briefly
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


@pytest.fixture(scope="module")
def lab_url(tmp_path_factory):
    """A fresh JupyterLab on a temporary copy of notebooks/; yields its base URL."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium "
                    "(apt-get install --no-install-recommends chromium)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    pytest.importorskip("jupyterlab", reason="jupyterlab is not installed")
    base = tmp_path_factory.mktemp("lab")
    root = base / "notebooks"
    shutil.copytree(NB_DIR, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    env = dict(os.environ)
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                     ("JUPYTER_DATA_DIR", "data"), ("IPYTHONDIR", "ipython")):
        env[var] = str(base / sub)
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    # no "get notified about Jupyter news?" toast over the screenshot
    news = base / "config/lab/user-settings/@jupyterlab/apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
           f"--port={port}", "--ServerApp.port_retries=0", "--IdentityProvider.token=",
           "--ServerApp.password=", f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(base / "jupyter.log", "wb")
    proc = subprocess.Popen(cmd, env=env, cwd=base, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        _wait_ready(url, proc)
        yield url
    finally:
        _stop(proc)
        log.close()
    assert proc.returncode is not None, "jupyter lab is still running"
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # no kernel or other child left in the server's group


def test_notebook_widgets_render_and_respond(lab_url):
    from playwright.sync_api import sync_playwright

    console_errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: console_errors.append(m.text)
                    if m.type == "error" else None)
            page.goto(f"{lab_url}/lab/tree/{NOTEBOOK}", timeout=120_000)
            page.get_by_text(KERNEL_IDLE).first.wait_for(timeout=120_000)

            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()

            # ipywidgets controls and plotly figures render
            page.locator(".widget-slider").first.wait_for(timeout=120_000)
            page.locator(".widget-dropdown").first.wait_for(timeout=60_000)
            page.wait_for_function(_FINGERPRINT_JS, timeout=120_000)
            # the training cell's static figure comes later: at least two plots in the end
            page.wait_for_function(
                "() => document.querySelectorAll('.js-plotly-plot').length >= 2",
                timeout=180_000)
            page.get_by_text(KERNEL_IDLE).first.wait_for(timeout=180_000)
            assert page.locator(".widget-slider").count() >= 3  # clip_value, beta, scale

            # move the clip_value slider: the surrogate and the mismatch in the title change
            slider = page.locator(".widget-slider", has_text="clip_value").first
            slider.scroll_into_view_if_needed()
            before = page.evaluate(_FINGERPRINT_JS)
            track = slider.locator(".noUi-target, .slider").first
            box = track.bounding_box()
            page.mouse.click(box["x"] + 0.9 * box["width"], box["y"] + box["height"] / 2)
            page.wait_for_function(_CHANGED_JS, arg=before, timeout=60_000)
            after_slider = page.evaluate(_FINGERPRINT_JS)
            readout = slider.locator(".widget-readout").inner_text()
            assert float(readout) > 2.0, f"clip_value readout {readout!r} after the click"

            # change the quantizer: the figure follows again
            page.locator(".widget-dropdown", has_text="quantizer").locator("select") \
                .select_option("approx_sign")
            page.wait_for_function(_CHANGED_JS, arg=after_slider, timeout=60_000)

            for button in page.locator(".Toastify__toast button", has_text="No").all():
                button.click()  # a news toast, if one appeared anyway
            ARTIFACTS.mkdir(exist_ok=True)
            page.wait_for_timeout(500)  # let plotly finish its transition before the picture
            page.screenshot(path=str(ARTIFACTS / "lab.png"))  # viewport: full_page is blank
        finally:
            browser.close()
    failed = [e for e in console_errors if "Failed to initialize model" in e]
    assert not failed, f"widget models failed to load in the browser: {failed[:3]}"
    assert (ARTIFACTS / "lab.png").stat().st_size > 10_000
