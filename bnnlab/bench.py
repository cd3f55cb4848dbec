r"""Speed and memory benchmarks: torch float32 vs bnnlab's packed kernels.

``python -m bnnlab bench [--quick] [--cases gemm,conv64] [--threads 1,2] [--json FILE] [--markdown]``

Every case is **checked before it is timed**: the packed result must equal the torch result
(integer parts bit-exact, the end-to-end model's logits ``allclose`` with identical
predictions). A case that fails the check gets no time (``correct: False``) and the command
exits with status 1.

Timing: medians over repetitions after a warm-up, torch and bnnlab **interleaved in one
process** (torch, bnnlab, bnnlab, torch, ... so drifting machine load hits both alike); a
repetition of a fast call loops it until it lasts at least ``min_time``.
``torch.set_num_threads`` and :func:`bnnlab.kernels.set_num_threads` are set to the same value
for each thread count.

**Roofline.** Before the cases, register-only micro-kernels shipped in ``ext/bnn_roofline.h``
measure this machine's peaks (:func:`peaks`): fp32 multiply-accumulates per second (FMA at the
instruction set torch uses) and binary MACs per second (XOR + popcount on 64-bit words) for
every instruction-set level bnnlab has, plus the core clock (a chain of dependent adds). Every
timed row with a known MAC count then gets an **efficiency** for each side: achieved MAC/s ÷
peak MAC/s (the peak times the thread count), torch against the fp32 peak, bnnlab against the
binary peak of the level it ran at. Efficiencies hold across CPUs where ratios do not.

Cases:

* ``gemm{n}``: torch ``a @ b.T`` on ±1 data, M = N = K = n; bnnlab packs A in the loop and
  runs ``xnor_matmul`` against pre-packed B. ``gemm{n}_prepacked``: A and B both pre-packed.
* ``gemv{m}x4096``: ``x @ W.T`` with x (m, 4096), W (4096, 4096); bnnlab packs x in the loop,
  W pre-packed.
* ``conv{c}x{hw}`` (batch 1), ``conv{c}x{hw}b{n}`` (batch n): 3x3 conv c -> c channels,
  ``F.conv2d(x, w, padding=1)``; bnnlab
  ``pack_nhwc(x)`` in the loop + ``conv2d_packed`` (+1 padding; checked against torch on the
  +1-padded input).
* ``e2e_cnn``: ``packed.export(models.binary_cnn())`` vs the float twin
  ``models.binary_cnn(binary=False)``; ``e2e_cnn_vs_torch_bnn``: the same packed model vs the
  torch BNN it came from.
* ``threads_gemm2048``: bnnlab at 2 threads vs bnnlab at 1 thread (the baseline column).
* ``mem_*``: float32 bytes vs packed bytes (ratio = float / packed).

bnnlab outputs are int32 (exact); torch's are float32. ``n = 4096`` is skipped with
``--quick``. The end-to-end models run on one 28x28 image under ``torch.inference_mode``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from bnnlab import kernels

__all__ = ["CASES", "run", "peaks", "cpu_info", "add_efficiency", "format_table", "format_markdown",
           "latency", "model_latency", "main"]

#: every case name, in run order (memory rows come last)
CASES: tuple[str, ...] = (
    "gemm512", "gemm1024", "gemm2048", "gemm4096",
    "gemv1x4096", "gemv8x4096",
    "conv64x56", "conv128x28", "conv256x14", "conv512x7", "conv256x14b16",
    "e2e_cnn", "e2e_vgg_small", "e2e_resnet18",
    "threads_gemm2048",
    "mem_gemm4096", "mem_cnn_weights", "mem_cnn_file",
)
_QUICK_SKIP = ("gemm4096", "conv256x14b16")


def _group(case: str) -> str:
    for prefix, group in (("gemm", "gemm"), ("gemv", "gemv"), ("conv", "conv"), ("e2e", "e2e"),
                          ("threads", "threads"), ("mem", "memory")):
        if case.startswith(prefix):
            return group
    raise ValueError(f"unknown case {case!r}")


def _matches(case: str, token: str) -> bool:
    return case.startswith(token) or _group(case) == token


# ----------------------------------------------------------------------------- timing
#: the clock of the timed calls: wall time, or (``--clock cpu``) the calling thread's CPU time,
#: which leaves out the time other processes hold the core (valid at 1 thread only: every
#: torch and bnnlab op then runs on the calling thread)
_CLOCK: dict[str, Callable[[], float]] = {"timer": time.perf_counter}


def _time_once(fn: Callable[[], object], inner: int) -> float:
    clock = _CLOCK["timer"]
    t0 = clock()
    for _ in range(inner):
        fn()
    return (clock() - t0) / inner


def _interleaved(fns: Sequence[Callable[[], object]], repeats: int, warmup: int,
                 min_time: float, budget: float) -> list[float]:
    """Median seconds per call of each fn, measured alternately (order reversed every round)."""
    inner = []
    for fn in fns:
        for _ in range(max(1, warmup)):
            fn()
        t = _time_once(fn, 1)
        inner.append(max(1, math.ceil(min_time / max(t, 1e-9))) if t < min_time else 1)
    samples: list[list[float]] = [[] for _ in fns]
    start = time.perf_counter()
    for r in range(repeats):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            samples[i].append(_time_once(fns[i], inner[i]))
        if r >= 2 and time.perf_counter() - start > budget:
            break
    return [statistics.median(s) for s in samples]


def _call_times(model: Callable, x, repeats: int, warmup: int) -> list[float]:
    """Wall times (seconds) of ``repeats`` calls ``model(x)`` after ``warmup`` untimed ones; the
    caller chooses the grad mode and the statistic."""
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t0)
    return times


def latency(model: Callable, x, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time (seconds) of ``model(x)`` under ``torch.inference_mode``.

    The model is used as it is (call ``.eval()`` first for torch models); works for
    :class:`~bnnlab.packed.PackedModel` too. For the lab dashboard.
    """
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    with torch.inference_mode():
        times = _call_times(model, x, repeats, warmup)
    return statistics.median(times)


