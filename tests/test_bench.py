"""Tests of bnnlab.bench: row schema, correctness gate, table and JSON output (no timing asserts)."""
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnnlab import bench, kernels

KEYS = {"case", "group", "threads", "baseline", "torch", "bnnlab", "ratio", "unit", "correct",
        "packing", "note", "macs", "isa", "torch_eff", "bnnlab_eff", "peers", "torch_2v1",
        "peak_2v1", "pack_time", "pack_share", "steal"}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    kernels.set_num_threads(None)


def test_run_quick_small_case_rows_have_the_schema():
    before = torch.get_num_threads()
    rows = bench.run(cases=["gemm512"], quick=True, threads=(1,), repeats=2)
    assert torch.get_num_threads() == before            # thread settings are restored
    assert [r["case"] for r in rows] == ["gemm512", "gemm512_prepacked"]
    for r in rows:
        assert set(r) == KEYS
        assert r["group"] == "gemm" and r["threads"] == 1 and r["unit"] == "s"
        assert r["correct"] is True
        assert r["torch"] > 0 and r["bnnlab"] > 0
        assert r["ratio"] == pytest.approx(r["torch"] / r["bnnlab"])
        assert r["macs"] == 512 ** 3 and r["isa"] == kernels.kernel_info()["isa"]
        pk = bench.peaks()
        if pk["supported"]:   # efficiency = MAC/s over the measured peak (no bound asserted)
            assert r["bnnlab_eff"] == pytest.approx(r["macs"] / r["bnnlab"] / pk["binary"][r["isa"]])
            fp = pk["fp32"][pk["torch_fp32"]]
            assert r["torch_eff"] == pytest.approx(r["macs"] / r["torch"] / fp)
    assert "pre-packed" in rows[1]["packing"]
    # packing A alone, timed in the same interleaved run: its share of the packed-in-the-loop call
    assert rows[0]["pack_time"] > 0 and rows[0]["pack_share"] == pytest.approx(
        rows[0]["pack_time"] / rows[0]["bnnlab"])


def test_an_incorrect_kernel_gets_no_time(monkeypatch):
    real = kernels.xnor_matmul

    def wrong(a, b, n_threads=None):
        out = real(a, b, n_threads)
        out[0, 0] += 2
        return out
    monkeypatch.setattr(kernels, "xnor_matmul", wrong)
    rows = bench.run(cases=["gemv1x4096"], quick=True, threads=(1,), repeats=2)
    assert len(rows) == 1 and rows[0]["correct"] is False
    assert rows[0]["torch"] is None and rows[0]["bnnlab"] is None and rows[0]["ratio"] is None
    assert "NO" in bench.format_table(rows)


def test_memory_rows():
    rows = bench.run(cases=["mem_gemm4096"], threads=(1,))
    assert rows[0]["unit"] == "bytes" and rows[0]["threads"] is None
    assert rows[0]["torch"] == 4096 * 4096 * 4 and rows[0]["bnnlab"] == 4096 * 64 * 8
    assert rows[0]["ratio"] == 32


def test_case_selection():
    assert bench._select(["gemm"], quick=True) == ["gemm512", "gemm1024", "gemm2048"]
    assert "gemm4096" in bench._select("gemm", quick=False)
    assert bench._select("conv256", quick=False) == ["conv256x14", "conv256x14b16"]
    assert bench._select("conv256", quick=True) == ["conv256x14"]
    assert bench._select("conv64,memory", quick=False) == ["conv64x56", "conv64x56b16", "mem_gemm4096",
                                                           "mem_cnn_weights", "mem_cnn_file"]
    with pytest.raises(ValueError, match="cases"):
        bench.run(cases=["nope"])
    with pytest.raises(ValueError, match="threads"):
        bench.run(cases=["gemm512"], threads=(0,))


