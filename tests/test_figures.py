"""Tests for bnnlab.figures (registry, tables, macros, export) and the protocol helpers of
bnnlab.experiments that the report's numbers rest on (integration, aggregation, selection).

The results fixture is small and synthetic, with hand-chosen numbers, so every table can be
checked against values computed here independently (``statistics``, closed forms).
"""
from __future__ import annotations

import math
import re
import shutil
import statistics
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from bnnlab import experiments as E
from bnnlab import figures as FG
from bnnlab.summary import summary

CHROMIUM = Path("/usr/bin/chromium")

# accuracies per (dataset, variant): one value per seed (0, 1, 2)
ACC = {
    ("digits", "float"): [0.97, 0.98, 0.99],
    ("digits", "binary"): [0.95, 0.96, 0.94],
    ("digits", "bireal"): [0.90, 0.92, 0.97],
    ("fashion-mnist", "float"): [0.85, 0.86, 0.84],
    ("fashion-mnist", "binary"): [0.80, 0.82, 0.81],
    ("fashion-mnist", "bireal"): [0.70, 0.75, 0.72],
}
SEEDS = (0, 1, 2)


def _history(n: int, peak: float) -> dict:
    acc = [peak - 0.05 * (n - 1 - i) for i in range(n)]
    return {"epoch": list(range(1, n + 1)), "train_loss": [1.0 / (i + 1) for i in range(n)],
            "train_acc": acc, "val_loss": [1.0 / (i + 2) for i in range(n)], "val_acc": acc,
            "time": [0.1] * n}


def _summary_dict() -> dict:
    from bnnlab import models

    return summary(models.binary_mlp(4, hidden=(8, 8), num_classes=2), (4,)).to_dict()


@pytest.fixture(scope="module")
def results() -> dict:
    header = {"schema": E.SCHEMA, "profile": "test"}
    datasets = {d: {"sizes": {"train": 1000, "val": 200, "test": 300}, "input_shape": [1, 8, 8],
                    "epochs": 3, "batch_size": 64, "lr": 0.003, "pool": 1, "hidden": [8, 8],
                    "width": 4, "optimizer": "adam", "schedule": "cosine",
                    "selection": "best validation accuracy"} for d in ("digits", "fashion-mnist")}
    runs = []
    for (d, v), accs in ACC.items():
        for seed, a in zip(SEEDS, accs, strict=True):
            runs.append({"dataset": d, "variant": v, "seed": seed, "epochs": 3, "best_epoch": 2,
                         "val_acc": a + 0.01, "val_loss": 0.3, "test_acc": a, "test_loss": 0.4,
                         "fit_seconds": 1.0, "history": _history(3, a)})
    edges = np.linspace(-1.5, 1.5, 7).tolist()
    signs = {"datasets": {"fashion-mnist": {
        "seed": 0,
        "flip_ratio": {"binary": {"epochs": [1, 2, 3], "total": [0.1, 0.01, 0.001],
                                  "layers": {"3": [0.1, 0.01, 0.001]}},
                       "bireal": {"epochs": [1, 2, 3], "total": [0.2, 0.02, 0.002],
                                  "layers": {}}},
        "sign_stats": {"variant": "binary", "edges": edges, "epochs": [0, 1, 2, 3],
                       "layers": {"3": {"weight_counts": [[0, 1, 5, 5, 1, 0]] * 4,
                                        "fraction_positive": [0.5, 0.52, 0.55, 0.6],
                                        "mean_distance": [0.1] * 4, "near_flip": [0.2] * 4,
                                        "input_counts": [[1, 2, 3, 3, 2, 1]] * 4,
                                        "input_fraction_positive": [0.5, 0.5, 0.49, 0.48]}}},
        "gradient_mismatch": {"variant": "binary", "epochs": [0, 1],
                              "results": [{"tanh β=1": {"3": {"cosine": 0.7, "rel_error": 0.5,
                                                              "norm_ratio": 1.0}},
                                           "tanh β=10": {"3": {"cosine": 0.9, "rel_error": 0.2,
                                                               "norm_ratio": 1.0}}}] * 2}}}}
    ablation = {"dataset": "fashion-mnist", "model": "binary",
                "quantizers": {k: v[0] for k, v in E.ABLATION_QUANTIZERS.items()},
                "protocol": datasets["fashion-mnist"],
                "runs": [{"quantizer": q, "seed": s, "test_acc": 0.8 + 0.01 * i + 0.002 * s,
                          "val_acc": 0.81, "best_epoch": 3}
                         for i, q in enumerate(E.ABLATION_QUANTIZERS) for s in SEEDS]}
    noise = {"dataset": "fashion-mnist", "sigmas": [0.0, 0.2, 0.4], "n_test": 300,
             "runs": [{"variant": v, "seed": s, "accuracy": [0.8, 0.7 - 0.1 * (v == "binary"),
                                                             0.5 - 0.1 * (v == "binary")]}
                      for v in ("float", "binary") for s in SEEDS]}
    x = np.linspace(-2, 2, 5).tolist()
    regression = {"n_samples": 100, "noise": 0.1, "grid_points": 1001,
                  "protocol": {"epochs": 7},
                  "runs": [{"variant": v, "seed": s, "sup": 0.5 + s / 10, "l1": 0.2, "l2": 0.25,
                            "val_loss": 0.01, "best_epoch": 3}
                           for v in ("float", "binary") for s in SEEDS],
                  "curves": {"x": x, "truth": x, "fits": {"float": x, "binary": x},
                             "train_x": x, "train_y": x}}
    sd = _summary_dict()
    costs = {"threads": 1, "kernel_info": {"isa": "avx2"}, "datasets": {"fashion-mnist": {
        "input_shape": [4], "timing_batch": 16,
        "variants": {"float": {"summary": sd, "packed_bytes": 0, "bits_bytes": 0.0,
                               "torch_forward_ms": 1.0},
                     "binary": {"summary": sd, "packed_bytes": 64, "bits_bytes": 8.0,
                                "torch_forward_ms": 3.0}}}}}
    run = {"total_seconds": 125.0, "machine": {"torch_threads": 1, "cpu_count": 2,
                                               "torch": "2.x"}, "finished": "now"}
    return {"ladder": _ladder(LADDER_ACC),
            "run": {**header, **run},
            "architectures": {**header, "datasets": datasets, "runs": runs},
            "signs": {**header, **signs}, "ablation": {**header, **ablation},
            "noise": {**header, **noise}, "regression": {**header, **regression},
            "costs": {**header, **costs}}