def model_latency(model: torch.nn.Module, input_shape, *, packed: str = "auto",
                  repeats: int = 20, warmup: int = 3) -> dict:
    """Batch-1 latency of ``model``: torch (eval mode) and, when it exports, its packed twin.

    Args:
        model: a torch model (float or binary); it is not modified (eval mode is restored).
        input_shape: one sample's shape, without the batch dimension.
        packed: ``"auto"`` exports with :func:`bnnlab.packed.export` when the model has binary
            layers the exporter supports (a refusal is recorded in ``"packed_note"``),
            ``"never"`` skips the export. Default: ``"auto"``.

    Returns:
        ``{"torch": s, "packed": s or None, "packed_note": str, "best": s}`` in seconds
        (medians); ``best`` is the packed time when there is one, else the torch time.
    """
    if packed not in ("auto", "never"):
        raise ValueError(f"packed must be 'auto' or 'never', got {packed!r}")
    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    shape = tuple(int(s) for s in input_shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"input_shape must be a tuple of positive ints, got {input_shape!r}")
    x = torch.zeros(1, *shape)
    was_training = model.training
    model.eval()
    try:
        out = {"torch": latency(model, x, repeats=repeats, warmup=warmup), "packed": None,
               "packed_note": "not attempted"}
        if packed == "auto":
            from bnnlab import packed as _packed

            try:
                pm = _packed.export(model)
            except ValueError as exc:
                out["packed_note"] = f"not exportable: {exc}"
            else:
                out["packed"] = latency(pm, x, repeats=repeats, warmup=warmup)
                out["packed_note"] = "exported"
    finally:
        model.train(was_training)
    out["best"] = out["packed"] if out["packed"] is not None else out["torch"]
    return out