def test_format_table_renders_every_row():
    rows = [
        {"case": "gemm512", "group": "gemm", "threads": 1, "baseline": "torch float32",
         "torch": 2e-3, "bnnlab": 1e-4, "ratio": 20.0, "unit": "s", "correct": True,
         "packing": "A packed", "note": ""},
        {"case": "mem_x", "group": "memory", "threads": None, "baseline": "float32",
         "torch": 4096, "bnnlab": 128, "ratio": 32.0, "unit": "bytes", "correct": True,
         "packing": "", "note": "n"},
    ]
    text = bench.format_table(rows)
    lines = text.splitlines()
    assert len(lines) == 4 and lines[0].startswith("case")
    assert "2 ms" in lines[2] and "100 us" in lines[2] and "20.0x" in lines[2]
    assert "4.0 KiB" in lines[3] and "128 B" in lines[3] and "32.0x" in lines[3]


def test_main_writes_valid_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = bench.main(["--quick", "--cases", "gemm512", "--threads", "1", "--repeats", "2",
                     "--json", str(out), "--markdown"])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert [r["case"] for r in doc["rows"]] == ["gemm512", "gemm512_prepacked"]
    assert doc["threads"] == [1] and "isa" in doc["kernel_info"]
    assert doc["cpu"]["model"] and isinstance(doc["cpu"]["flags"], list)
    assert set(kernels._available_isas()) <= set(doc["peaks"]["binary"])
    text = capsys.readouterr().out
    assert "gemm512_prepacked" in text and "| case | threads |" in text and "Peaks per core" in text
    assert bench.main(["--cases", "bogus"]) == 2


def test_latency_helper():
    model = torch.nn.Linear(4, 2)
    t = bench.latency(model, torch.zeros(1, 4), repeats=3, warmup=1)
    assert isinstance(t, float) and t > 0
    with pytest.raises(ValueError, match="repeats"):
        bench.latency(model, torch.zeros(1, 4), repeats=0)
    with pytest.raises(TypeError, match="model"):
        bench.latency(3, torch.zeros(1, 4))


def test_pm1_data_is_binary():
    x = bench._pm1(3, 5, seed=0)
    assert set(np.unique(x.numpy())) <= {-1.0, 1.0}


def test_model_latency_uses_packed_export_for_binary_models():
    import torch

    from bnnlab import models

    torch.manual_seed(0)
    binary = models.binary_mlp(64, (32, 32), 10)
    res = bench.model_latency(binary, (64,), repeats=2, warmup=1)
    assert res["packed"] is not None and res["packed_note"] == "exported"
    assert res["best"] == res["packed"] and res["torch"] > 0
    assert binary.training  # training flag restored

    float_twin = models.binary_mlp(64, (32, 32), 10, binary=False)
    res = bench.model_latency(float_twin, (64,), repeats=2, warmup=1)
    assert res["packed"] is None and res["packed_note"].startswith("not exportable")
    assert res["best"] == res["torch"]


def test_model_latency_rejects_bad_arguments():
    import pytest
    import torch

    with pytest.raises(ValueError, match="packed"):
        bench.model_latency(torch.nn.Linear(2, 2), (2,), packed="maybe")
    with pytest.raises(ValueError, match="input_shape"):
        bench.model_latency(torch.nn.Linear(2, 2), (0,))


def test_peaks_are_measured_for_every_level_the_cpu_has():
    pk = bench.peaks(0.01, refresh=True)
    from bnnlab import _kernels
    assert list(pk["binary"]) == list(_kernels.LEVEL_NAMES)
    if not pk["supported"]:
        pytest.skip("roofline kernels need GCC/clang inline asm")
    assert pk["clock_hz"] > 1e8
    for lvl in kernels._available_isas():
        assert pk["binary"][lvl] > 0
    for lvl in set(_kernels.LEVEL_NAMES) - set(kernels._available_isas()):
        assert pk["binary"][lvl] == 0.0
    assert pk["fp32"]["base"] > 0 and pk["fp32"][pk["torch_fp32"]] > 0
    assert pk["per_cycle"]["fp32"]["base"] == pytest.approx(pk["fp32"]["base"] / pk["clock_hz"])
    bench.peaks(refresh=True)   # leave full-length measurements in the cache


