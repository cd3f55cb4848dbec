"""Real-browser tests of every notebook in JupyterLab, and of the Voilà demo page.

One fresh JupyterLab (loopback, free port, no token, throw-away settings with notebook windowing
off, so that every output is rendered) serves a temporary copy of ``notebooks/``; Debian's
chromium, driven by Playwright, opens each notebook, runs all cells and checks that

- no cell shows a traceback or an error output;
- every plotly figure has a plot area of at least 10 × 10 px and draws data (a visible trace
  and at least one line, marker, bar, heatmap image or table cell in the page);
- no table hides rows: no plotly table needs its scrollbar, and no row of an HTML table (a
  rendered ``bnnlab`` table, the dashboards' table widgets) lies outside a box that clips it
  (``overflow`` hidden, auto or scroll, up to the cell), such as a widget of fixed height;

then saves screenshots under ``artifacts/screenshots/`` (the notebook's first figure in its
viewport, and each figure alone). The Voilà test serves the classroom demo exactly as
``make demo`` does and checks, in the browser, that widgets and figures render and no code cell
is shown. Servers are stopped by process id (their process group).
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_lab import CHROMIUM, CHROMIUM_ARGS, KERNEL_IDLE, _free_port, _stop, _wait_ready  # noqa: E402
from test_voila import start_demo, wait_listening  # noqa: E402
from test_voila import stop as stop_voila

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
NB_DIR = ROOT / "notebooks"
SHOTS = ROOT / "artifacts" / "screenshots"
NOTEBOOKS = sorted(p.name for p in NB_DIR.glob("[0-9][0-9]_*.ipynb"))

# Plot-area size of every plotly figure, and whether a table trace hides rows (needs its scrollbar).
_FIGURES_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].map(gd => {
    const s = gd._fullLayout && gd._fullLayout._size;
    const types = (gd.data || []).map(t => t.type || 'scatter');
    // a table trace scrolls when its rows are taller than its area (plotly's own state, bound to
    // the view by d3; the scrollbar glyph itself is drawn transparent until hovered)
    const scrolls = [...gd.querySelectorAll('.table-control-view')].some(v => {
        const st = v.__data__ && v.__data__.scrollbarState;
        return !!st && st.totalHeight > st.scrollableAreaHeight + 1;
    });
    // marks that carry data: a line with a path, a marker, a bar with an area, a heatmap image,
    // a table cell (an empty trace leaves its <g class="trace"> but none of these)
    const marks = [...gd.querySelectorAll(
        '.scatterlayer path.js-line, .scatterlayer path.point, .barlayer .bars path, ' +
        '.heatmaplayer image, .cartesianlayer .plot image, .table .cell-text')];
    const drawn = marks.filter(m => m.tagName !== 'path' ||
        !['', 'M0,0Z'].includes((m.getAttribute('d') || '').trim())).length;
    const visible = (gd._fullData || []).filter(t => t.visible === true).length;
    return {w: s ? s.w : 0, h: s ? s.h : 0, types, scrolls, drawn, visible,
            title: (gd.layout && gd.layout.title && (gd.layout.title.text || gd.layout.title)) || ''};
})"""
# Rows of HTML tables that a clipping box hides: for every <table> outside plotly, the rows whose
# box is empty or lies (partly) outside the visible area of an ancestor with overflow other than
# visible, up to the notebook cell (the page and the notebook panel may scroll: not hiding).
_TABLES_JS = """() => [...document.querySelectorAll('table')].filter(t => !t.closest('.js-plotly-plot'))
  .map(t => {
    const rows = [...t.rows];
    const hidden = rows.filter(r => {
        const rr = r.getBoundingClientRect();
        if (rr.height < 1) return true;
        for (let a = t.parentElement; a && !a.matches('.jp-Cell, body'); a = a.parentElement) {
            if (getComputedStyle(a).overflowY === 'visible') continue;
            const top = a.getBoundingClientRect().top + a.clientTop;
            if (rr.top < top - 1 || rr.bottom > top + a.clientHeight + 1) return true;
        }
        return false;
    }).length;
    return {rows: rows.length, hidden, text: (t.innerText || '').slice(0, 80)};
  })"""
_ERRORS_JS = """() => [...document.querySelectorAll(
    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"], .jp-OutputArea-output')]
    .map(e => e.innerText).filter(t => /Traceback \\(most recent call last\\)|Error: /.test(t))
    .map(t => t.slice(0, 300))"""