# ladder: test accuracy per rung and seed (0, 1, 2), chosen so that the verdicts are known:
# xnor within noise of binarynet, bireal better, reactnet worse, twostep better, distill within
# noise; binarynet hits the cap in every seed (under-trained).
LADDER_ACC = {
    "float": [0.86, 0.87, 0.85], "binarynet": [0.80, 0.81, 0.79], "xnor": [0.80, 0.80, 0.80],
    "bireal": [0.84, 0.85, 0.84], "reactnet": [0.835, 0.84, 0.83],
    "twostep": [0.85, 0.855, 0.845], "distill": [0.852, 0.853, 0.851]}


def _ladder(acc: dict, capped=("binarynet",)) -> dict:
    from bnnlab import ladder as L

    seeds = list(range(len(next(iter(acc.values())))))
    runs = []
    for rung, accs in acc.items():
        for seed, a in zip(seeds, accs, strict=True):
            runs.append({"rung": rung, "label": L.RUNG_LABELS[rung], "seed": seed,
                         "hash": f"{rung}{seed}", "test_acc": a, "val_acc": a,
                         "stopped_early": rung not in capped, "hit_cap": rung in capped,
                         "best_epoch": 4, "epochs_run": 6})
    settings = {k: v for k, v in L.rung_spec("float", "quick", 0).items()
                if k not in ("rung", "seed", "kind")}
    meta = {"schema": L.SCHEMA, "profile": "quick", "seeds": seeds, "rungs": list(acc),
            "settings": settings, "runs": [r["hash"] for r in runs], "run_seconds": 600.0,
            "wall_seconds": 610.0, "machine": {"cpus": 2}}
    return {"meta": meta, "runs": runs}


def _write_ladder(folder: Path, lad: dict) -> None:
    import json

    (folder / "runs").mkdir(parents=True)
    (folder / "ladder.json").write_text(json.dumps(lad["meta"]))
    for r in lad["runs"]:
        (folder / "runs" / f"{r['hash']}.json").write_text(json.dumps(r))