# ----------------------------------------------------------------------------- roofline
_PEAKS: dict = {}


def _torch_fp32_kernel() -> str:
    """The fp32 peak kernel matching the instruction set torch dispatches to."""
    try:
        cap = str(torch.backends.cpu.get_cpu_capability()).upper()
    except (AttributeError, RuntimeError):
        cap = "DEFAULT"
    from bnnlab import _kernels
    names = _kernels.FP32_KERNELS
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "neon_fma"
    if "AVX512" in cap and _kernels.roofline_fp32(names.index("avx512_fma"), 0.0) > 0:
        return "avx512_fma"
    if "AVX2" in cap or "AVX512" in cap:
        return "avx2_fma"
    return "base"


def peaks(seconds: float = 0.2, *, refresh: bool = False) -> dict:
    """This machine's register-only peaks, measured once per process (per core).

    Args:
        seconds: measuring time per kernel (best of many ~2 ms runs).
        refresh: measure again instead of returning the cached values.

    Returns:
        ``{"supported": bool, "clock_hz": float, "fp32": {kernel: MAC/s},
        "binary": {isa level: MAC/s}, "torch_fp32": kernel name torch's peak is taken from,
        "per_cycle": {"fp32": {...}, "binary": {...}}}``. A kernel the CPU lacks is ``0.0``;
        without GCC/clang inline asm (an MSVC build) ``supported`` is False and all are 0.
    """
    if _PEAKS and not refresh:
        return _PEAKS
    from bnnlab import _kernels
    sec = float(seconds)
    clock = _kernels.roofline_clock_hz(sec)
    fp32 = {name: _kernels.roofline_fp32(i, sec) for i, name in enumerate(_kernels.FP32_KERNELS)}
    binary = {name: _kernels.roofline_binary(i, sec) for i, name in enumerate(_kernels.LEVEL_NAMES)}

    def per_cycle(d: dict) -> dict:
        return {k: (v / clock if clock else None) for k, v in d.items()}

    _PEAKS.clear()
    _PEAKS.update(supported=_kernels.roofline_supported(), clock_hz=clock, fp32=fp32, binary=binary,
                  torch_fp32=_torch_fp32_kernel(),
                  per_cycle={"fp32": per_cycle(fp32), "binary": per_cycle(binary)})
    return _PEAKS


def cpu_info() -> dict:
    """CPU model, flags (Linux: /proc/cpuinfo), machine, logical CPUs, torch's capability."""
    model, flags, ids = platform.processor() or "", list[str](), dict[str, str]()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, val = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "CPU part") and not model:
                    model = val.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = val.split()
                elif key in ("cpu family", "model") and val.strip().isdigit():
                    ids.setdefault(key, val.strip())
    except OSError:
        pass
    if len(ids) == 2:   # a VM often shows only the brand ("AMD EPYC"): add the family / model
        model = f"{model} (family {ids['cpu family']}, model {ids['model']})"
    try:
        cap = str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        cap = "unknown"
    return {"model": model or platform.machine(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "flags": flags, "torch_capability": cap,
            "env": {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
                                               "MKL_ENABLE_INSTRUCTIONS", "BNNLAB_ISA")
                    if k in os.environ}}


def add_efficiency(rows: Sequence[dict], pk: dict) -> list[dict]:
    """Fill ``torch_eff`` / ``bnnlab_eff`` (fractions of the peak) of rows with a MAC count.

    torch: MACs / time / (fp32 peak of ``pk["torch_fp32"]`` x threads); bnnlab: MACs / time /
    (binary peak of the row's ISA level x threads).
    """
    fp = pk["fp32"].get(pk["torch_fp32"], 0.0)
    for r in rows:
        if not r.get("macs") or not r.get("correct") or r.get("unit") != "s":
            continue
        nt = r.get("threads") or 1
        bp = pk["binary"].get(r.get("isa", ""), 0.0)
        if r.get("torch") and fp and r.get("baseline") == "torch float32":
            r["torch_eff"] = r["macs"] / r["torch"] / (fp * nt)
        if r.get("bnnlab") and bp:
            r["bnnlab_eff"] = r["macs"] / r["bnnlab"] / (bp * nt)
    return list(rows)