_BUSY_JS = """() => [...document.querySelectorAll('.jp-InputPrompt')]
    .some(e => e.innerText.includes('[*]'))"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A fresh JupyterLab on a copy of notebooks/; yields its URL."""
    import subprocess

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: apt-get install --no-install-recommends chromium")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    base = tmp_path_factory.mktemp("lab_all")
    root = base / "notebooks"
    shutil.copytree(NB_DIR, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    env = dict(os.environ, JUPYTER_PLATFORM_DIRS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                     ("JUPYTER_DATA_DIR", "data"), ("IPYTHONDIR", "ipython")):
        env[var] = str(base / sub)
    settings = base / "config/lab/user-settings/@jupyterlab"
    (settings / "apputils-extension").mkdir(parents=True)
    (settings / "apputils-extension/notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false"}')
    (settings / "notebook-extension").mkdir(parents=True)
    (settings / "notebook-extension/tracker.jupyterlab-settings").write_text(
        '{"windowingMode": "none"}')  # render every cell, not only the visible ones
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
           f"--port={port}", "--ServerApp.port_retries=0", "--IdentityProvider.token=",
           "--ServerApp.password=", f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(base / "jupyter.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, cwd=base, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        _wait_ready(url, proc)
        yield url
    finally:
        _stop(proc)
        log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def check_figures(page, stem: str) -> list[dict]:
    figs = page.evaluate(_FIGURES_JS)
    small = [f for f in figs if f["w"] < 10 or f["h"] < 10]
    assert not small, f"{stem}: plotly figures with an empty or tiny plot area: {small}"
    empty = [f for f in figs if f["drawn"] == 0 or f["visible"] == 0]
    assert not empty, f"{stem}: plotly figures that draw no data: {empty}"
    hidden = [f for f in figs if "table" in f["types"] and f["scrolls"]]
    assert not hidden, f"{stem}: a table figure hides rows behind its scrollbar: {hidden}"
    return figs


def check_tables(page, stem: str) -> list[dict]:
    """Every HTML table shows all its rows (see ``_TABLES_JS``); the tables found."""
    tables = page.evaluate(_TABLES_JS)
    clipped = [t for t in tables if t["hidden"]]
    assert not clipped, f"{stem}: a table widget hides rows: {clipped}"
    return tables


def shoot(page, stem: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    plots = page.locator(".js-plotly-plot")
    if plots.count():
        plots.first.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    page.screenshot(path=str(SHOTS / f"{stem}.png"))
    for i in range(min(plots.count(), 12)):
        plots.nth(i).scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        plots.nth(i).screenshot(path=str(SHOTS / f"{stem}_fig{i + 1}.png"))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_the_browser_without_errors(lab, browser, name):
    stem = name.removesuffix(".ipynb")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        # a workspace of its own (reset): only this notebook is open, so every check and
        # screenshot sees this notebook's cells only
        page.goto(f"{lab}/lab/workspaces/{stem.replace('_', '-')}/tree/{name}?reset",
                  timeout=120_000)
        page.get_by_text(KERNEL_IDLE).first.wait_for(timeout=120_000)
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        page.wait_for_timeout(1500)
        page.wait_for_function(f"() => !({_BUSY_JS})()", timeout=300_000, polling=1000)
        page.get_by_text(KERNEL_IDLE).first.wait_for(timeout=300_000)
        page.wait_for_timeout(1500)  # late widget views and plotly renders
        shoot(page, stem)  # scrolls every figure into view (pictures even when a check fails)
        errors = page.evaluate(_ERRORS_JS)
        assert not errors, f"{name}: error output in the browser: {errors[:2]}"
        failed = []  # every check runs, so one (minutes-long) run reports every problem
        for check in (check_figures, check_tables):
            try:
                check(page, stem)
            except AssertionError as exc:
                failed.append(str(exc).splitlines()[0])
        assert not failed, "\n".join(failed)
        figs = page.evaluate(_FIGURES_JS)
        prompts = page.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()
        not_run = [p for p in prompts if not re.search(r"\[\d+\]", p)]
        assert not not_run, f"{name}: code cells without an execution count: {prompts}"
        if stem.startswith(("03", "04", "05", "06", "08")):
            assert figs, f"{name}: no figure rendered"
    finally:
        page.close()


def test_voila_demo_in_the_browser_shows_widgets_and_no_code(browser, tmp_path):
    proc, url, log_path = start_demo(tmp_path)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        wait_listening(url, proc)
        page.goto(url + "/", timeout=400_000)
        page.locator(".widget-button", has_text="Train").first.wait_for(timeout=120_000)
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 4",
                               timeout=120_000)
        page.wait_for_timeout(1500)
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "voila.png"))
        plots = page.locator(".js-plotly-plot")
        for i in range(min(plots.count(), 8)):
            plots.nth(i).scroll_into_view_if_needed()
            page.wait_for_timeout(300)
            plots.nth(i).screenshot(path=str(SHOTS / f"voila_fig{i + 1}.png"))
        check_figures(page, "voila")
        check_tables(page, "voila")
        assert page.locator(".jp-InputArea-editor, .jp-CodeMirrorEditor, .cm-editor").count() == 0
        assert page.locator("table.bnnlab-table").count() >= 2  # scoreboard, memory table
        text = page.inner_text("body")
        assert "classroom_trainer(" not in text and "Traceback" not in text
        with urllib.request.urlopen(url + "/", timeout=5):
            pass  # the server still answers after the page (it was not a one-shot render)
    except Exception:
        print(log_path.read_text(errors="replace")[-3000:])
        raise
    finally:
        page.close()
        stop_voila(proc)


