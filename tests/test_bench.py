"""Tests of bnnlab.bench: row schema, correctness gate, table and JSON output (no timing asserts)."""
import json

import numpy as np
import pytest
import torch

from bnnlab import bench, kernels

KEYS = {"case", "group", "threads", "baseline", "torch", "bnnlab", "ratio", "unit", "correct",
        "packing", "note", "macs", "isa", "torch_eff", "bnnlab_eff"}


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
    assert bench._select("conv64,memory", quick=False) == ["conv64x56", "mem_gemm4096",
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
