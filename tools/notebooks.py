"""Build, check and strip bnnlab's notebooks from their jupytext sources.

Each notebook has one source, ``notebooks/NN_slug.py``, in jupytext's percent format: review and
edit that file; ``notebooks/NN_slug.ipynb`` (what students open) is built from it and committed
with outputs stripped. A cell header carries the cell's metadata, which survives the round trip::

    # %% [markdown] slideshow={"slide_type": "slide"}      a heading opens a RISE slide
    # %% tags=["nbval-check-output"] slideshow={...}        output kept in git, compared by nbval

Commands (``python tools/notebooks.py COMMAND [NN ...]``, notebooks by number or name prefix)::

    run     build, execute and strip (stores the outputs of the nbval-check-output cells)
    build   write the .ipynb from the .py without executing (keeps the stored outputs of guarded
            cells whose source did not change)
    check   exit 1 if a notebook is out of sync with its source, not stripped, or lacks an output
    strip   strip the outputs of notebooks/*.ipynb in place (except guarded cells)
    source  write the .py from the .ipynb (after editing the notebook itself in JupyterLab)

``run`` executes with ``jupyter nbconvert --to notebook --execute --inplace
--ExecutePreprocessor.store_widget_state=False`` (kernel ``python3``, working directory
``notebooks/``) and prints wall, kernel and CPU seconds; the budget is 30 s of kernel time. The
list of notebooks in ``00_index.py`` is rewritten from the titles and questions of the others on
every build.

The two files are not paired through jupytext metadata on purpose: JupyterLab with jupytext
refuses to open a paired notebook whose ``.ipynb`` is more than a second newer than its ``.py``
(after a ``git clone`` or ``git pull``, an accident of file times), and rewrites the ``.py`` when a
student saves. Here the ``.py`` is the only source, and ``check`` (run by
``tests/test_notebooks_meta.py``) catches any drift.
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import resource
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent
NB_DIR = ROOT / "notebooks"
CHECK_TAG = "nbval-check-output"
BUDGET_S = 30.0
INDEX = "00_index"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE_INFO = {"name": "python", "pygments_lexer": "ipython3"}  # no versions: clean diffs
# What the .py keeps: the kernelspec and each cell's tags and slide type; nothing else.
TEXT_FILTERS = {"notebook_metadata_filter": "kernelspec,-all", "cell_metadata_filter": "tags,slideshow,-all"}
_LISTING = re.compile(r"^- \[\d\d · .*\]\(\d\d_[a-z0-9_]+\.ipynb\): .*$")


def sources(names=()) -> dict[str, Path]:
    """``{stem: path}`` of the notebook sources ``notebooks/NN_*.py``, all or those named."""
    found = {p.stem: p for p in sorted(NB_DIR.glob("[0-9][0-9]_*.py"))}
    if not names:
        return found
    chosen = {INDEX: found[INDEX]}  # titles may have changed: always rebuild the index
    for n in names:
        hits = [k for k in found if k == n or k.startswith(n)]
        if not hits:
            raise SystemExit(f"no notebook matches {n!r}; have {sorted(found)}")
        chosen.update({k: found[k] for k in hits})
    return chosen


def to_text(nb: nbformat.NotebookNode) -> str:
    """The percent-format source of a notebook (kernelspec, cell tags and slide types kept)."""
    nb = copy.deepcopy(nb)
    nb.metadata["jupytext"] = dict(TEXT_FILTERS)
    for cell in nb.cells:  # the order of the .ipynb's JSON: one canonical text per notebook
        cell.metadata = dict(sorted(cell.metadata.items()))
    return jupytext.writes(nb, fmt="py:percent")


def from_text(name: str, text: str) -> nbformat.NotebookNode:
    """The notebook (no outputs) of a percent-format source, with stable cell ids."""
    nb = jupytext.reads(text, fmt="py:percent")
    nb.metadata = {"kernelspec": nb.metadata.get("kernelspec", dict(KERNELSPEC)), "language_info": dict(LANGUAGE_INFO)}
    for i, cell in enumerate(nb.cells):
        cell.id = f"{name[:2]}-{i:02d}"  # stable ids: clean diffs
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nbformat.from_dict(nb)


def title_and_question(nb: nbformat.NotebookNode) -> tuple[str, str]:
    """The ``# NN · Title`` line and the question of a notebook's first cell."""
    first = nb.cells[0].source
    title = first.splitlines()[0].lstrip("# ").strip()
    q = re.search(r"\*\*Question\.\*\*\s*(.+)", first)
    return title, (q.group(1).strip() if q else "")


def index_text(paths: dict[str, Path]) -> str:
    """``00_index.py`` with its list of notebooks rewritten from their first cells."""
    items = []
    for name, path in sorted(paths.items()):
        if name != INDEX:
            title, question = title_and_question(from_text(name, path.read_text(encoding="utf-8")))
            items.append(f"- [{title}]({name}.ipynb): {question}")
    nb = from_text(INDEX, paths[INDEX].read_text(encoding="utf-8"))
    lines = nb.cells[0].source.splitlines()
    at = [i for i, line in enumerate(lines) if _LISTING.match(line)]
    if not at:
        raise ValueError(f"{INDEX}.py: its first cell has no list of notebooks to rewrite")
    nb.cells[0].source = "\n".join(lines[:at[0]] + items + lines[at[-1] + 1:])
    return to_text(nb)


def strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Remove outputs (except guarded cells), counts, execution metadata and widget state."""
    nb.metadata.pop("widgets", None)
    nb.metadata["language_info"] = dict(LANGUAGE_INFO)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        if CHECK_TAG not in cell.metadata.get("tags", []):
            cell.outputs, cell.execution_count = [], None
        for out in cell.outputs:
            out.get("metadata", {}).pop("application/vnd.jupyter.widget-view+json", None)
    return nb


def build(name: str, text: str, old: nbformat.NotebookNode | None = None) -> nbformat.NotebookNode:
    """The notebook of a source; a guarded cell whose source is unchanged from ``old`` (the
    committed notebook) keeps its stored output."""
    nb = from_text(name, text)
    kept = {c.source: c for c in (old.cells if old is not None else [])
            if c.cell_type == "code" and CHECK_TAG in c.metadata.get("tags", [])}
    for cell in nb.cells:
        if CHECK_TAG in cell.metadata.get("tags", []) and cell.source in kept:
            cell.outputs = copy.deepcopy(kept[cell.source].outputs)
            cell.execution_count = kept[cell.source].execution_count
    return nb


def read(path: Path) -> nbformat.NotebookNode | None:
    return nbformat.read(path, as_version=4) if path.exists() else None


def write(nb: nbformat.NotebookNode, path: Path) -> None:
    nbformat.validate(nb)
    path.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")


def _cell_seconds(nb: nbformat.NotebookNode) -> float:
    """Kernel time from the first cell's start to the last reply (nbclient's timing metadata)."""
    stamps = []
    for cell in nb.cells:
        ex = cell.metadata.get("execution", {})
        for key in ("iopub.execute_input", "shell.execute_reply"):
            if key in ex:
                stamps.append(datetime.fromisoformat(ex[key].replace("Z", "+00:00")))
    return (max(stamps) - min(stamps)).total_seconds() if stamps else float("nan")


def execute(path: Path) -> tuple[float, float, float]:
    """Execute a notebook in place with nbconvert; ``(wall seconds, kernel seconds, CPU
    seconds)``. The CPU time (user + system of nbconvert and its kernel) does not grow when
    other jobs share the machine; wall times do."""
    cmd = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
           "--inplace", "--ExecutePreprocessor.store_widget_state=False",
           "--ExecutePreprocessor.timeout=600", "--ExecutePreprocessor.kernel_name=python3",
           str(path)]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=path.parent)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return wall, _cell_seconds(nbformat.read(path, as_version=4)), cpu


def _cells(nb: nbformat.NotebookNode) -> list[tuple]:
    return [(c.cell_type, c.id, c.source, json.dumps(c.metadata, sort_keys=True)) for c in nb.cells]


def problems(nb_dir: Path | None = None) -> list[str]:
    """What is out of sync in ``nb_dir`` (default ``notebooks/``): empty when all is well."""
    base = NB_DIR if nb_dir is None else Path(nb_dir)
    paths = {p.stem: p for p in sorted(base.glob("[0-9][0-9]_*.py"))}
    found = []
    if INDEX in paths and index_text(paths) != paths[INDEX].read_text(encoding="utf-8"):
        found.append(f"{INDEX}.py: its list of notebooks is stale (run `python tools/notebooks.py build`)")
    for name, src in paths.items():
        text = src.read_text(encoding="utf-8")
        if to_text(from_text(name, text)) != text:
            found.append(f"{src.name}: not in jupytext's canonical form "
                         f"(run `python tools/notebooks.py source {name[:2]}`)")
        nb = read(base / f"{name}.ipynb")
        if nb is None:
            found.append(f"{name}.ipynb: missing (run `python tools/notebooks.py run {name[:2]}`)")
            continue
        if _cells(nb) != _cells(from_text(name, text)) or nb.metadata.get("kernelspec") != from_text(
                name, text).metadata["kernelspec"]:
            found.append(f"{name}.ipynb differs from {src.name} (run `python tools/notebooks.py run {name[:2]}`)")
        if json.dumps(strip(copy.deepcopy(nb)), sort_keys=True) != json.dumps(nb, sort_keys=True):
            found.append(f"{name}.ipynb: not stripped (outputs or widget state)")
        if any(CHECK_TAG in c.metadata.get("tags", []) and not c.outputs for c in nb.cells):
            found.append(f"{name}.ipynb: a {CHECK_TAG} cell has no stored output "
                         f"(run `python tools/notebooks.py run {name[:2]}`)")
    extra = {p.stem for p in base.glob("[0-9][0-9]_*.ipynb")} - set(paths)
    found += [f"{n}.ipynb: no source {n}.py" for n in sorted(extra)]
    return found


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["run", "build", "check", "strip", "source"])
    ap.add_argument("names", nargs="*", help="notebooks (number or name prefix); default: all")
    args = ap.parse_args(argv)
    if args.command == "check":
        found = problems()
        print("\n".join(found) or "notebooks in sync with their sources")
        return 1 if found else 0
    if args.command == "strip":
        for path in sorted(NB_DIR.glob("*.ipynb")):
            write(strip(nbformat.read(path, as_version=4)), path)
        return 0
    paths = sources(args.names)
    if args.command == "source":
        for path in paths.values():
            if (nb := read(path.with_suffix(".ipynb"))) is not None:
                path.write_text(to_text(nb), encoding="utf-8")
        return 0
    paths[INDEX].write_text(index_text(sources()), encoding="utf-8")
    times = {}
    for name, path in paths.items():
        target = path.with_suffix(".ipynb")
        write(build(name, path.read_text(encoding="utf-8"), read(target)), target)
        if args.command == "run":
            times[name] = execute(target)
            write(strip(nbformat.read(target, as_version=4)), target)
            print(f"{name}: {times[name][0]:.1f} s wall, {times[name][1]:.1f} s in the kernel, "
                  f"{times[name][2]:.1f} s CPU", flush=True)
    slow = [n for n, (_, k, _) in times.items() if k > BUDGET_S]
    if times:
        print(f"{len(times)} notebooks; over the {BUDGET_S:.0f} s budget: {', '.join(slow) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