def test_add_efficiency_and_markdown():
    pk = {"supported": True, "clock_hz": 2e9, "fp32": {"base": 1e9, "avx2_fma": 1e10},
          "binary": {"avx2": 1e11}, "torch_fp32": "avx2_fma",
          "per_cycle": {"fp32": {"base": 0.5, "avx2_fma": 5.0}, "binary": {"avx2": 50.0}}}
    rows = [{"case": "gemm1000", "group": "gemm", "threads": 2, "baseline": "torch float32",
             "torch": 0.1, "bnnlab": 0.01, "ratio": 10.0, "unit": "s", "correct": True,
             "packing": "", "note": "", "macs": 10 ** 9, "isa": "avx2", "torch_eff": None,
             "bnnlab_eff": None}]
    bench.add_efficiency(rows, pk)
    assert rows[0]["torch_eff"] == pytest.approx(1e9 / 0.1 / 2e10)
    assert rows[0]["bnnlab_eff"] == pytest.approx(1e9 / 0.01 / 2e11)
    md = bench.format_markdown(rows, pk, {"model": "Test CPU", "cpus": 2, "torch_capability": "AVX2"})
    assert "Test CPU" in md and "| gemm1000 | 2 | 100 ms | 10 ms | 10.0× | 50% | 50% | avx2 |" in md
    assert "binary avx2 100.0 GMAC/s (50/cycle)" in md