BENCH = {"rows": [
    {"case": "gemm1024", "group": "gemm", "threads": 1, "torch": 0.020, "bnnlab": 0.004,
     "ratio": 5.0, "unit": "s", "correct": True},
    {"case": "conv64x56", "group": "conv", "threads": 1, "torch": 0.010, "bnnlab": 0.005,
     "ratio": 2.0, "unit": "s", "correct": True},
    {"case": "mem_gemm4096", "group": "memory", "threads": None, "torch": 4096.0 * 4096 * 4,
     "bnnlab": 4096.0 * 4096 / 8, "ratio": 32.0, "unit": "bytes", "correct": True,
     "baseline": "float32"}]}


# ------------------------------------------------------------------------------ registry
def test_labels_are_latex_labels_and_files_are_distinct():
    assert len(FG.FIGURES) >= 10 and len(FG.TABLES) >= 8
    for label in FG.FIGURES:
        assert re.fullmatch(r"fig:[a-z0-9-]+", label) and label in FG.FIGURE_SIZES
    for label in FG.TABLES:
        assert re.fullmatch(r"tab:[a-z0-9-]+", label)
    with pytest.raises(ValueError, match="label"):
        FG.figure("surrogates")
    with pytest.raises(ValueError, match="label"):
        FG.table("fig:x")


@pytest.mark.parametrize("label", sorted(FG.FIGURES))
def test_every_figure_builds_from_the_fixture(results, label):
    fig = FG.FIGURES[label](results)
    assert isinstance(fig, go.Figure)
    assert len(fig.data) >= 1
    paper = FG._for_paper(fig, *FG.FIGURE_SIZES[label])
    assert paper.layout.title.text is None and paper.layout.width == FG.FIGURE_SIZES[label][0]


def test_architecture_figure_shows_mean_sd_and_every_seed(results):
    fig = FG.FIGURES["fig:architectures"](results)
    means = [t for t in fig.data if t.name == "mean ± sd"]
    assert len(means) == 2                                   # one panel per data set
    digits = means[0]
    assert list(digits.x) == ["Float MLP", "BinaryNet", "Bi-Real"]
    assert digits.y[2] == pytest.approx(statistics.mean(ACC[("digits", "bireal")]))
    assert digits.error_y.array[2] == pytest.approx(statistics.stdev(ACC[("digits", "bireal")]))
    seeds = [t for t in fig.data if t.name == "seeds"][0]
    assert sorted(seeds.y) == sorted(a for (d, _), v in ACC.items() if d == "digits" for a in v)


def test_noise_figure_mean_per_sigma(results):
    fig = FG.FIGURES["fig:noise"](results)
    binary = next(t for t in fig.data if t.name == "BinaryNet")
    np.testing.assert_allclose(binary.y, [0.8, 0.6, 0.4])
    np.testing.assert_allclose(binary.error_y.array, [0, 0, 0], atol=1e-12)


def test_missing_results_name_the_file(results):
    with pytest.raises(FG.MissingResults, match="noise"):
        FG.FIGURES["fig:noise"]({k: v for k, v in results.items() if k != "noise"})


# ------------------------------------------------------------------------------ tables
def _check_booktabs(tex: str) -> list[list[str]]:
    """Structure of a booktabs tabular; returns the body rows (after the header) as cells."""
    lines = [l for l in tex.strip().splitlines() if not l.startswith("%")]
    m = re.fullmatch(r"\\begin\{tabular\}\{([lcr]+)\}", lines[0])
    assert m, lines[0]
    ncol = len(m.group(1))
    assert lines[1] == r"\toprule" and lines[-2] == r"\bottomrule"
    assert lines[-1] == r"\end{tabular}"
    assert r"\midrule" in lines and r"\hline" not in tex
    assert tex.count("{") == tex.count("}")
    rows = []
    first_mid = lines.index(r"\midrule")
    for l in lines[2:first_mid]:                       # header (and units) lines
        assert len(re.split(r"(?<!\\)&", l[:-2])) == ncol and l.endswith(r"\\"), l
    for l in lines[first_mid + 1:-2]:
        if l == r"\midrule":
            continue
        assert l.endswith(r"\\"), l
        if l.startswith(r"\multicolumn"):
            assert l.startswith(rf"\multicolumn{{{ncol}}}")
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)&", l[:-2])]
        assert len(cells) == ncol, l
        rows.append(cells)
    return rows