# ----------------------------------------------------------------------------- cases
def _pm1(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.where(torch.rand(*shape, generator=g) < 0.5, -1.0, 1.0)


def _row(case: str, threads: int | None, **kw) -> dict:
    row = {"case": case, "group": _group(case), "threads": threads, "baseline": "torch float32",
           "torch": None, "bnnlab": None, "ratio": None, "unit": "s", "correct": False,
           "packing": "", "note": "", "macs": None, "isa": kernels.kernel_info()["isa"],
           "torch_eff": None, "bnnlab_eff": None}
    row.update(kw)
    if row["torch"] is not None and row["bnnlab"]:
        row["ratio"] = row["torch"] / row["bnnlab"]
    return row


def _gemm(n: int, threads: int, cfg: dict) -> list[dict]:
    a, b = _pm1(n, n, seed=1), _pm1(n, n, seed=2)
    pb = kernels.pack_signs(b)
    pa = kernels.pack_signs(a)
    want = (a @ b.T).to(torch.int32).numpy()
    ok = np.array_equal(kernels.xnor_matmul(kernels.pack_signs(a), pb), want)
    ok_pre = np.array_equal(kernels.xnor_matmul(pa, pb), want)
    name = f"gemm{n}"
    if not (ok and ok_pre):
        bad = "packed result differs from torch: not timed"
        return [_row(name, threads, note=bad), _row(name + "_prepacked", threads, note=bad)]
    t_t, t_b, t_p = _interleaved(
        [lambda: a @ b.T, lambda: kernels.xnor_matmul(kernels.pack_signs(a), pb),
         lambda: kernels.xnor_matmul(pa, pb)], **cfg)
    return [_row(name, threads, torch=t_t, bnnlab=t_b, correct=True, macs=n ** 3,
                 packing="A packed in the loop, B pre-packed"),
            _row(name + "_prepacked", threads, torch=t_t, bnnlab=t_p, correct=True, macs=n ** 3,
                 packing="A and B pre-packed")]


def _gemv(m: int, threads: int, cfg: dict) -> list[dict]:
    k = n = 4096
    x, w = _pm1(m, k, seed=3), _pm1(n, k, seed=4)
    pw = kernels.pack_signs(w)
    want = (x @ w.T).to(torch.int32).numpy()
    name = f"gemv{m}x4096"
    if not np.array_equal(kernels.xnor_matmul(kernels.pack_signs(x), pw), want):
        return [_row(name, threads, note="packed result differs from torch: not timed")]
    t_t, t_b = _interleaved([lambda: x @ w.T,
                             lambda: kernels.xnor_matmul(kernels.pack_signs(x), pw)], **cfg)
    return [_row(name, threads, torch=t_t, bnnlab=t_b, correct=True, macs=m * k * n,
                 packing="x packed in the loop, W pre-packed")]


def _conv(c: int, hw: int, threads: int, cfg: dict, batch: int = 1) -> list[dict]:
    x, w = _pm1(batch, c, hw, hw, seed=5), _pm1(c, c, 3, 3, seed=6)
    pw = kernels.pack_conv_weights(w)
    want = F.conv2d(F.pad(x, (1, 1, 1, 1), value=1.0), w).to(torch.int32).numpy()
    name = f"conv{c}x{hw}" + (f"b{batch}" if batch != 1 else "")
    got = kernels.conv2d_packed(kernels.pack_nhwc(x), pw, 1, 1, 1.0)
    if not np.array_equal(got, want):
        return [_row(name, threads, note="packed result differs from torch: not timed")]
    t_t, t_b = _interleaved(
        [lambda: F.conv2d(x, w, padding=1),
         lambda: kernels.conv2d_packed(kernels.pack_nhwc(x), pw, 1, 1, 1.0)], **cfg)
    return [_row(name, threads, torch=t_t, bnnlab=t_b, correct=True,
                 macs=batch * hw * hw * c * c * 9,
                 packing="x packed in the loop (NHWC), W pre-packed",
                 note="torch zero-pads, bnnlab +1-pads (checked against torch on the "
                      "+1-padded input)")]


_E2E: dict = {}


def _e2e_models():
    """(torch BNN, float twin, packed model, input), built once per process."""
    if not _E2E:
        from bnnlab import models, packed
        g = torch.Generator().manual_seed(7)
        torch.manual_seed(7)
        bnn = models.binary_cnn()
        twin = models.binary_cnn(binary=False)
        for m in (bnn, twin):
            m.train()
            with torch.no_grad():
                for _ in range(3):
                    m(torch.randn(16, 1, 28, 28, generator=g))
            m.eval()
        x = torch.randn(1, 1, 28, 28, generator=g)
        _E2E.update(bnn=bnn, twin=twin, packed=packed.export(bnn), x=x)
    return _E2E["bnn"], _E2E["twin"], _E2E["packed"], _E2E["x"]


def _e2e(threads: int, cfg: dict) -> list[dict]:
    bnn, twin, pk, x = _e2e_models()
    xs = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(8))
    with torch.inference_mode():
        want, got = bnn(xs), pk(xs)
    ok = torch.allclose(got, want, rtol=1e-4, atol=1e-4) and \
        torch.equal(got.argmax(1), want.argmax(1))
    if not ok:
        return [_row("e2e_cnn", threads, note="packed model differs from the torch BNN: not timed"),
                _row("e2e_cnn_vs_torch_bnn", threads, note="not timed")]

    def call(m):
        def f():
            with torch.inference_mode():
                return m(x)
        return f

    t_twin, t_pk, t_bnn = _interleaved([call(twin), call(pk), call(bnn)], **cfg)
    exact = bool(torch.equal(got, want))
    note = f"models.binary_cnn 28x28 batch 1; logits {'bit-exact' if exact else 'allclose'}"
    return [_row("e2e_cnn", threads, torch=t_twin, bnnlab=t_pk, correct=True,
                 baseline="torch float twin", packing="input packed in the loop", note=note),
            _row("e2e_cnn_vs_torch_bnn", threads, torch=t_bnn, bnnlab=t_pk, correct=True,
                 baseline="torch BNN (eval)", packing="input packed in the loop", note=note)]