def test_cpu_clock_needs_one_thread(tmp_path):
    assert bench.main(["--clock", "cpu", "--threads", "1,2", "--cases", "gemm512"]) == 2
    out = tmp_path / "b.json"
    assert bench.main(["--quick", "--clock", "cpu", "--threads", "1", "--cases", "gemv1", "--repeats", "2",
                       "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["clock"] == "cpu" and doc["rows"][0]["bnnlab"] > 0
    assert bench._CLOCK["timer"] is bench.time.perf_counter     # restored


def test_case_selection_of_the_new_cases():
    assert bench._select("conv", quick=True) == ["conv64x56", "conv128x28", "conv256x14", "conv512x7"]
    assert [c for c in bench._select("conv", quick=False) if c.endswith("b16")] == [
        "conv64x56b16", "conv128x28b16", "conv256x14b16", "conv512x7b16"]
    assert bench._select("threads", quick=True) == ["threads_gemm2048", "threads_conv256x14"]
    assert len(bench._select("threads", quick=False)) == 9
    assert bench.threads_target("threads_gemm2048") == bench.threads_target("threads_conv64x56b16") == 1.85
    assert bench.threads_target("threads_conv64x56") == 1.0
    with pytest.raises(ValueError, match="peers"):
        bench.run("gemm512", threads=(1,), peers=["tflite"])


# ----------------------------------------------------------------------------- peers
@pytest.mark.parametrize("c_in,c_out,hw,pad,pad_value", [
    (8, 4, 5, 1, 1.0), (16, 8, 6, 1, -1.0), (64, 3, 4, 0, 1.0), (24, 5, 7, 2, 1.0), (128, 7, 3, 1, -1.0)])
def test_openvino_binary_conv_is_bit_exact_vs_torch(c_in, c_out, hw, pad, pad_value):
    pytest.importorskip("openvino")
    x, w = bench._pm1(2, c_in, hw, hw, seed=c_in), bench._pm1(c_out, c_in, 3, 3, seed=hw)
    run = bench.openvino_conv2d(w, x.shape, padding=pad, pad_value=pad_value)
    want = F.conv2d(F.pad(x, (pad,) * 4, value=pad_value), w).numpy()
    np.testing.assert_array_equal(run(np.ascontiguousarray(x.numpy())), want)


def test_openvino_conv_validates_its_arguments():
    pytest.importorskip("openvino")
    w = bench._pm1(4, 8, 3, 3, seed=0)
    with pytest.raises(ValueError, match="input_shape"):
        bench.openvino_conv2d(w, (1, 16, 5, 5))
    with pytest.raises(ValueError, match="pad_value"):
        bench.openvino_conv2d(w, (1, 8, 5, 5), pad_value=0.0)
    with pytest.raises(ValueError, match="weight"):
        bench.openvino_conv2d(w[0], (1, 8, 5, 5))


def test_torch_int8_paths_are_within_tolerance_of_fp32():
    x, w = bench._pm1(4, 256, seed=1), bench._pm1(64, 256, seed=2)
    with torch.inference_mode():
        y = bench.int8_linear(w)(x)
    assert not y.is_quantized and y.shape == (4, 64)
    assert float((y - x @ w.T).norm() / (x @ w.T).norm()) <= bench.INT8_TOLERANCE
    xc, wc = bench._pm1(1, 16, 6, 6, seed=3), bench._pm1(8, 16, 3, 3, seed=4)
    q = bench.int8_conv2d(wc, xc)
    with torch.inference_mode():
        yc = q(xc)
    assert yc.is_quantized
    want = F.conv2d(xc, wc, padding=1)
    assert float((yc.dequantize() - want).norm() / want.norm()) <= bench.INT8_TOLERANCE


def test_peer_rows_exist_in_json(tmp_path, capsys):
    pytest.importorskip("openvino")
    out = tmp_path / "bench.json"
    rc = bench.main(["--quick", "--cases", "conv512x7,gemv1", "--threads", "1", "--repeats", "2",
                     "--peers", "--json", str(out), "--markdown"])
    assert rc == 0
    doc = json.loads(out.read_text())
    rows = {r["case"]: r for r in doc["rows"]}
    assert set(rows) == {"conv512x7", "gemv1x4096"}
    ov = rows["conv512x7"]["peers"]["openvino"]
    assert ov["correct"] is True and ov["time"] > 0 and "bit-exact" in ov["note"]
    assert ov["name"].startswith("OpenVINO ") and ov["ratio"] == pytest.approx(ov["time"] / rows["conv512x7"]["bnnlab"])
    for case in rows:
        q8 = rows[case]["peers"]["torch_int8"]
        assert q8["correct"] is True and q8["time"] > 0 and "relative L2 error" in q8["note"]
    assert "openvino" not in rows["gemv1x4096"]["peers"]    # no OpenVINO peer for a GEMV
    assert doc["openvino_version"] and "--peers" in doc["command"]
    text = capsys.readouterr().out
    assert "BinaryConvolution (bnnlab ×)" in text and "conv512x7:openvino" in text


def test_bnn_lab_peer_is_checked_and_timed_on_gemm_and_gemv():
    pytest.importorskip("bnn.kernels.packed")
    if bench.bnn_lab_version() is None:
        pytest.skip("bnn-lab's native kernel is not available")
    # its kernel on odd sizes (a partial last word) against torch, both packing variants
    a, b = bench._pm1(5, 131, seed=1), bench._pm1(7, 131, seed=2)
    for pre in (False, True):
        got = bench.bnn_lab_gemm(a, b, threads=1, prepacked=pre)()
        assert np.array_equal(got, (a @ b.T).numpy())
    rows = {r["case"]: r for r in bench.run(["gemm512", "gemv1x4096"], quick=True, threads=(1,),
                                              repeats=2, peers=["bnn_lab"])}
    for case, how in (("gemm512", "in the call"), ("gemm512_prepacked", "pre-packed"),
                      ("gemv1x4096", "in the call")):
        e = rows[case]["peers"]["bnn_lab"]
        assert e["correct"] and e["time"] > 0 and how in e["note"] and "bit-exact" in e["note"]
        assert e["ratio"] == pytest.approx(e["time"] / rows[case]["bnnlab"])


def test_missing_bnn_lab_says_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "bnn", None)
    monkeypatch.setitem(sys.modules, "bnn.kernels", None)
    monkeypatch.setitem(sys.modules, "bnn.kernels.packed", None)
    assert bench.bnn_lab_version() is None
    row = bench.run("gemv1x4096", quick=True, threads=(1,), repeats=2, peers=["bnn_lab"])[0]
    assert row["peers"]["bnn_lab"]["note"] == "not installed" and row["correct"]


def test_missing_openvino_says_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)      # `import openvino` now fails
    assert bench.openvino_version() is None
    rows = bench.run("conv512x7", quick=True, threads=(1,), repeats=2, peers=["openvino"])
    entry = rows[0]["peers"]["openvino"]
    assert entry["time"] is None and entry["note"] == "not installed" and rows[0]["correct"]
    assert "| not installed |" in bench.format_markdown(rows)