@pytest.mark.parametrize("label", sorted(FG.TABLES))
def test_every_table_is_valid_booktabs(results, label):
    _check_booktabs(FG.TABLES[label](results))
    _check_booktabs(FG.TABLES[label]({**results, "bench": BENCH}))


def test_architecture_table_numbers(results):
    rows = _check_booktabs(FG.TABLES["tab:architectures"](results))
    body = {r[0]: r for r in rows}
    for v, label in (("float", "Float MLP"), ("binary", "BinaryNet"), ("bireal", "Bi-Real")):
        for col, d in ((1, "digits"), (2, "fashion-mnist")):
            a = ACC[(d, v)]
            want = f"${100 * statistics.mean(a):.1f} \\pm {100 * statistics.stdev(a):.1f}$"
            assert body[label][col] == want


def test_regression_and_ablation_tables(results):
    rows = _check_booktabs(FG.TABLES["tab:regression"](results))
    sup = [0.5, 0.6, 0.7]
    assert rows[0][1] == f"${statistics.mean(sup):.3f} \\pm {statistics.stdev(sup):.3f}$"
    assert rows[1][0] == "Binary MLP"
    rows = _check_booktabs(FG.TABLES["tab:ablation"](results))
    assert [r[0] for r in rows] == [v[0] for v in E.ABLATION_QUANTIZERS.values()]
    last = [0.83, 0.832, 0.834]
    m, sd = 100 * statistics.mean(last), 100 * statistics.stdev(last)
    assert rows[3][1] == f"${m:.1f} \\pm {sd:.1f}$"


def test_bench_tables_say_not_measured_without_json_and_read_it_with(results):
    assert FG.NOT_MEASURED in FG.TABLES["tab:bench"](results)
    assert FG.NOT_MEASURED in FG.TABLES["tab:bench-memory"](results)
    rows = _check_booktabs(FG.TABLES["tab:bench"]({**results, "bench": BENCH}))
    assert rows[0][:6] == ["gemm1024", "1", "torch float32", "20", "4", r"5.0$\times$"]
    rows = _check_booktabs(FG.TABLES["tab:bench-memory"]({**results, "bench": BENCH}))
    assert rows[0][2:] == [f"{4096 * 4096 * 4 / 1024:.1f}", f"{4096 * 4096 / 8 / 1024:.1f}",
                           r"32.0$\times$"]


def test_bench_targets_table_and_macros_come_from_the_rows(results):
    assert FG.NOT_MEASURED in FG.TABLES["tab:bench-targets"](results)
    pk = {"binary": {"avx2": 1e11}, "fp32": {"avx2_fma": 1e10}, "torch_fp32": "avx2_fma"}
    conv = {"case": "conv64x56", "group": "conv", "threads": 1, "torch": 0.01, "bnnlab": 0.002,
            "ratio": 5.0, "unit": "s", "correct": True, "isa": "avx2", "macs": 10 ** 8,
            "peers": {"openvino": {"name": "OpenVINO", "time": 0.004, "ratio": 2.0,
                                   "correct": True}}}
    e2e = {"case": "e2e_resnet18", "group": "e2e", "threads": 1, "torch": 0.05, "bnnlab": 0.01,
           "ratio": 5.0, "unit": "s", "correct": True}
    bench = {"rows": [conv, dict(e2e), dict(e2e, case="e2e_vgg_small", ratio=8.5)], "peaks": pk,
             "cpu": {"model": "Test CPU", "cpus": 2}, "load_average": [3.0, 2.0, 1.0]}
    rows = _check_booktabs(FG.TABLES["tab:bench-targets"]({**results, "bench": bench}))
    # 1e8 MACs in 2 ms = 50 GMAC/s of the 100 GMAC/s peak
    assert rows[0] == [r"3$\times$3 convolutions, batch 1 and 16: efficiency at avx2",
                       r"$\geq$ 65\%", "0 of 1", r"conv64x56: 50\%"]
    assert [r[2] for r in rows[1:]] == ["0 of 1", "1 of 1", "0 of 1"]   # OpenVINO, VGG, ResNet
    assert "conv64x56" not in str(bench["rows"][0]["peers"]["openvino"].get("eff", ""))  # no mutation
    tex = FG.macros_tex({**results, "bench": bench})
    # OpenVINO: 1e8 MACs in 4 ms = 25 % of the peak, so a kernel at the peak is at most 4x faster
    for line in (r"\newcommand{\BenchOpenvinoEffMin}{25}", r"\newcommand{\BenchOpenvinoCeilMax}{4.0}",
                 r"\newcommand{\BenchEtoEVgg}{8.5}", r"\newcommand{\BenchEtoEResNet}{5.0}",
                 r"\benchmodelstrue", r"\benchceilingtrue",
                 r"\newcommand{\BenchLoadNote}{while the machine was shared (load average 3.0 on 2 "
                 "logical CPUs)}"):
        assert line in tex, line
    quiet = FG.macros_tex({**results, "bench": {**bench, "load_average": [0.4, 1, 1]}})
    assert "on a quiet machine (load average 0.4" in quiet
    assert r"\benchmodelsfalse" in FG.macros_tex({**results, "bench": {**bench, "rows": [conv]}})