def _threads_gemm(cfg: dict) -> list[dict]:
    n = 2048
    a, b = _pm1(n, n, seed=1), _pm1(n, n, seed=2)
    pb = kernels.pack_signs(b)
    want = (a @ b.T).to(torch.int32).numpy()
    ok = all(np.array_equal(
        kernels.xnor_matmul(kernels.pack_signs(a, n_threads=t), pb, n_threads=t), want)
        for t in (1, 2))
    if not ok:
        return [_row("threads_gemm2048", 2, note="result differs between thread counts: not timed")]
    t1, t2 = _interleaved([
        lambda: kernels.xnor_matmul(kernels.pack_signs(a, n_threads=1), pb, n_threads=1),
        lambda: kernels.xnor_matmul(kernels.pack_signs(a, n_threads=2), pb, n_threads=2)], **cfg)
    torch_before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        tt1 = _interleaved([lambda: a @ b.T], **cfg)[0]
        torch.set_num_threads(2)
        tt2 = _interleaved([lambda: a @ b.T], **cfg)[0]
    finally:
        torch.set_num_threads(torch_before)
    return [_row("threads_gemm2048", 2, torch=t1, bnnlab=t2, correct=True,
                 baseline="bnnlab 1 thread", packing="A packed in the loop",
                 note=f"2 vs 1 threads; torch's own 2-vs-1 speed-up: {tt1 / tt2:.2f}x")]