def test_threads_rows_and_table():
    rows = bench.run("threads_conv256x14", quick=True, threads=(1,), repeats=2)
    (r,) = rows
    assert r["group"] == "threads" and r["threads"] == 2 and r["baseline"] == "bnnlab 1 thread"
    assert r["correct"] and r["torch"] > 0 and r["bnnlab"] > 0 and r["torch_2v1"] > 0
    if bench.peaks()["supported"]:
        assert r["peak_2v1"] > 0 and "ceiling" in bench.format_threads_markdown(rows)
    table = bench.format_threads_markdown(rows)
    assert table.splitlines()[2].startswith("| conv256x14 |") and "≥ 1.00×" in table
    if bench._cpu_ticks() is not None:                       # Linux: /proc/stat
        assert 0.0 <= r["steal"] < 1.0 and "stolen by the hypervisor" in r["note"]
        assert table.splitlines()[2].endswith(f"| {100 * r['steal']:.1f}% |")
        assert "Stolen CPU time" in table


def test_steal_share_from_proc_stat_lines():
    # user nice system idle iowait irq softirq steal guest guest_nice
    a = bench._parse_cpu_ticks("cpu  100 0 50 800 10 0 0 40 7 0\n")
    b = bench._parse_cpu_ticks("cpu  200 0 60 1100 10 0 0 70 9 0\n")
    assert a == (40, 1000) and b == (70, 1440)
    assert bench._steal_share(a, b) == pytest.approx(30 / 440)
    assert bench._steal_share(a, a) is None and bench._steal_share(None, b) is None
    assert bench._parse_cpu_ticks("cpu0 1 2 3 4 5 6 7 8 9 10") is None      # a per-CPU line
    assert bench._parse_cpu_ticks("cpu 1 2 3") is None
    assert bench._parse_cpu_ticks("cpu 1 2 3 x 5 6 7 8") is None
    rows = [dict(bench._row("threads_gemm2048", 2, torch=2.0, bnnlab=1.0, correct=True),
                 steal=None)]
    assert bench.format_threads_markdown(rows).splitlines()[2].endswith("| - |")
    assert "Stolen CPU time" not in bench.format_threads_markdown(rows)
    assert "threads_conv256x14" not in bench.format_markdown(rows).split("\n\n")[0]


# ----------------------------------------------------------------------------- no typed numbers
def _readme_source() -> Path:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(re.escape(bench.README_BEGIN) + r" generated from (\S+) ", text)
    assert m, "README.md has no generated bench block"
    return ROOT / m.group(1)


def test_readme_speed_block_is_generated_from_its_json():
    """Every speed figure of the README comes from the stored bench JSON: regenerate to change."""
    source = _readme_source()
    assert bench.update_readme(ROOT / "README.md", source, check=True), (
        f"README.md's speed block differs from {source.name}: run "
        f"python -m bnnlab bench --from-json {source.relative_to(ROOT)} --update-readme README.md")
    doc = json.loads(source.read_text())
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert doc["cpu"]["model"] in text and "Peaks per core" in text