def test_costs_table_reads_the_summary(results):
    rows = _check_booktabs(FG.TABLES["tab:costs"](results))
    t = _summary_dict()["totals"]
    binary = next(r for r in rows if r[0] == "BinaryNet")
    assert binary[1] == f"{t['total_params']:,}".replace(",", r"\,")
    assert binary[4] == f"{t['float32_bytes'] / t['memory_bytes']:.1f}"
    assert binary[-1] == "3.00"


def test_xnor_example_is_the_popcount_identity():
    ex = FG.xnor_example(k=12, seed=7)
    sa, sb = np.where(np.array(ex["a"]) < 0, -1, 1), np.where(np.array(ex["b"]) < 0, -1, 1)
    assert ex["sa"] == sa.tolist() and ex["sb"] == sb.tolist()
    assert 0.0 in ex["a"] and ex["sa"][ex["a"].index(0.0)] == 1          # sign(0) = +1
    # word bit j is 1 iff element j is negative (LSB first)
    assert ex["wa"] == sum(1 << j for j in range(12) if ex["a"][j] < 0)
    assert ex["wb"] == sum(1 << j for j in range(12) if ex["b"][j] < 0)
    pop = int(np.sum(sa != sb))
    assert ex["popcount"] == pop
    assert ex["dot"] == ex["kernel"] == ex["direct"] == int(sa @ sb) == 12 - 2 * pop


# ------------------------------------------------------------------------------ macros
def test_macros_are_letters_only_and_quote_the_fixture(results):
    tex = FG.macros_tex(results)
    names = re.findall(r"\\newcommand\{\\([^}]*)\}", tex)
    assert names and all(re.fullmatch(r"[A-Za-z]+", n) for n in names)
    assert len(names) == len(set(names))
    m = FG.macros(results)
    assert m["AccBiRealDigits"] == f"{100 * statistics.mean(ACC[('digits', 'bireal')]):.1f}"
    assert m["AccSdBinaryNetFashion"] == \
        f"{100 * statistics.stdev(ACC[('fashion-mnist', 'binary')]):.1f}"
    assert m["NumSeeds"] == "3" and m["ExpMinutes"] == f"{125 / 60:.1f}"
    assert m["BestBinaryFashion"] == "BinaryNet"
    assert m["NoiseRobusterOfTwo"] == "Float MLP"
    assert m["BenchStatus"] == FG.NOT_MEASURED and r"\benchmeasuredfalse" in tex
    with_bench = FG.macros({**results, "bench": BENCH})
    assert with_bench["BenchStatus"] == "measured" and with_bench["BenchGemmSpeedup"] == "5.0"


def test_pm_formats_and_marks_undefined_sd():
    assert FG.pm(0.9734, 0.0042, scale=100) == r"$97.3 \pm 0.4$"
    assert FG.pm(0.5, math.nan, digits=2) == "$0.50$"
    assert FG.pm(math.nan, 0.1) == "--"