def _memory(case: str) -> list[dict]:
    if case == "mem_gemm4096":
        w = _pm1(4096, 4096, seed=4)
        pw = kernels.pack_signs(w)
        return [_row(case, None, torch=w.numel() * 4, bnnlab=pw.nbytes, unit="bytes", correct=True,
                     baseline="float32", note="4096x4096 weight matrix")]
    _, _, pk, _ = _e2e_models()
    mem = pk.memory()
    if case == "mem_cnn_weights":
        return [_row(case, None, torch=mem["float_weight_bytes"], bnnlab=mem["packed_weight_bytes"],
                     unit="bytes", correct=True, baseline="float32",
                     note="binary layers of models.binary_cnn (NHWC word padding included)")]
    s = pk.sizes()
    return [_row(case, None, torch=s["float_state_dict_bytes"], bnnlab=s["packed_file_bytes"],
                 unit="bytes", correct=True, baseline="torch.save(state_dict)",
                 note="whole models.binary_cnn file (float first/last layers and BN included)")]


# ----------------------------------------------------------------------------- driver
def _select(cases: Iterable[str] | None, quick: bool) -> list[str]:
    if cases is None:
        chosen = list(CASES)
    else:
        if isinstance(cases, str):
            cases = [c for c in cases.split(",") if c]
        tokens = [str(c).strip() for c in cases]
        unknown = [t for t in tokens if not t or not any(_matches(c, t) for c in CASES)]
        if unknown or not tokens:
            raise ValueError(f"cases: unknown case(s) {unknown}; known: {', '.join(CASES)} "
                             f"(or a prefix or group: gemm, gemv, conv, e2e, threads, memory)")
        chosen = [c for c in CASES if any(_matches(c, t) for t in tokens)]
    if quick:
        chosen = [c for c in chosen if c not in _QUICK_SKIP]
    return chosen


def run(cases: Iterable[str] | str | None = None, quick: bool = False,
        threads: Sequence[int] = (1, 2), *, repeats: int | None = None) -> list[dict]:
    """Run the benchmark cases; return one dict per row.

    Args:
        cases: names from :data:`CASES`, prefixes (``"gemm"``, ``"conv64"``) or a comma-separated
            string; ``None`` runs everything.
        quick: fewer repetitions and no 4096 GEMM (under a minute on 2 cores).
        threads: thread counts to run the timed cases at (memory rows once).
        repeats: override the number of repetitions.

    Returns:
        Rows with keys ``case``, ``group``, ``threads``, ``baseline`` (what the ``torch`` column
        holds), ``torch`` and ``bnnlab`` (median seconds, or bytes for memory rows; ``None`` when
        not measured), ``ratio`` (torch / bnnlab: the speed-up or memory saving), ``unit``
        (``"s"`` or ``"bytes"``), ``correct`` (the packed result was checked equal to torch;
        ``False`` rows carry no time), ``packing``, ``note``, ``macs`` (multiply-accumulates per
        call; ``None`` where not counted), ``isa`` (bnnlab's instruction-set level) and
        ``torch_eff`` / ``bnnlab_eff`` (achieved MAC/s over the peak of :func:`peaks` times the
        thread count; ``None`` without a MAC count or a peak).
    """
    if isinstance(quick, (int, float)) and not isinstance(quick, bool):
        raise TypeError(f"quick must be a bool, got {type(quick).__name__}")
    threads = tuple(threads)
    if not threads or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in threads):
        raise ValueError(f"threads must be positive ints, got {threads!r}")
    chosen = _select(cases, quick)
    cfg = {"repeats": repeats or (5 if quick else 15), "warmup": 1 if quick else 3,
           "min_time": 0.002 if quick else 0.02, "budget": 3.0 if quick else 30.0}
    pk = peaks(0.1 if quick else 0.2)
    torch_before, bnn_before = torch.get_num_threads(), kernels.get_num_threads()
    rows: list[dict] = []
    try:
        for t in threads:
            torch.set_num_threads(t)
            kernels.set_num_threads(t)
            for case in chosen:
                if case.startswith("gemm"):
                    rows += _gemm(int(case[4:]), t, cfg)
                elif case.startswith("gemv"):
                    rows += _gemv(int(case[4:case.index("x")]), t, cfg)
                elif case.startswith("conv"):
                    c, hw = case[4:].split("x")
                    hw, _, b = hw.partition("b")
                    rows += _conv(int(c), int(hw), t, cfg, int(b or 1))
                elif case == "e2e_cnn":
                    rows += _e2e(t, cfg)
                elif case in ("e2e_vgg_small", "e2e_resnet18"):   # bnnlab/bench_models.py
                    from bnnlab import bench_models
                    rows += bench_models.rows(case, t, cfg, _interleaved, _row)
        if "threads_gemm2048" in chosen:
            rows += _threads_gemm(cfg)
        for case in chosen:
            if case.startswith("mem_"):
                rows += _memory(case)
    finally:
        torch.set_num_threads(torch_before)
        # back to "follow torch" when it did, else the explicit value it had
        kernels.set_num_threads(None if bnn_before == torch_before else bnn_before)
    return add_efficiency(rows, pk)