def test_readme_has_no_typed_speed_figure_outside_the_block():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    i, j = text.index(bench.README_BEGIN), text.index(bench.README_END)
    outside = text[:i] + text[j:]
    speed = outside[outside.index("**Speed**"):outside.index("## On the laptops")]
    assert not re.findall(r"\d+(?:\.\d+)?\s*(?:×(?!\s*\d)|x faster|-fold)", speed)   # not 3×3


def _doc(rows: list, clock: str) -> dict:
    """A stored bench JSON with ``rows`` on a made-up AVX2 machine."""
    return {"rows": rows,
            "peaks": {"supported": True, "clock_hz": 2e9, "fp32": {"avx2_fma": 1e10},
                      "binary": {"avx2": 1e11}, "torch_fp32": "avx2_fma",
                      "per_cycle": {"fp32": {"avx2_fma": 5.0}, "binary": {"avx2": 50.0}}},
            "cpu": {"model": "Test CPU", "cpus": 2, "torch_capability": "AVX2"},
            "command": "python -m bnnlab bench", "torch_version": "x", "clock": clock,
            "load_average": [1.0, 2.0, 3.0]}


def test_update_readme_rewrites_only_the_block(tmp_path):
    doc = _doc([{"case": "gemm512", "group": "gemm", "threads": 1, "baseline": "torch float32",
                 "torch": 2e-3, "bnnlab": 1e-4, "ratio": 20.0, "unit": "s", "correct": True,
                 "isa": "avx2", "torch_eff": 0.5, "bnnlab_eff": 0.25, "peers": {}}], "cpu")
    (tmp_path / "b.json").write_text(json.dumps(doc))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{bench.README_BEGIN} old -->\nstale 99×\n{bench.README_END}\nrest\n")
    assert not bench.update_readme(readme, tmp_path / "b.json", check=True)
    assert "stale" in readme.read_text()
    assert not bench.update_readme(readme, tmp_path / "b.json")
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\nrest\n") and "stale" not in text
    assert "| gemm512 | 1 | 2 ms | 100 us | 20.0× | 50% | 25% | avx2 |" in text
    assert "Test CPU" in text and "= 10.0×" in text and "generated from b.json" in text
    assert bench.update_readme(readme, tmp_path / "b.json", check=True)
    with pytest.raises(ValueError, match="readme"):
        bench.update_readme(tmp_path / "b.json", tmp_path / "b.json")
    assert bench.main(["--update-readme", str(readme), "--cases", "gemm512"]) == 2   # needs a JSON
    assert bench.main(["--from-json", str(tmp_path / "b.json"), "--update-readme", str(readme)]) == 0
    assert bench.main(["--from-json", str(tmp_path / "missing.json")]) == 2


def test_report_types_no_speed_figure():
    """The report's speed numbers are macros or generated tables (bnnlab.figures), never typed."""
    tex = (ROOT / "paper" / "report.tex").read_text(encoding="utf-8")
    typed = re.findall(r"\d+(?:\.\d+)?\s*(?:\$\\times\$|×|-fold|\s+times\s+(?:faster|slower|smaller))", tex)
    assert not typed, typed