def test_check_figures_refuses_an_empty_figure(browser, tmp_path):
    """The figure check itself: an empty scatter, an empty bar chart and a hidden trace fail it;
    a line, bars, a heatmap and a table pass."""
    import plotly.graph_objects as go

    good = [go.Figure(go.Scatter(x=[0, 1, 2], y=[1, 0, 2])), go.Figure(go.Bar(x=["a", "b"], y=[2, 3])),
            go.Figure(go.Heatmap(z=[[1, 2], [3, 4]])),
            go.Figure(go.Table(cells=dict(values=[[1, 2]])))]
    bad = [go.Figure(go.Scatter(x=[], y=[])), go.Figure(go.Bar(x=[], y=[])),
           go.Figure(go.Scatter(x=[0, 1], y=[1, 0], visible=False)), go.Figure()]
    page = browser.new_page(viewport={"width": 900, "height": 700})
    try:
        for label, figs in (("good", good), ("bad", bad)):
            for i, fig in enumerate(figs):
                path = tmp_path / f"{label}{i}.html"
                fig.write_html(path, include_plotlyjs=True, full_html=True)
                page.goto(path.as_uri())
                page.wait_for_function("() => document.querySelector('.js-plotly-plot')"
                                       " && document.querySelector('.js-plotly-plot')._fullLayout")
                page.wait_for_timeout(200)
                if label == "good":
                    check_figures(page, f"{label}{i}")
                else:
                    with pytest.raises(AssertionError, match="draw no data"):
                        check_figures(page, f"{label}{i}")
    finally:
        page.close()


def test_the_table_checks_fire_on_clipped_tables_and_pass_the_real_ones(browser, tmp_path):
    """A table in a box of fixed small height (overflow hidden, or scrolled), and a plotly table
    too short for its rows, fail the checks; the tables bnnlab renders (plots.table,
    lessons.Table as the dashboard's table widget shows it, plots.table_figure) pass."""
    from bnnlab import lessons as L
    from bnnlab import models
    from bnnlab import plots as P
    from bnnlab.summary import summary

    nets = {"float": models.binary_mlp(64, (32, 32), binary=False), "BinaryNet": models.binary_mlp(64, (32, 32))}
    sums = {name: summary(net, (64,)) for name, net in nets.items()}
    rows = [{"layer": r.name, "type": r.type, "params": r.params} for r in sums["BinaryNet"].records]
    real_html = [L.memory_table(sums)._repr_html_(), P.table(rows)._repr_html_(), L.Table(rows)._repr_html_()]
    long_table = P.table([{"i": i, "square": i * i} for i in range(12)])._repr_html_()

    def page_with(body: str, name: str) -> None:
        path = tmp_path / f"{name}.html"
        path.write_text(f"<!doctype html><html><body><div class='jp-Cell'>{body}</div></body></html>",
                        encoding="utf-8")
        page.goto(path.as_uri())

    page = browser.new_page(viewport={"width": 900, "height": 700})
    try:
        for i, html in enumerate(real_html):  # as a cell output, and inside a widget of auto height
            page_with(f"<div class='jp-OutputArea-output' style='overflow-x:auto'>{html}</div>"
                      f"<div class='widget-html' style='overflow:hidden'>{html}</div>", f"real{i}")
            found = check_tables(page, f"real{i}")
            assert len(found) == 2 and all(t["rows"] >= 3 for t in found), found
        for style in ("height:60px; overflow:hidden", "height:60px; overflow:auto",
                      "max-height:60px; overflow-y:scroll"):
            page_with(f"<div class='widget-html' style='{style}'>{long_table}</div>", "clipped")
            with pytest.raises(AssertionError, match="a table widget hides rows"):
                check_tables(page, "clipped")
            assert 0 < page.evaluate(_TABLES_JS)[0]["hidden"] < 13
        for name, height, fire in (("short", 160, True), ("fits", None, False)):
            fig = P.table_figure([{"i": i, "square": i * i} for i in range(12)], height=height)
            fig.write_html(tmp_path / f"{name}.html", include_plotlyjs=True, full_html=True)
            page.goto((tmp_path / f"{name}.html").as_uri())
            page.wait_for_function("() => document.querySelector('.js-plotly-plot')"
                                   " && document.querySelector('.js-plotly-plot')._fullLayout")
            page.wait_for_timeout(300)
            if fire:
                with pytest.raises(AssertionError, match="hides rows behind its scrollbar"):
                    check_figures(page, name)
            else:
                check_figures(page, name)
    finally:
        page.close()