def _fmt(v, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "bytes":
        return f"{v / 1024:.1f} KiB" if v >= 1024 else f"{int(v)} B"
    if v >= 1:
        return f"{v:.2f} s"
    if v >= 1e-3:
        return f"{v * 1e3:.3g} ms"
    return f"{v * 1e6:.3g} us"


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def format_table(rows: Sequence[dict]) -> str:
    """A plain-text table of :func:`run`'s rows (one line per row)."""
    head = ("case", "thr", "baseline", "torch", "bnnlab", "ratio", "t.eff", "b.eff", "ok",
            "packing / note")
    lines = []
    for r in rows:
        ratio = "-" if r.get("ratio") is None else f"{r['ratio']:.1f}x"
        extra = "; ".join(s for s in (r.get("packing", ""), r.get("note", "")) if s)
        lines.append((str(r["case"]), "-" if r.get("threads") is None else str(r["threads"]),
                      str(r.get("baseline", "")), _fmt(r.get("torch"), r.get("unit", "s")),
                      _fmt(r.get("bnnlab"), r.get("unit", "s")), ratio, _pct(r.get("torch_eff")),
                      _pct(r.get("bnnlab_eff")), "yes" if r.get("correct") else "NO", extra))
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h)
              for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" if i in (0, 2, 9) else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*l) for l in lines]
    return "\n".join(s.rstrip() for s in out)


def _peak_caption(pk: dict, cpu: dict) -> str:
    def g(v):
        return "n/a" if not v else f"{v / 1e9:.1f} G"

    pc = pk["per_cycle"]
    tf = pk["torch_fp32"]
    parts = [f"fp32 {tf} {g(pk['fp32'].get(tf))}MAC/s"
             + (f" ({pc['fp32'][tf]:.0f}/cycle)" if pc["fp32"].get(tf) else "")]
    for lvl, v in pk["binary"].items():
        if v:
            parts.append(f"binary {lvl} {g(v)}MAC/s" + (f" ({pc['binary'][lvl]:.0f}/cycle)"
                                                         if pc["binary"].get(lvl) else ""))
    clock = f"{pk['clock_hz'] / 1e9:.2f} GHz" if pk.get("clock_hz") else "clock n/a"
    return (f"CPU: {cpu['model']} ({cpu['cpus']} logical CPUs, measured {clock}); torch capability "
            f"{cpu['torch_capability']}. Peaks per core: " + ", ".join(parts) + ".")