def test_report_speed_tables_and_caption_come_from_the_bench_json():
    from bnnlab import figures as FG

    doc = json.loads(_readme_source().read_text())
    results = {"bench": doc}
    m = FG._bench_machine_macros(doc)
    assert doc["cpu"]["model"].split(" (")[0] in m["BenchCPU"]
    assert m["BenchClock"] == f"{doc['peaks']['clock_hz'] / 1e9:.2f}"
    pr = bench.peak_ratio(doc["peaks"])
    assert pr is not None and m["BenchPeakRatio"] == f"{pr[1]:.1f}" and "GMAC/s" in m["BenchPeaks"]
    table = FG.bench_table(results)
    timed = [r for r in doc["rows"] if r["unit"] == "s" and r["group"] != "threads"]
    assert table.count(r" \\") == len(timed) + 1          # header + one line per timed row
    for r in timed:
        assert f"{r['ratio']:.1f}$\\times$" in table
    if any(r["peers"] for r in timed):
        assert "OpenVINO" in table and "torch int8" in table
    threads = FG.bench_threads_table(results)
    for r in doc["rows"]:
        if r["group"] == "threads":
            assert f"{r['ratio']:.2f}$\\times$" in threads
    synthetic = {"bench": dict(doc, rows=[dict(r, steal=0.0123) for r in doc["rows"]
                                          if r["group"] == "threads"])}
    if synthetic["bench"]["rows"]:
        assert " & 1.2 \\\\" in FG.bench_threads_table(synthetic)


def test_report_peer_macros_read_the_peer_entries():
    from bnnlab import figures as FG

    def row(case, group, **peers):
        return {"case": case, "group": group, "threads": 1, "unit": "s", "correct": True,
                "peers": {k: {"name": k, "time": 1.0, "ratio": v, "correct": True, "note": ""}
                          for k, v in peers.items()}}
    rows = [row("conv64x56", "conv", openvino=2.5, torch_int8=3.0),
            row("conv512x7", "conv", openvino=4.0, torch_int8=0.8),
            row("gemv1x4096", "gemv", torch_int8=12.0), row("gemm512", "gemm", torch_int8=2.0),
            row("gemm2048", "gemm", torch_int8=1.5), row("gemm2048_prepacked", "gemm")]
    m = FG._bench_peer_macros(rows)
    assert (m["BenchOpenvinoMin"], m["BenchOpenvinoMax"]) == ("2.5", "4.0")
    assert (m["BenchIntEightConvMin"], m["BenchIntEightConvMax"]) == ("0.8", "3.0")
    assert m["BenchIntEightGemv"] == "12.0" and m["BenchIntEightGemm"] == "1.5"
    assert m["BenchIntEightGemmCase"] == r"gemm2048" and m["BenchPeers"] == "measured"
    assert FG._bench_peer_macros([row("conv64x56", "conv")]) == {}


# ----------------------------------------------------------------------------- issue 12's targets
def _trow(case, group, eff=None, ratio=None, threads=1, isa="avx2", **kw):
    return {"case": case, "group": group, "threads": threads, "unit": "s", "correct": True,
            "isa": isa, "bnnlab_eff": eff, "ratio": ratio, "peers": {}, **kw}


