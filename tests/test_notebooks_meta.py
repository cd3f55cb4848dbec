"""House rules of notebooks/*.ipynb, checked on the committed files (no kernel, < 1 s).

Executing the notebooks is nbval's job (``pytest --nbval-lax ... notebooks/``); this file checks
what nbval does not: structure, stripped outputs, guarded cells, links, the index, and that the
notebooks are in sync with their jupytext sources ``notebooks/NN_slug.py`` (``tools/notebooks.py``).
"""
from __future__ import annotations

import ast
import configparser
import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NB_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))
NUMBERED = [p for p in NOTEBOOKS if p.name != "00_index.ipynb"]
MARKER = "# NBVAL_CHECK_OUTPUT"  # the older in-source marker: never left in a notebook
TAG = "nbval-check-output"  # nbval's cell tag: invisible to students
MAX_FUNCTION_LINES = 6  # "def" line + about five lines of body
WIDGET_MIMES = ("application/vnd.jupyter.widget-state+json",
                "application/vnd.jupyter.widget-view+json")


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _ids(paths):
    return [p.stem for p in paths]


def _first_line(cell) -> str:
    lines = cell.source.splitlines()
    return lines[0].strip() if lines else ""


def _tools():
    spec = importlib.util.spec_from_file_location("bnnlab_tools_notebooks",
                                                  ROOT / "tools" / "notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_expected_notebooks_exist():
    names = [p.name for p in NOTEBOOKS]
    assert names[0] == "00_index.ipynb"
    assert all(re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", n) for n in names), names
    numbers = [int(n[:2]) for n in names]
    assert numbers == list(range(len(names))), "notebooks must be numbered 00, 01, 02, ..."
    assert len(NUMBERED) >= 8


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_valid_with_python3_kernel_and_no_widget_state(path):
    nb = _read(path)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert "widgets" not in nb.metadata, "widget state in notebook metadata"
    text = path.read_text(encoding="utf-8")
    assert not any(m in text for m in WIDGET_MIMES), "widget state or views stored in outputs"
    assert path.stat().st_size < 100_000, "notebook too large: outputs or state left in it?"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_only_guarded_cells_keep_outputs(path):
    nb = _read(path)
    guarded = 0
    for i, cell in enumerate(nb.cells):
        assert "execution" not in cell.metadata, f"cell {i}: execution timing metadata left"
        if cell.cell_type != "code":
            continue
        assert MARKER not in cell.source, f"cell {i}: test marker visible to students"
        keep = TAG in cell.metadata.get("tags", [])
        if keep:
            guarded += 1
            assert cell.outputs and cell.execution_count is not None, (
                f"cell {i}: guarded cell without a stored output (nbval would compare nothing)")
            kinds = {o.output_type for o in cell.outputs}
            assert kinds <= {"execute_result", "stream"}, f"cell {i}: outputs {kinds}"
            assert all(o.get("name") != "stderr" for o in cell.outputs), f"cell {i}: stderr kept"
        else:
            assert cell.outputs == [] and cell.execution_count is None, (
                f"cell {i}: unguarded output left in git (run `python tools/notebooks.py strip`)")
    if path in NUMBERED:
        assert guarded >= 1, f"each notebook needs at least one {TAG} cell"


@pytest.mark.parametrize("path", NUMBERED, ids=_ids(NUMBERED))
def test_structure_title_question_navigation_summary_exercises(path):
    nb = _read(path)
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    assert first.source.startswith(f"# {path.name[:2]} · "), "title '# NN · ...' first"
    for part in ("**Question.**", "**You will**", "**Needs:**", "**Next:**"):
        assert part in first.source, f"first cell lacks {part}"
    assert len(re.findall(r"\*\*Question\.\*\*", first.source)) == 1, "one question per notebook"
    headings = [line.strip() for c in nb.cells if c.cell_type == "markdown"
                for line in c.source.splitlines() if line.startswith("## ")]
    assert "## Summary" in headings and "## Try this" in headings
    assert headings.index("## Summary") < headings.index("## Try this") == len(headings) - 1
    last = nb.cells[-1]
    assert last.cell_type == "markdown" and "## Try this" in last.source
    assert re.search(r"^1\. ", last.source.split("## Try this")[1], re.M), "numbered exercises"


@pytest.mark.parametrize("path", NUMBERED, ids=_ids(NUMBERED))
def test_first_code_cell_has_full_run_flag_and_seed(path):
    code = [c for c in _read(path).cells if c.cell_type == "code"]
    setup = code[0].source
    assert setup.splitlines()[0].startswith("FULL_RUN = False")
    assert "torch.manual_seed(0)" in setup


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_cells_are_thin(path):
    """No function longer than about five lines is defined in a notebook."""
    for i, cell in enumerate(_read(path).cells):
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                n = node.end_lineno - node.lineno + 1
                assert n <= MAX_FUNCTION_LINES, (
                    f"cell {i}: {node.name} is {n} lines; move it into bnnlab")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_links_to_notebooks_resolve(path):
    for cell in _read(path).cells:
        if cell.cell_type == "markdown":
            for target in re.findall(r"\]\(([^)#]+\.ipynb)", cell.source):
                assert (NB_DIR / target).is_file(), f"broken link to {target}"


def test_index_lists_every_notebook_with_its_title():
    index = _read(NB_DIR / "00_index.ipynb")
    text = "\n".join(c.source for c in index.cells if c.cell_type == "markdown")
    for path in NUMBERED:
        title = _read(path).cells[0].source.splitlines()[0].lstrip("# ").strip()
        assert f"[{title}]({path.name})" in text, f"index does not list {path.name}"
    listed = re.findall(r"\]\((\d\d_[a-z0-9_]+\.ipynb)\)", text)
    assert set(listed) == {p.name for p in NUMBERED}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_no_test_scaffolding_in_view(path):
    """Issue 11: students see no test markers, CI remarks or self-checks."""
    for i, cell in enumerate(_read(path).cells):
        for text in ("NBVAL", "must match the list", "nbval"):
            assert text not in cell.source, f"cell {i} shows {text!r} to students"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_slide_metadata_for_rise(path):
    """Every cell carries a RISE slide type; headings open slides, the rest are fragments."""
    cells = _read(path).cells
    kinds = [c.metadata.get("slideshow", {}).get("slide_type") for c in cells]
    assert set(kinds) <= {"slide", "fragment"} and kinds[0] == "slide", kinds
    for c, kind in zip(cells, kinds, strict=True):
        heading = c.cell_type == "markdown" and c.source.lstrip().startswith("#")
        assert (kind == "slide") == (heading or c is cells[0])


def test_each_notebook_has_a_jupytext_source():
    assert sorted(p.stem for p in NB_DIR.glob("[0-9][0-9]_*.py")) == [p.stem for p in NOTEBOOKS]


def test_notebooks_are_in_sync_with_their_sources():
    """Cells, ids, tags, slide types, stripped outputs and the index list: `tools/notebooks.py check`."""
    assert _tools().problems() == []


def _copy_notebooks(tmp_path: Path) -> Path:
    for p in [*NB_DIR.glob("[0-9][0-9]_*.py"), *NOTEBOOKS]:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    return tmp_path


def test_check_fails_when_a_source_and_its_notebook_drift(tmp_path):
    tools = _tools()
    base = _copy_notebooks(tmp_path)
    src = base / "01_sign_and_ste.py"
    src.write_text(src.read_text(encoding="utf-8").replace("torch.manual_seed(0)", "torch.manual_seed(1)", 1),
                   encoding="utf-8")
    assert tools.problems(base) == ["01_sign_and_ste.ipynb differs from 01_sign_and_ste.py "
                                    "(run `python tools/notebooks.py run 01`)"]


def test_check_fails_when_only_a_tag_or_slide_type_drifts(tmp_path):
    tools = _tools()
    base = _copy_notebooks(tmp_path)
    src = base / "03_sign_distributions.py"
    text = src.read_text(encoding="utf-8")
    src.write_text(text.replace(' tags=["nbval-check-output"]', "", 1), encoding="utf-8")
    assert any("03_sign_distributions.ipynb differs" in p for p in tools.problems(base))
    src.write_text(text.replace('slideshow={"slide_type": "fragment"}', 'slideshow={"slide_type": "skip"}', 1),
                   encoding="utf-8")
    assert any("03_sign_distributions.ipynb differs" in p for p in tools.problems(base))


def test_check_fails_on_a_stale_index_and_a_notebook_without_source(tmp_path):
    tools = _tools()
    base = _copy_notebooks(tmp_path)
    (base / "02_binarize_a_model.py").unlink()
    found = tools.problems(base)
    assert "00_index.py: its list of notebooks is stale (run `python tools/notebooks.py build`)" in found
    assert "02_binarize_a_model.ipynb: no source 02_binarize_a_model.py" in found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_round_trip_ipynb_to_source_to_ipynb(path):
    """The committed .ipynb written back as percent text is its source, byte for byte, and the
    source read again gives the same cells, tags and slide metadata."""
    tools = _tools()
    text = path.with_suffix(".py").read_text(encoding="utf-8")
    nb = _read(path)
    assert tools.to_text(nb) == text
    again = tools.from_text(path.stem, text)
    assert [(c.cell_type, c.source, c.metadata) for c in again.cells] == [
        (c.cell_type, c.source, c.metadata) for c in nb.cells]


def test_build_keeps_guarded_outputs_only_while_their_source_is_unchanged():
    tools = _tools()
    path = NB_DIR / "01_sign_and_ste.ipynb"
    text, old = path.with_suffix(".py").read_text(encoding="utf-8"), _read(path)
    assert tools.build(path.stem, text, old) == old
    changed = tools.build(path.stem, text.replace("x.grad = None", "x.grad = None  # reset", 1), old)
    guarded = [c for c in changed.cells if TAG in c.metadata.get("tags", [])]
    assert sum(not c.outputs for c in guarded) == 1


def test_tools_strip_keeps_only_guarded_outputs():
    tools = _tools()
    nb = tools.from_text("99_demo", '# %%\nprint(1)\n\n# %% tags=["nbval-check-output"]\n2\n')
    out = nbformat.v4.new_output("stream", name="stdout", text="1\n")
    nb.cells[0].outputs, nb.cells[0].execution_count = [out], 1
    nb.cells[1].outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "2"},
                                                  execution_count=2)]
    nb.cells[1].execution_count = 2
    nb.cells[1].metadata["execution"] = {"iopub.execute_input": "2024-01-01T00:00:00Z"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {}}
    tools.strip(nb)
    assert nb.cells[0].outputs == [] and nb.cells[0].execution_count is None
    assert nb.cells[1].outputs[0]["data"]["text/plain"] == "2"
    assert "execution" not in nb.cells[1].metadata and "widgets" not in nb.metadata


def test_sanitize_cfg_sections_have_regex_and_replace():
    cfg = configparser.ConfigParser()
    cfg.read(NB_DIR / "sanitize.cfg", encoding="utf-8")
    assert cfg.sections()
    for section in cfg.sections():
        re.compile(cfg[section]["regex"])
        assert "replace" in cfg[section]