# ------------------------------------------------------------------------------ writing
def test_write_all_without_pdf(tmp_path, results):
    import json

    res = tmp_path / "results"
    res.mkdir()
    for name, payload in results.items():
        if name != "ladder":
            (res / f"{name}.json").write_text(json.dumps(payload))
    _write_ladder(res / "ladder", results["ladder"])
    out = FG.write_all(tmp_path, pdf=False, log=lambda s: None)
    assert out["guards"] == []
    assert {p.name for p in out["tables"]} == {f"{FG._stem(l)}.tex" for l in FG.TABLES}
    assert (tmp_path / "macros.tex").read_text().count(r"\newcommand") > 20
    first = (tmp_path / "tables" / "architectures.tex").read_text().splitlines()[0]
    assert first.startswith("% tab:architectures: made by bnnlab.figures.architectures_table")
    (res / "noise.json").write_text(json.dumps({**results["noise"], "schema": "other/0"}))
    with pytest.raises(ValueError, match="schema"):
        FG.load_results(res)


@pytest.mark.skipif(not CHROMIUM.exists() or shutil.which("pdftotext") is None,
                    reason="needs Debian's chromium (and poppler-utils)")
def test_one_figure_exports_to_a_vector_pdf(tmp_path, results):
    import subprocess

    label = "fig:surrogates"
    fig = FG._for_paper(FG.FIGURES[label](results), *FG.FIGURE_SIZES[label])
    path = tmp_path / "surrogates.pdf"
    FG.export_pdfs({label: fig}, {label: path}, FG.FIGURE_SIZES)
    assert path.read_bytes()[:5] == b"%PDF-"
    text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True).stdout
    assert "ApproxSign" in text                  # vector text, not a raster image


def test_report_uses_every_label_with_its_generator():
    """paper/report.tex: each figure/table label sits next to the name of the function that
    makes it, every registered label is used, and only generated files are included."""
    tex = (Path(__file__).resolve().parents[1] / "paper" / "report.tex").read_text()
    made_by = r"\\label\{((?:fig|tab):[a-z0-9-]+)\}\s*% made by bnnlab\.figures\.(\w+)"
    pairs = dict(re.findall(made_by, tex))
    registry = {**FG.FIGURES, **FG.TABLES}
    assert set(pairs) == set(registry)
    assert all(registry[label].__name__ == fn for label, fn in pairs.items())
    for name in re.findall(r"\\includegraphics(?:\[[^]]*\])?\{([^}]*)\}", tex):
        assert f"fig:{Path(name).stem}" in FG.FIGURES
    for name in re.findall(r"\\input\{([^}]*)\}", tex):
        assert name.startswith("generated/")


# ------------------------------------------------------------------------------ the ladder
T975_2DF = 4.302652729911275      # Student's t, 97.5 % quantile, 2 degrees of freedom


def test_ladder_stats_paired_steps_and_verdicts(results):
    rows = FG.ladder_stats(results)
    assert [r["rung"] for r in rows] == list(LADDER_ACC)
    for r in rows:
        assert r["mean"] == pytest.approx(statistics.mean(LADDER_ACC[r["rung"]]))
        assert r["sd"] == pytest.approx(statistics.stdev(LADDER_ACC[r["rung"]]))
    react = rows[4]
    d = [a - b for a, b in zip(LADDER_ACC["reactnet"], LADDER_ACC["bireal"], strict=True)]
    half = T975_2DF * statistics.stdev(d) / math.sqrt(3)
    assert react["diff"]["mean"] == pytest.approx(statistics.mean(d))
    assert react["diff"]["lo"] == pytest.approx(statistics.mean(d) - half)
    assert react["diff"]["hi"] == pytest.approx(statistics.mean(d) + half)
    assert [r["verdict"] for r in rows] == ["first", "worse", "within noise", "better", "worse",
                                            "better", "within noise"]
    assert [r["under_trained"] for r in rows] == [r == "binarynet" for r in LADDER_ACC]
    assert rows[1]["capped"] == 3 and rows[1]["stopped"] == 0