def test_targets_count_cases_and_name_the_worst():
    pk = {"fp32": {"avx2_fma": 1e10}, "torch_fp32": "avx2_fma",
          "binary": {"popcnt": 8e10, "avx2": 1e11}}
    ov = {"openvino": {"name": "OpenVINO", "time": 4e-3, "ratio": 2.0, "correct": True}}
    rows = [_trow("gemm2048_prepacked", "gemm", eff=0.72),
            _trow("gemm4096_prepacked", "gemm", eff=0.69),
            _trow("gemm2048_prepacked", "gemm", eff=0.10, threads=2),   # 2 threads: not counted
            _trow("conv64x56", "conv", eff=0.58, macs=10 ** 8, bnnlab=2e-3, peers=ov),
            _trow("conv512x7", "conv", eff=0.91, isa="avx512"),
            _trow("gemm2048", "gemm", eff=0.7, pack_share=0.03),
            _trow("conv256x14", "conv", eff=0.8, pack_share=0.12),
            {"case": "threads_conv512x7b16", "group": "threads", "threads": 2, "ratio": 1.77},
            {"case": "threads_conv64x56", "group": "threads", "threads": 2, "ratio": 1.7},
            _trow("e2e_resnet18", "e2e", ratio=6.2)]
    bench.add_efficiency(rows, pk)
    e = rows[3]["peers"]["openvino"]     # 1e8 MACs in 4 ms = 25 GMAC/s of the best 100 GMAC/s
    assert e["eff"] == pytest.approx(0.25) and e["ceiling"] == pytest.approx(4.0)
    ts = {t["target"].split(":")[0]: t for t in bench.targets(rows)}
    gemm = next(t for t in bench.targets(rows) if t["target"].endswith("avx2")
                and t["target"].startswith("GEMM"))
    assert (gemm["met"], gemm["of"], gemm["worst_case"]) == (1, 2, "gemm4096_prepacked")
    assert gemm["goal"] == 0.70 and gemm["worst"] == pytest.approx(0.69)
    convs = [t for t in bench.targets(rows) if t["target"].startswith("3×3")]
    assert [(t["target"][-6:], t["met"], t["of"]) for t in convs] == [
        ("avx512", 1, 1), ("t avx2", 1, 2)]
    pack = next(t for t in bench.targets(rows) if t["target"].startswith("activation packing"))
    assert pack["at_most"] and (pack["met"], pack["of"], pack["worst_case"]) == (1, 2, "conv256x14")
    thr = [t for t in bench.targets(rows) if t["target"].startswith("2 threads")]
    assert [(t["goal"], t["met"], t["worst_case"]) for t in thr] == [
        (1.85, 0, "conv512x7b16"), (1.0, 1, "conv64x56")]
    ovt = next(t for t in bench.targets(rows) if "OpenVINO" in t["target"])
    assert (ovt["met"], ovt["worst"]) == (0, 2.0)
    assert "25%–25% of this core's best binary peak" in ovt["note"] and "4.0–4.0×" in ovt["note"]
    assert "cannot reach" not in ovt["note"]          # the ceiling (4x) is above 2.5x here
    e2e = [t for t in ts.values() if "end to end" in t["target"]]
    assert [(t["met"], t["of"]) for t in e2e] == [(1, 1)]   # VGG-small not measured: left out
    md = bench.format_targets_markdown(rows)
    assert "| 2 threads vs 1: GEMM 2048 and batch-16 convs | ≥ 1.85× | 0 of 1 | conv512x7b16: 1.77× |" in md
    assert "| ≤ 10% | 1 of 2 | conv256x14: 12% |" in md and "OpenVINO runs at 25%" in md
    assert bench.format_targets_markdown([]) == ""
    # a slow OpenVINO ceiling below the target is said to be out of reach
    rows[3]["peers"]["openvino"]["time"] = 1.5e-3
    bench.add_efficiency(rows, pk)
    assert "1 of 1 cases cannot reach 2.5×" in bench.format_targets_markdown(rows)


def test_readme_block_shows_one_thread_count_and_the_targets():
    row = {"case": "gemm2048_prepacked", "group": "gemm", "threads": 1, "baseline": "torch float32",
           "torch": 2.0, "bnnlab": 0.25, "ratio": 8.0, "unit": "s", "correct": True, "isa": "avx2",
           "macs": 2048 ** 3, "peers": {}}
    doc = _doc([row, dict(row, threads=2, bnnlab=0.125, ratio=16.0)], "wall")
    text = bench.readme_block(doc, "b.json")
    assert "| gemm2048_prepacked | 1 | 2.00 s | 250 ms | 8.0× |" in text
    assert "| gemm2048_prepacked | 2 |" not in text
    assert "rows at 2 threads are in `b.json`" in text
    # 2048^3 MACs in 0.25 s = 34.4 GMAC/s of 100: 34 %, below the 70 % AVX2 target
    assert "| GEMM ≥ 2048, operands pre-packed: efficiency at avx2 | ≥ 70% | 0 of 1 | " \
           "gemm2048_prepacked: 34% |" in text