def format_markdown(rows: Sequence[dict], pk: dict | None = None, cpu: dict | None = None) -> str:
    """A Markdown table of the timed rows (memory rows omitted), with the CPU and the peaks
    as a caption when ``pk`` and ``cpu`` are given. Efficiency = achieved MAC/s / peak MAC/s."""
    out = []
    if pk is not None and cpu is not None:
        out += [_peak_caption(pk, cpu), ""]
    out += ["| case | threads | torch | bnnlab | speed-up | torch eff. | bnnlab eff. | bnnlab ISA |",
            "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r.get("unit") != "s":
            continue
        ratio = "-" if r.get("ratio") is None else f"{r['ratio']:.1f}×"
        base = "" if r.get("baseline") == "torch float32" else f" (vs {r.get('baseline')})"
        out.append(f"| {r['case']}{base} | {r.get('threads') or '-'} | {_fmt(r.get('torch'), 's')} | "
                   f"{_fmt(r.get('bnnlab'), 's')} | {ratio} | {_pct(r.get('torch_eff'))} | "
                   f"{_pct(r.get('bnnlab_eff'))} | {r.get('isa', '')} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """``python -m bnnlab bench``; returns 0, or 1 if a packed result was wrong."""
    p = argparse.ArgumentParser(
        prog="python -m bnnlab bench",
        description="torch float32 vs bnnlab packed kernels: time and memory.")
    p.add_argument("--quick", action="store_true",
                   help="fewer repeats, skip the 4096 GEMM (< 1 min)")
    p.add_argument("--cases", default=None,
                   help=f"comma-separated names or prefixes; known: {', '.join(CASES)}")
    p.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2 (default)")
    p.add_argument("--repeats", type=int, default=None, help="override the repetitions")
    p.add_argument("--json", metavar="FILE",
                   help="also write the rows, peaks, CPU model/flags/clock as JSON")
    p.add_argument("--markdown", action="store_true",
                   help="also print a Markdown table (CPU and peaks in the caption)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall time (default) or the thread's CPU time, which leaves out time other "
                        "processes hold the core (a busy shared machine); cpu needs --threads 1")
    args = p.parse_args(argv)
    try:
        threads = tuple(int(t) for t in args.threads.split(",") if t.strip())
        if args.clock == "cpu" and threads != (1,):
            raise ValueError("--clock cpu measures the calling thread only: use --threads 1")
        info = kernels.kernel_info()
        load = os.getloadavg() if hasattr(os, "getloadavg") else None
        print(f"bnnlab bench: isa={info['isa']}, openmp={info['openmp']}, cpus={os.cpu_count()}, "
              f"load average={'n/a' if load is None else ', '.join(f'{v:.2f}' for v in load)}, "
              f"torch {torch.__version__}")
        t0 = time.perf_counter()
        _CLOCK["timer"] = time.thread_time if args.clock == "cpu" else time.perf_counter
        try:
            rows = run(args.cases, args.quick, threads, repeats=args.repeats)
        finally:
            _CLOCK["timer"] = time.perf_counter
    except ValueError as exc:
        print(f"bnnlab bench: error: {exc}", file=sys.stderr)
        return 2
    pk, cpu = peaks(), cpu_info()
    print(format_table(rows))
    print(f"({time.perf_counter() - t0:.1f} s; medians of {args.clock} time, torch and bnnlab "
          f"interleaved; ratio = torch / bnnlab; eff. = achieved MAC/s / peak MAC/s)")
    print(_peak_caption(pk, cpu))
    if args.markdown:
        print()
        print(format_markdown(rows, pk, cpu))
    if args.json:
        doc = {"kernel_info": info, "load_average": load, "torch_version": torch.__version__,
               "quick": args.quick, "clock": args.clock, "threads": list(threads), "cpu": cpu,
               "peaks": pk, "rows": rows}
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2, default=str)
    return 0 if all(r["correct"] for r in rows) else 1