def test_ladder_table_and_anchors(results):
    tab = FG.TABLES["tab:ladder"](results)
    assert tab.count(r"$^\dagger$") == 2            # the flagged rung and the footnote
    assert "better" in tab and "within noise" in tab and "worse" in tab
    anchors = FG.TABLES["tab:anchors"](results)
    assert r"\emph{published}" in anchors and r"\emph{measured here}" in anchors
    bib = (Path(__file__).resolve().parents[1] / "paper" / "refs.bib").read_text()
    for *_, key, _note in FG.ANCHORS:
        assert f"{{{key}," in bib
        assert rf"\cite{{{key}}}" in anchors


def test_ladder_macros_are_chosen_by_the_data(results):
    m = FG.macros(results)
    assert m["LadderBestBinary"] == "+ distillation"
    assert m["LadderAccDistill"] == "85.2" and m["LadderStepBiReal"] == "+4.3"
    assert m["LadderLargestStep"] == "+ Bi-Real shortcuts"
    assert m["LadderCapped"] == "3" and m["LadderStopped"] == "18" and m["LadderRuns"] == "21"
    assert "float twin stays above every binary rung" in m["LadderFloatSentence"]
    assert "+ ReActNet RSign/RPReLU loses here" in m["LadderLiteratureSentence"]
    assert m["LadderStepSentence"].startswith("+ Bi-Real shortcuts and + two-step training "
                                              "improve")
    assert "BinaryNet (sign, STE) hit the epoch cap" in m["LadderUnderTrained"]
    # one seed: no verdict, and the sentences say so
    one = {**results, "ladder": _ladder({k: v[:1] for k, v in LADDER_ACC.items()}, capped=())}
    m1 = FG.macros(one)
    assert "one seed" in m1["LadderStepSentence"].lower()
    assert m1["LadderUnderTrained"].startswith("No rung")
    # a binary rung above the float twin changes the sentence
    acc = {**LADDER_ACC, "distill": [0.90, 0.91, 0.89]}
    m2 = FG.macros({**results, "ladder": _ladder(acc)})
    assert m2["LadderFloatSentence"].startswith("the best binary rung (+ distillation) reaches")


def test_guards_pass_on_consistent_data_and_fire_on_contradictions(results, tmp_path):
    import json

    assert FG.check_guards(results) == []
    acc = {**LADDER_ACC, "distill": [0.90, 0.91, 0.89]}
    fired = FG.check_guards({**results, "ladder": _ladder(acc)})
    assert len(fired) == 1 and fired[0].startswith("ladder-binary-below-float")
    signs = json.loads(json.dumps(results["signs"]))
    signs["datasets"]["fashion-mnist"]["flip_ratio"]["binary"]["total"] = [0.01, 0.1, 0.2]
    fired = FG.check_guards({**results, "signs": signs})
    assert [f.split(":")[0] for f in fired] == ["flip-ratio-falls"]
    costs = json.loads(json.dumps(results["costs"]))
    for r in costs["datasets"]["fashion-mnist"]["variants"]["binary"]["summary"]["records"]:
        if r["type"] == "BinaryLinear":
            r["memory_bytes"] = 10_000.0                # binary weights would hold most bytes
    fired = FG.check_guards({**results, "costs": costs})
    assert [f.split(":")[0] for f in fired] == ["float-ends-hold-most-bytes"]
    missing = {**results, "ladder": _ladder(LADDER_ACC)}
    missing["ladder"]["runs"] = missing["ladder"]["runs"][:-1]
    assert FG.check_guards(missing)[0].startswith("ladder-complete")
    # the command fails the build (status 3) when a guard fires
    res = tmp_path / "results"
    res.mkdir()
    for name, payload in {**results, "signs": signs}.items():
        if name != "ladder":
            (res / f"{name}.json").write_text(json.dumps(payload))
    _write_ladder(res / "ladder", results["ladder"])
    assert FG.main([str(tmp_path), "--no-pdf"]) == 3


def test_weight_clip_sentence_is_read_from_the_compared_models():
    text = FG.weight_clip_text()
    clipped = [v.label for v in E.VARIANTS.values() if v.binary and v.kind == "mlp"]
    assert text.startswith("Latent weights are clipped to $[-1, 1]$")
    assert all(label in text for label in clipped)
    assert "Bi-Real and ReActNet are trained without clipping" in text
