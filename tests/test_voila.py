"""Presentation mode: ``make demo`` serves the classroom demo with Voilà, code-free.

A real Voilà server runs the exact command of the Makefile's ``demo`` recipe (with this
interpreter and a free loopback port) on a temporary copy of ``notebooks/``; the test fetches the
page (Voilà executes the notebook for it), checks that the widgets and plotly figures are there,
that no code cell, traceback or error is, and stops the server by its process id (its process
group: the kernel goes with it). The browser view of the same page is checked in
``tests/e2e/test_notebooks.py``.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DEMO = "08_classroom_demo.ipynb"


def demo_command(port: int, notebook: Path) -> list[str]:
    """The ``make demo`` recipe's voila command line, for this interpreter and ``port``."""
    text = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", text, re.M)
    assert recipe, "the Makefile has no demo target"
    line = next(ln.strip() for ln in recipe.group(1).splitlines() if "/bin/voila " in ln)
    args = shlex.split(line)
    assert args[0] == "$(VENV)/bin/voila" and args[1] == "$(DEMO_NB)", args[:2]
    out = [sys.executable, "-m", "voila", str(notebook)]
    for a in args[2:]:
        out.append(a.replace("$(DEMO_PORT)", str(port)))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_demo(base: Path):
    """Start Voilà on a copy of notebooks/ in ``base``; returns ``(process, url, log path)``."""
    pytest.importorskip("voila", reason="voila is not installed")
    root = base / "notebooks"
    shutil.copytree(ROOT / "notebooks", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    env = dict(os.environ, JUPYTER_PLATFORM_DIRS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                     ("JUPYTER_DATA_DIR", "data"), ("IPYTHONDIR", "ipython")):
        env[var] = str(base / sub)
    port = free_port()
    log_path = base / "voila.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(demo_command(port, root / DEMO), cwd=root, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}", log_path


def wait_listening(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    host, port = url.rsplit("/", 1)[-1].split(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"voila exited with status {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex((host, int(port))) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"voila did not listen on {url} within {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the server's own process group (server + kernel)."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def test_makefile_demo_serves_on_loopback_only():
    cmd = demo_command(8866, ROOT / "notebooks" / DEMO)
    assert "--Voila.ip=127.0.0.1" in cmd and "--no-browser" in cmd
    assert "--strip_sources=True" in cmd  # no code in presentation mode


def test_voila_demo_shows_widgets_and_figures_and_no_code(tmp_path):
    proc, url, log_path = start_demo(tmp_path)
    try:
        wait_listening(url, proc)
        with urllib.request.urlopen(url + "/", timeout=400) as r:  # executes the notebook
            assert r.status == 200
            html = r.read().decode("utf-8", "replace")
    finally:
        stop(proc)
    log = log_path.read_text(errors="replace")
    assert proc.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # no kernel left behind
    assert "application/vnd.jupyter.widget-view+json" in html, log[-2000:]
    assert "application/vnd.plotly.v1+json" in html
    assert "bnnlab-table" in html  # the rendered scoreboard / tables
    # no code: neither the cells' sources nor input areas
    for source in ("classroom_trainer(", "import torch", "FULL_RUN = False"):
        assert source not in html, f"code visible in the Voilà page: {source!r}"
    assert not re.search(r'class="[^"]*jp-InputArea-editor', html)  # (the CSS names it)
    assert "Traceback" not in html and "jp-RenderedText\" data-mime-type=\"application/vnd.jupyter.stderr" not in html
