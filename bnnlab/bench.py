r"""Speed and memory benchmarks: torch float32 vs bnnlab's packed kernels.

``python -m bnnlab bench [--quick] [--cases gemm,conv64] [--threads 1,2] [--peers] [--json FILE] [--markdown]``

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
  ``F.conv2d(x, w, padding=1)``; bnnlab ``pack_nhwc(x)`` in the loop + a
  :func:`~bnnlab.kernels.prepare_conv2d` plan (+1 padding; the weight panel laid out once, as
  ``bnnlab.packed``'s layers do; checked against torch on the +1-padded input).
* ``e2e_cnn``: ``packed.export(models.binary_cnn())`` vs the float twin
  ``models.binary_cnn(binary=False)``; ``e2e_cnn_vs_torch_bnn``: the same packed model vs the
  torch BNN it came from.
* ``threads_gemm2048``, ``threads_conv{c}x{hw}[b16]``: bnnlab at 2 threads vs bnnlab at 1
  thread (the baseline column), interleaved, then torch's own 2-vs-1 speed-up (``torch_2v1``),
  always on the wall clock; ``peak_2v1`` is the register-only binary kernel's 2-vs-1 scaling
  (:func:`parallel_peak_scaling`), the ceiling any kernel can reach on this machine, and
  ``steal`` the CPU time the hypervisor gave to other guests meanwhile (a shared VM). Targets
  (:func:`threads_target`): >= 1.85x for GEMM 2048 and the batch-16 convs, >= 1x (never
  slower) for batch-1 convs.
* ``mem_*``: float32 bytes vs packed bytes (ratio = float / packed).

**Peers** (``--peers``, :data:`PEERS`), timed in the same interleaved run, each checked first:

* ``openvino``: OpenVINO's ``BinaryConvolution`` (:func:`openvino_conv2d`; weights a packed
  ``u1`` constant, ``mode="xnor-popcount"``, +1 padding), on every conv case, bit-exact against
  torch or not timed. Without OpenVINO (``pip install bnnlab[peers]``) the entry says
  ``"not installed"``.
* ``torch_int8``: torch's int8 paths, where 1 bit competes with 8: a dynamic-quantised
  ``Linear`` (:func:`int8_linear`) on the GEMM / GEMV cases, a statically quantised conv with
  the x86 backend (:func:`int8_conv2d`) on the conv cases, each within :data:`INT8_TOLERANCE`
  (relative L2 error) of float32 or not timed.
* ``bnn_lab``: the packed binary GEMM of bnn-lab (PyPI ``bnn-lab``, module ``bnn``;
  :func:`bnn_lab_gemm`) on the GEMM / GEMV cases: its own NumPy packer for the operand bnnlab
  packs in the loop, its native OpenMP kernel on the same bit layout (bit 1 = -1, LSB first),
  at the case's thread count, bit-exact against torch or not timed. bnn-lab 1.0 pins
  ``torch<2.13``, so it is installed beside bnnlab with ``pip install --no-deps bnn-lab``
  (its kernels need only NumPy); without it the entry says ``"not installed"``.

A peer's ``ratio`` is its time over bnnlab's (bnnlab's speed-up over the peer).

**README**: ``--update-readme README.md`` (with ``--json`` or ``--from-json``) rewrites the
generated block between ``<!-- bench:begin ... -->`` and ``<!-- bench:end -->``; a test checks
that the README's block equals what the stored JSON gives, so no typed figure can drift.

bnnlab outputs are int32 (exact); torch's are float32. ``n = 4096``, the batch-16 convs and
all threads cases but GEMM 2048 and conv 256@14 are skipped with ``--quick``. The end-to-end
models run on one 28x28 image under ``torch.inference_mode``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bnnlab import kernels

__all__ = ["CASES", "PEERS", "INT8_TOLERANCE", "run", "peaks", "peak_ratio", "cpu_info", "add_efficiency",
           "format_table", "format_markdown", "format_threads_markdown", "threads_target",
           "parallel_peak_scaling",
           "openvino_version", "openvino_conv2d", "int8_linear", "int8_conv2d", "bnn_lab_version",
           "bnn_lab_gemm", "readme_block", "targets", "format_targets_markdown",
           "update_readme", "latency", "model_latency", "main"]

#: every case name, in run order (memory rows come last)
CASES: tuple[str, ...] = (
    "gemm512", "gemm1024", "gemm2048", "gemm4096",
    "gemv1x4096", "gemv8x4096",
    "conv64x56", "conv128x28", "conv256x14", "conv512x7",
    "conv64x56b16", "conv128x28b16", "conv256x14b16", "conv512x7b16",
    "e2e_cnn", "e2e_vgg_small", "e2e_resnet18",
    "threads_gemm2048",
    "threads_conv64x56", "threads_conv128x28", "threads_conv256x14", "threads_conv512x7",
    "threads_conv64x56b16", "threads_conv128x28b16", "threads_conv256x14b16", "threads_conv512x7b16",
    "mem_gemm4096", "mem_cnn_weights", "mem_cnn_file",
)
_QUICK_SKIP = ("gemm4096", "e2e_vgg_small", "e2e_resnet18",
               "conv64x56b16", "conv128x28b16", "conv256x14b16", "conv512x7b16",
               "threads_conv64x56", "threads_conv128x28", "threads_conv512x7",
               "threads_conv64x56b16", "threads_conv128x28b16", "threads_conv256x14b16",
               "threads_conv512x7b16")
#: peers ``bench --peers`` adds (row key ``peers``): OpenVINO's BinaryConvolution on the conv
#: cases, torch's int8 paths on the GEMM, GEMV and conv cases, bnn-lab's packed GEMM on the
#: GEMM and GEMV cases
PEERS: tuple[str, ...] = ("openvino", "torch_int8", "bnn_lab")
#: peers that compute the same binary MACs as bnnlab (an efficiency and a ceiling apply)
BINARY_PEERS: tuple[str, ...] = ("openvino", "bnn_lab")


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


def parallel_peak_scaling(seconds: float = 0.2, n_threads: int = 2) -> dict:
    """The ceiling of a 2-vs-1-thread speed-up on this machine, from the register-only kernels.

    Runs the binary peak kernel of bnnlab's level (and torch's fp32 peak kernel) on
    ``n_threads`` Python threads at once (the kernels release the GIL) and returns, for each,
    the summed per-thread peak over the single-thread peak: about ``n_threads`` on independent
    cores, much less on SMT siblings or a host that shares the cores. ``{}`` without peaks.
    """
    import threading

    from bnnlab import _kernels
    pk = peaks()
    if not pk["supported"]:
        return {}
    lvl = kernels.kernel_info()["isa"]
    jobs = {"binary": (_kernels.roofline_binary, list(_kernels.LEVEL_NAMES).index(lvl), pk["binary"][lvl]),
            "fp32": (_kernels.roofline_fp32, list(_kernels.FP32_KERNELS).index(pk["torch_fp32"]),
                     pk["fp32"][pk["torch_fp32"]])}
    out = {}
    for name, (fn, idx, single) in jobs.items():
        res = [0.0] * n_threads

        def work(i: int, fn=fn, idx=idx, res=res) -> None:
            res[i] = fn(idx, float(seconds))
        ts = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        out[name] = sum(res) / single if single else None
    return out


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
    (binary peak of the row's ISA level x threads). Binary peers (:data:`BINARY_PEERS`) get
    ``eff`` against the best binary peak of any level and ``ceiling = 1 / eff``: the largest
    speed-up over that peer that a kernel running at this core's measured binary peak could
    show.
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
        best = max(pk["binary"].values(), default=0.0)
        for key, e in (r.get("peers") or {}).items():
            if key in BINARY_PEERS and e.get("time") and best:
                e["eff"] = r["macs"] / e["time"] / (best * nt)
                e["ceiling"] = 1.0 / e["eff"]
    return list(rows)


# ----------------------------------------------------------------------------- peers
def openvino_version() -> str | None:
    """The installed OpenVINO's version (``"2026.4.1"``), or ``None`` when it is not installed."""
    try:
        import openvino
    except (ImportError, OSError):    # absent, or its shared libraries do not load
        return None
    return str(openvino.__version__).split("-")[0]


def openvino_conv2d(weight, input_shape: Sequence[int], *, padding: int = 1, pad_value: float = 1.0,
                    n_threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """OpenVINO's ``BinaryConvolution`` (opset1, ``mode="xnor-popcount"``), compiled for the CPU.

    The weights become a little-endian packed ``u1`` constant (bit 1 = +1: ``weight >= 0``);
    stride 1, square ``padding`` filled with ``pad_value`` (±1).

    Args:
        weight: ``(O, C, k_h, k_w)`` real tensor or array (its signs are used).
        input_shape: the static ``(N, C, H, W)`` the graph is compiled for (the CPU plugin
            refuses dynamic shapes).
        padding: pixels of padding on every side, >= 0.
        pad_value: +1.0 or -1.0.
        n_threads: ``INFERENCE_NUM_THREADS`` (one stream).

    Returns:
        ``f(x)``: ``x`` a C-contiguous float32 ``(N, C, H, W)`` array of ±1 (OpenVINO binarises
        its input as ``x > 0``, so an exact 0 counts as -1, unlike ``bnnlab``'s sign(0) = +1);
        returns the float32 output (a view of OpenVINO's buffer, overwritten by the next call).

    Raises:
        ImportError: OpenVINO is not installed (``pip install bnnlab[peers]``).

    OpenVINO 2026.4's CPU plugin gives wrong sums when ``C`` is not a multiple of 8 (seen here);
    the bench checks every result against torch before timing it.
    """
    import openvino as ov
    from openvino import opset1

    from bnnlab._validation import check_choice, check_int

    w = np.asarray(weight.detach().cpu().numpy() if isinstance(weight, torch.Tensor) else weight)
    if w.ndim != 4:
        raise ValueError(f"weight must be 4-D (O, C, k_h, k_w), got shape {w.shape}")
    shape = [check_int(v, "input_shape", min_value=1) for v in input_shape]
    if len(shape) != 4 or shape[1] != w.shape[1]:
        raise ValueError(f"input_shape must be (N, {w.shape[1]}, H, W), got {tuple(input_shape)!r}")
    padding = check_int(padding, "padding", min_value=0)
    pad_value = check_choice(float(pad_value), "pad_value", (1.0, -1.0))
    n_threads = check_int(n_threads, "n_threads", min_value=1)
    const = ov.Tensor(ov.Type.u1, ov.Shape(list(w.shape)))
    const.data[:] = np.packbits((w >= 0).astype(np.uint8).ravel(), bitorder="little")
    x = opset1.parameter(shape, np.float32, name="x")
    y = opset1.binary_convolution(x, ov.op.Constant(const), [1, 1], [padding, padding],
                                  [padding, padding], [1, 1], "xnor-popcount", pad_value)
    compiled = ov.Core().compile_model(ov.Model([y], [x]), "CPU",
                                       {"INFERENCE_NUM_THREADS": n_threads, "NUM_STREAMS": 1})
    request = compiled.create_infer_request()

    def run(xs: np.ndarray) -> np.ndarray:
        request.infer({0: xs}, share_inputs=True, share_outputs=True)
        return request.get_output_tensor(0).data
    return run


@contextlib.contextmanager
def _quiet_ao():
    """torch.ao.quantization warns on every use (deprecation, reduce_range): silence it here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def int8_linear(weight) -> torch.nn.Module:
    """torch's dynamic-quantised ``Linear`` (``torch.ao.quantization.quantize_dynamic``, qint8).

    Weights int8 (per tensor), activations quantised per call to uint8 from their own range,
    int32 accumulation, float32 output; the engine torch has selected (x86 / fbgemm on x86).
    ``weight`` is ``(N, K)``; the module maps ``(M, K)`` float32 to ``(M, N)``.
    """
    from torch.ao import quantization as Q
    w = torch.as_tensor(weight, dtype=torch.float32)
    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(w)
    with _quiet_ao():
        return Q.quantize_dynamic(torch.nn.Sequential(lin).eval(), {torch.nn.Linear}, dtype=torch.qint8)


def int8_conv2d(weight, calibration: torch.Tensor, *, padding: int = 1) -> torch.nn.Module:
    """torch's statically quantised ``Conv2d`` with the x86 backend (eager mode).

    ``QuantStub`` -> quantised conv: the input is quantised inside the call (uint8, per tensor),
    weights int8 per channel, output uint8 (not dequantised, as bnnlab's int32 output is not
    repacked); ``get_default_qconfig("x86")``, calibrated on ``calibration``. Sets
    ``torch.backends.quantized.engine = "x86"``.
    """
    from torch.ao import quantization as Q
    w = torch.as_tensor(weight, dtype=torch.float32)
    torch.backends.quantized.engine = "x86"
    conv = torch.nn.Conv2d(w.shape[1], w.shape[0], (w.shape[2], w.shape[3]), padding=padding, bias=False)
    with torch.no_grad():
        conv.weight.copy_(w)
    model = torch.nn.Sequential(Q.QuantStub(), conv).eval()
    with _quiet_ao():
        model.qconfig = Q.get_default_qconfig("x86")
        Q.prepare(model, inplace=True)
        with torch.no_grad():
            model(calibration)
        Q.convert(model, inplace=True)
    return model


#: relative L2 error ||int8 - fp32|| / ||fp32|| up to which a torch int8 result counts as correct
INT8_TOLERANCE = 0.05


def _peer(name: str, time_s: float | None = None, *, correct: bool = False, note: str = "") -> dict:
    return {"name": name, "time": time_s, "ratio": None, "correct": correct, "note": note}


def _int8_check(got: torch.Tensor, want: torch.Tensor) -> tuple[bool, str]:
    got = got.dequantize() if got.is_quantized else got
    err = float((got.float() - want.float()).norm() / max(float(want.float().norm()), 1e-30))
    ok = err <= INT8_TOLERANCE
    return ok, (f"relative L2 error vs fp32 {err:.2%}" + ("" if ok else
                f" > {INT8_TOLERANCE:.0%}: not timed"))


_OV_MODELS: dict = {}


def _conv_peers(x: torch.Tensor, w: torch.Tensor, want: np.ndarray, want_zero: torch.Tensor,
                threads: int, peers: Sequence[str]) -> tuple[dict, list[Callable[[], object]]]:
    """Peer entries and their timed calls (in the entries' order) for a 3x3 conv case."""
    entries: dict = {}
    calls: list[Callable[[], object]] = []
    if "openvino" in peers:
        ver = openvino_version()
        if ver is None:
            entries["openvino"] = _peer("OpenVINO BinaryConvolution", note="not installed")
        else:
            name = f"OpenVINO {ver} BinaryConvolution"
            key = (tuple(x.shape), tuple(w.shape), threads)
            try:
                if key not in _OV_MODELS:
                    _OV_MODELS[key] = openvino_conv2d(w, tuple(x.shape), padding=1, pad_value=1.0,
                                                      n_threads=threads)
            except RuntimeError as exc:     # the CPU plugin refused the graph
                _OV_MODELS[key] = str(exc).strip().splitlines()[-1][:200]
            ov_run, xs = _OV_MODELS[key], np.ascontiguousarray(x.numpy(), dtype=np.float32)
            if isinstance(ov_run, str):
                entries["openvino"] = _peer(name, note=f"OpenVINO refused the graph: {ov_run}")
            elif np.array_equal(ov_run(xs), want):
                entries["openvino"] = _peer(name, correct=True,
                                            note="u1 weights, xnor-popcount, +1 padding; bit-exact")
                calls.append(lambda: ov_run(xs))
            else:
                entries["openvino"] = _peer(name, note="differs from torch: not timed")
    if "torch_int8" in peers:
        q = int8_conv2d(w, x)
        with torch.inference_mode():
            ok, note = _int8_check(q(x), want_zero)
        entries["torch_int8"] = _peer("torch int8", correct=ok,
                                      note="static conv, x86 backend, x quantised in the call; " + note)
        if ok:
            def q_call():
                with torch.inference_mode():
                    return q(x)
            calls.append(q_call)
    return entries, calls


def _linear_int8_peer(x: torch.Tensor, w: torch.Tensor, want: torch.Tensor,
                      peers: Sequence[str]) -> tuple[dict, list[Callable[[], object]]]:
    if "torch_int8" not in peers:
        return {}, []
    q = int8_linear(w)
    with torch.inference_mode():
        ok, note = _int8_check(q(x), want)

    def call():
        with torch.inference_mode():
            return q(x)
    entry = _peer("torch int8", correct=ok, note="dynamic-quantised Linear; " + note)
    return {"torch_int8": entry}, ([call] if ok else [])


def bnn_lab_version() -> str | None:
    """The installed bnn-lab's version (None when it or its native kernel is missing)."""
    try:
        from importlib.metadata import version

        import bnn.kernels.packed as bp
    except ImportError:
        return None
    return version("bnn-lab") if bp.native_kernel_available() else None


def bnn_lab_gemm(a: torch.Tensor, b: torch.Tensor, *, threads: int,
                 prepacked: bool) -> Callable[[], np.ndarray]:
    """A call of bnn-lab's native packed GEMM computing ``a @ b.T`` (float32) for ±1 ``a``,
    ``b``: ``b`` packed once; ``a`` packed once (``prepacked``) or by bnn-lab's packer inside
    the call, as bnnlab's row does. Needs :func:`bnn_lab_version` not None."""
    import bnn.kernels.packed as bp

    a_np, b_np = a.numpy(), b.numpy()
    wp, n = bp.pack_binary_pm1(b_np)
    ap, _ = bp.pack_binary_pm1(a_np)

    def call() -> np.ndarray:
        bp.set_num_threads(threads)
        xp = ap if prepacked else bp.pack_binary_pm1(a_np)[0]
        return bp.binary_gemm_native_prepacked(xp, wp, n)
    return call


def _bnn_lab_peer(a: torch.Tensor, b: torch.Tensor, want: np.ndarray, threads: int,
                  peers: Sequence[str], *, prepacked: bool) -> tuple[dict, list[Callable]]:
    if "bnn_lab" not in peers:
        return {}, []
    ver = bnn_lab_version()
    if ver is None:
        return {"bnn_lab": _peer("bnn-lab", note="not installed")}, []
    name = f"bnn-lab {ver}"
    call = bnn_lab_gemm(a, b, threads=threads, prepacked=prepacked)
    if not np.array_equal(call(), want.astype(np.float32)):
        return {"bnn_lab": _peer(name, note="differs from torch: not timed")}, []
    how = "both operands pre-packed" if prepacked else "x packed by bnn-lab in the call"
    return {"bnn_lab": _peer(name, correct=True, note=f"native OpenMP GEMM, {how}; bit-exact")}, \
        [call]


def _fill_peers(entries: dict, times: Sequence[float], bnnlab_time: float) -> dict:
    """Put the measured times (in order) into the correct entries; ratio = peer / bnnlab."""
    it = iter(times)
    for e in entries.values():
        if e["correct"]:
            e["time"] = next(it)
            e["ratio"] = e["time"] / bnnlab_time if bnnlab_time else None
    return entries


# ----------------------------------------------------------------------------- cases
def _pm1(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.where(torch.rand(*shape, generator=g) < 0.5, -1.0, 1.0)


def _row(case: str, threads: int | None, **kw) -> dict:
    row = {"case": case, "group": _group(case), "threads": threads, "baseline": "torch float32",
           "torch": None, "bnnlab": None, "ratio": None, "unit": "s", "correct": False,
           "packing": "", "note": "", "macs": None, "isa": kernels.kernel_info()["isa"],
           "torch_eff": None, "bnnlab_eff": None, "peers": {}, "torch_2v1": None,
           "peak_2v1": None, "pack_time": None, "pack_share": None, "steal": None}
    row.update(kw)
    if row["torch"] is not None and row["bnnlab"]:
        row["ratio"] = row["torch"] / row["bnnlab"]
    if row["pack_time"] is not None and row["bnnlab"]:
        row["pack_share"] = row["pack_time"] / row["bnnlab"]
    return row


def _gemm(n: int, threads: int, cfg: dict, peers: Sequence[str] = ()) -> list[dict]:
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
    entries, calls = _linear_int8_peer(a, b, torch.from_numpy(want).float(), peers)
    lab, lab_calls = _bnn_lab_peer(a, b, want, threads, peers, prepacked=False)
    lab_pre, lab_pre_calls = _bnn_lab_peer(a, b, want, threads, peers, prepacked=True)
    entries.update(lab)
    t_t, t_b, t_p, t_pack, *t_peers = _interleaved(
        [lambda: a @ b.T, lambda: kernels.xnor_matmul(kernels.pack_signs(a), pb),
         lambda: kernels.xnor_matmul(pa, pb), lambda: kernels.pack_signs(a), *calls, *lab_calls,
         *lab_pre_calls], **cfg)
    n_pre = len(lab_pre_calls)
    t_main, t_pre = (t_peers[:len(t_peers) - n_pre], t_peers[len(t_peers) - n_pre:])
    return [_row(name, threads, torch=t_t, bnnlab=t_b, correct=True, macs=n ** 3,
                 packing="A packed in the loop, B pre-packed", pack_time=t_pack,
                 peers=_fill_peers(entries, t_main, t_b)),
            _row(name + "_prepacked", threads, torch=t_t, bnnlab=t_p, correct=True, macs=n ** 3,
                 packing="A and B pre-packed", peers=_fill_peers(lab_pre, t_pre, t_p))]


def _gemv(m: int, threads: int, cfg: dict, peers: Sequence[str] = ()) -> list[dict]:
    k = n = 4096
    x, w = _pm1(m, k, seed=3), _pm1(n, k, seed=4)
    pw = kernels.pack_signs(w)
    want = (x @ w.T).to(torch.int32).numpy()
    name = f"gemv{m}x4096"
    if not np.array_equal(kernels.xnor_matmul(kernels.pack_signs(x), pw), want):
        return [_row(name, threads, note="packed result differs from torch: not timed")]
    entries, calls = _linear_int8_peer(x, w, torch.from_numpy(want).float(), peers)
    lab, lab_calls = _bnn_lab_peer(x, w, want, threads, peers, prepacked=False)
    entries.update(lab)
    t_t, t_b, *t_peers = _interleaved(
        [lambda: x @ w.T, lambda: kernels.xnor_matmul(kernels.pack_signs(x), pw), *calls,
         *lab_calls], **cfg)
    return [_row(name, threads, torch=t_t, bnnlab=t_b, correct=True, macs=m * k * n,
                 packing="x packed in the loop, W pre-packed",
                 peers=_fill_peers(entries, t_peers, t_b))]


def _conv_data(c: int, hw: int, batch: int):
    """(x, w, packed w, torch's int32 result on the +1-padded input) of a 3x3 c -> c conv."""
    x, w = _pm1(batch, c, hw, hw, seed=5), _pm1(c, c, 3, 3, seed=6)
    want = F.conv2d(F.pad(x, (1, 1, 1, 1), value=1.0), w).to(torch.int32).numpy()
    return x, w, kernels.pack_conv_weights(w), want


def _conv(c: int, hw: int, threads: int, cfg: dict, batch: int = 1,
          peers: Sequence[str] = ()) -> list[dict]:
    x, w, pw, want = _conv_data(c, hw, batch)
    name = f"conv{c}x{hw}" + (f"b{batch}" if batch != 1 else "")
    # a plan, as bnnlab.packed's layers use: the weight panel is laid out once
    plan = kernels.prepare_conv2d(pw, padding=1, pad_value=1.0)
    got = plan(kernels.pack_nhwc(x))
    if not np.array_equal(got, want):
        return [_row(name, threads, note="packed result differs from torch: not timed")]
    entries, calls = ({}, []) if not peers else \
        _conv_peers(x, w, want, F.conv2d(x, w, padding=1), threads, peers)
    t_t, t_b, t_pack, *t_peers = _interleaved(
        [lambda: F.conv2d(x, w, padding=1), lambda: plan(kernels.pack_nhwc(x)),
         lambda: kernels.pack_nhwc(x), *calls], **cfg)
    return [_row(name, threads, torch=t_t, bnnlab=t_b, correct=True, pack_time=t_pack,
                 macs=batch * hw * hw * c * c * 9, peers=_fill_peers(entries, t_peers, t_b),
                 packing="x packed in the loop (NHWC), W prepared once (prepare_conv2d)",
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


#: 2-vs-1-thread targets (issue 12): GEMM 2048 and batch-16 convs, batch-1 convs (never slower)
THREADS_TARGETS: tuple[float, float] = (1.85, 1.0)


def threads_target(case: str) -> float:
    """The 2-vs-1-thread speed-up a ``threads_*`` case should reach."""
    big = case == "threads_gemm2048" or case.endswith("b16")
    return THREADS_TARGETS[0] if big else THREADS_TARGETS[1]


def _cpu_ticks() -> tuple[int, int] | None:
    """(steal, total) clock ticks of all CPUs from ``/proc/stat`` (Linux; ``None`` elsewhere).
    Steal is the time the hypervisor ran other guests while this one had work: on a shared
    VM it is what makes a 2-thread wall-clock speed-up lower than the code allows."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            return _parse_cpu_ticks(f.readline())
    except OSError:
        return None


def _parse_cpu_ticks(line: str) -> tuple[int, int] | None:
    """(steal, total) of ``/proc/stat``'s aggregate ``cpu`` line (``None`` if it is not one)."""
    head = line.split()
    if len(head) < 9 or head[0] != "cpu" or not all(v.isdigit() for v in head[1:]):
        return None
    ticks = [int(v) for v in head[1:]]
    # guest and guest_nice (fields 9, 10) are already counted in user and nice
    return ticks[7], sum(ticks[:8])


def _steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of all CPUs' time stolen by the hypervisor between two :func:`_cpu_ticks`."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return max(0, after[0] - before[0]) / (after[1] - before[1])


def _threads(case: str, cfg: dict) -> list[dict]:
    """bnnlab at 2 threads vs 1 (interleaved), then torch's own 2-vs-1 (interleaved), wall clock."""
    if case == "threads_gemm2048":
        a, b = _pm1(2048, 2048, seed=1), _pm1(2048, 2048, seed=2)
        pb = kernels.pack_signs(b)
        want = (a @ b.T).to(torch.int32).numpy()

        def ours(t: int) -> np.ndarray:
            return kernels.xnor_matmul(kernels.pack_signs(a, n_threads=t), pb, n_threads=t)

        def theirs() -> object:
            return a @ b.T
        packing, macs = "A packed in the loop, B pre-packed", 2048 ** 3
    else:
        c, hw = case[len("threads_conv"):].split("x")
        hw, _, bs = hw.partition("b")
        batch = int(bs or 1)
        x, w, pw, want = _conv_data(int(c), int(hw), batch)
        plan = kernels.prepare_conv2d(pw, padding=1, pad_value=1.0)

        def ours(t: int) -> np.ndarray:
            return plan(kernels.pack_nhwc(x, n_threads=t), n_threads=t)

        def theirs() -> object:
            return F.conv2d(x, w, padding=1)
        packing = "x packed in the loop (NHWC), W prepared once (prepare_conv2d)"
        macs = batch * int(hw) ** 2 * int(c) ** 2 * 9
    if not all(np.array_equal(ours(t), want) for t in (1, 2)):
        return [_row(case, 2, note="result differs between thread counts: not timed")]

    def torch_at(t: int) -> Callable[[], object]:
        def f() -> object:
            torch.set_num_threads(t)
            return theirs()
        return f

    torch_before, clock = torch.get_num_threads(), _CLOCK["timer"]
    _CLOCK["timer"] = time.perf_counter     # a CPU-time clock would miss the second thread
    try:
        # two runs: torch's OpenMP workers spin after each torch op and would hold the second
        # core during the next bnnlab call (ext/README.md, "Threads")
        ticks = _cpu_ticks()
        t1, t2 = _interleaved([lambda: ours(1), lambda: ours(2)], **cfg)
        steal = _steal_share(ticks, _cpu_ticks())
        tt1, tt2 = _interleaved([torch_at(1), torch_at(2)], **cfg)
    finally:
        _CLOCK["timer"] = clock
        torch.set_num_threads(torch_before)
    return [_row(case, 2, torch=t1, bnnlab=t2, correct=True, baseline="bnnlab 1 thread",
                 packing=packing, macs=macs, torch_2v1=tt1 / tt2, steal=steal,
                 note=f"2 vs 1 threads, wall clock; torch float32's own 2-vs-1: {tt1 / tt2:.2f}x; "
                      f"target >= {threads_target(case):.2f}x"
                      + ("" if steal is None else f"; CPU time stolen by the hypervisor: "
                                                  f"{100 * steal:.1f}%"))]


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
        threads: Sequence[int] = (1, 2), *, repeats: int | None = None,
        peers: bool | Iterable[str] = False) -> list[dict]:
    """Run the benchmark cases; return one dict per row.

    Args:
        cases: names from :data:`CASES`, prefixes (``"gemm"``, ``"conv64"``) or a comma-separated
            string; ``None`` runs everything.
        quick: fewer repetitions and no 4096 GEMM (under a minute on 2 cores).
        threads: thread counts to run the timed cases at (memory rows once).
        repeats: override the number of repetitions.
        peers: ``True`` (all of :data:`PEERS`) or names from it: time the peers in the same
            interleaved run (OpenVINO's BinaryConvolution on the convs; torch int8 on the GEMM,
            GEMV and conv cases), each checked before it is timed. A missing OpenVINO gives an
            entry with the note ``"not installed"``.

    Returns:
        Rows with keys ``case``, ``group``, ``threads``, ``baseline`` (what the ``torch`` column
        holds), ``torch`` and ``bnnlab`` (median seconds, or bytes for memory rows; ``None`` when
        not measured), ``ratio`` (torch / bnnlab: the speed-up or memory saving), ``unit``
        (``"s"`` or ``"bytes"``), ``correct`` (the packed result was checked equal to torch;
        ``False`` rows carry no time), ``packing``, ``note``, ``macs`` (multiply-accumulates per
        call; ``None`` where not counted), ``isa`` (bnnlab's instruction-set level) and
        ``torch_eff`` / ``bnnlab_eff`` (achieved MAC/s over the peak of :func:`peaks` times the
        thread count; ``None`` without a MAC count or a peak), ``peers`` (``{name: {"name",
        "time", "ratio" (peer time / bnnlab time: bnnlab's speed-up over the peer), "correct",
        "note"}}``, empty without ``peers``), ``torch_2v1`` (``threads_*`` rows: torch's own
        2-vs-1-thread speed-up) and ``peak_2v1`` (``threads_*`` rows: the register-only binary
        kernel's 2-vs-1 scaling, :func:`parallel_peak_scaling`: the machine's ceiling), ``steal``
        (``threads_*`` rows: the share of all CPUs' time that the hypervisor gave to other guests
        while bnnlab's 1- and 2-thread calls were timed, from ``/proc/stat``; ``None`` where it
        cannot be read).
    """
    if isinstance(quick, (int, float)) and not isinstance(quick, bool):
        raise TypeError(f"quick must be a bool, got {type(quick).__name__}")
    threads = tuple(threads)
    if not threads or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in threads):
        raise ValueError(f"threads must be positive ints, got {threads!r}")
    chosen = _select(cases, quick)
    if isinstance(peers, bool):
        chosen_peers: tuple[str, ...] = PEERS if peers else ()
    else:
        chosen_peers = tuple(peers)
        bad = [p for p in chosen_peers if p not in PEERS]
        if bad:
            raise ValueError(f"peers: unknown peer(s) {bad}; known: {', '.join(PEERS)}")
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
                    rows += _gemm(int(case[4:]), t, cfg, chosen_peers)
                elif case.startswith("gemv"):
                    rows += _gemv(int(case[4:case.index("x")]), t, cfg, chosen_peers)
                elif case.startswith("conv"):
                    c, hw = case[4:].split("x")
                    hw, _, b = hw.partition("b")
                    rows += _conv(int(c), int(hw), t, cfg, int(b or 1), chosen_peers)
                elif case == "e2e_cnn":
                    rows += _e2e(t, cfg)
                elif case in ("e2e_vgg_small", "e2e_resnet18"):   # bnnlab/bench_models.py
                    from bnnlab import bench_models
                    rows += bench_models.rows(case, t, cfg, _interleaved, _row)
        if any(case.startswith("threads_") for case in chosen):
            ceiling = parallel_peak_scaling(0.1 if quick else 0.2).get("binary")
            for case in chosen:
                if case.startswith("threads_"):
                    rows += [dict(r, peak_2v1=ceiling) for r in _threads(case, cfg)]
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


def _pct(v, digits: int = 0) -> str:
    return "-" if v is None else f"{100 * v:.{digits}f}%"


def _peer_lines(r: dict) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for key, e in (r.get("peers") or {}).items():
        ratio = "-" if e.get("ratio") is None else f"{e['ratio']:.1f}x"
        out.append((f"  {r['case']}:{key}", "-" if r.get("threads") is None else str(r["threads"]),
                    str(e.get("name", key)), _fmt(e.get("time"), "s"), _fmt(r.get("bnnlab"), "s"),
                    ratio, "-", "-", "yes" if e.get("correct") else "NO", str(e.get("note", ""))))
    return out


def format_table(rows: Sequence[dict]) -> str:
    """A plain-text table of :func:`run`'s rows (one line per row, one more per peer)."""
    head = ("case", "thr", "baseline", "torch", "bnnlab", "ratio", "t.eff", "b.eff", "ok",
            "packing / note")
    lines: list[tuple[str, ...]] = []
    for r in rows:
        ratio = "-" if r.get("ratio") is None else f"{r['ratio']:.1f}x"
        extra = "; ".join(s for s in (r.get("packing", ""), r.get("note", "")) if s)
        lines.append((str(r["case"]), "-" if r.get("threads") is None else str(r["threads"]),
                      str(r.get("baseline", "")), _fmt(r.get("torch"), r.get("unit", "s")),
                      _fmt(r.get("bnnlab"), r.get("unit", "s")), ratio, _pct(r.get("torch_eff")),
                      _pct(r.get("bnnlab_eff")), "yes" if r.get("correct") else "NO", extra))
        lines += _peer_lines(r)
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h)
              for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" if i in (0, 2, 9) else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*l) for l in lines]
    return "\n".join(s.rstrip() for s in out)


def peak_ratio(pk: dict) -> tuple[str, float] | None:
    """(best binary level, its peak / torch's fp32 peak), or ``None`` without peaks."""
    fp = pk.get("fp32", {}).get(pk.get("torch_fp32", ""), 0.0)
    binary = {k: v for k, v in pk.get("binary", {}).items() if v}
    if not fp or not binary:
        return None
    lvl = max(binary, key=lambda k: binary[k])
    return lvl, binary[lvl] / fp


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


def _peer_cell(e: dict | None) -> str:
    if e is None:
        return "–"
    if e.get("time") is None:
        note = str(e.get("note", ""))
        return ("not installed" if note == "not installed" else
                "refused the graph" if note.startswith("OpenVINO refused") else "wrong: not timed")
    return f"{_fmt(e['time'], 's')} ({e['ratio']:.1f}×)"


def _peer_names(rows: Sequence[dict]) -> dict[str, str]:
    names: dict[str, str] = {}
    for key in PEERS:
        for r in rows:
            e = (r.get("peers") or {}).get(key)
            if e is not None and (key not in names or e.get("time") is not None):
                names[key] = str(e.get("name", key))
    return names


def format_markdown(rows: Sequence[dict], pk: dict | None = None, cpu: dict | None = None) -> str:
    """Markdown tables of the timed rows (memory rows omitted), with the CPU and the peaks as a
    caption when ``pk`` and ``cpu`` are given. Efficiency = achieved MAC/s / peak MAC/s.

    Peers (``run(peers=...)``) get a column each: the peer's time and, in brackets, bnnlab's
    speed-up over it. ``threads_*`` rows go to a second table (:func:`format_threads_markdown`).
    """
    out = []
    if pk is not None and cpu is not None:
        out += [_peak_caption(pk, cpu), ""]
    names = _peer_names(rows)
    out += ["| case | threads | torch | bnnlab | speed-up | torch eff. | bnnlab eff. | bnnlab ISA |"
            + "".join(f" {n} (bnnlab ×) |" for n in names.values()),
            "|---|---:|---:|---:|---:|---:|---:|---|" + "---:|" * len(names)]
    for r in rows:
        if r.get("unit") != "s" or r.get("group") == "threads":
            continue
        ratio = "-" if r.get("ratio") is None else f"{r['ratio']:.1f}×"
        base = "" if r.get("baseline") == "torch float32" else f" (vs {r.get('baseline')})"
        out.append(f"| {r['case']}{base} | {r.get('threads') or '-'} | {_fmt(r.get('torch'), 's')} | "
                   f"{_fmt(r.get('bnnlab'), 's')} | {ratio} | {_pct(r.get('torch_eff'))} | "
                   f"{_pct(r.get('bnnlab_eff'))} | {r.get('isa', '')} |"
                   + "".join(f" {_peer_cell((r.get('peers') or {}).get(k))} |" for k in names))
    threads = format_threads_markdown(rows)
    if threads:
        out += ["", threads]
    return "\n".join(out)


def format_threads_markdown(rows: Sequence[dict]) -> str:
    """The 2-vs-1-thread table of the ``threads_*`` rows ('' when there are none)."""
    sel = [r for r in rows if r.get("group") == "threads"]
    if not sel:
        return ""
    out = ["| case | bnnlab 1 thread | bnnlab 2 threads | bnnlab 2-vs-1 | torch fp32 2-vs-1 | target | met "
           "| stolen CPU time |",
           "|---|---:|---:|---:|---:|---:|---|---:|"]
    ceiling = next((r["peak_2v1"] for r in sel if r.get("peak_2v1")), None)
    for r in sel:
        case = str(r["case"])[len("threads_"):]
        ratio, target = r.get("ratio"), threads_target(str(r["case"]))
        t2 = r.get("torch_2v1")
        out.append(f"| {case} | {_fmt(r.get('torch'), 's')} | {_fmt(r.get('bnnlab'), 's')} | "
                   f"{'-' if ratio is None else f'{ratio:.2f}×'} | "
                   f"{'-' if t2 is None else f'{t2:.2f}×'} | ≥ {target:.2f}× | "
                   f"{'-' if ratio is None else ('yes' if ratio >= target else 'no')} | "
                   f"{_pct(r.get('steal'), 1)} |")
    if ceiling:
        out += ["", f"The register-only binary kernel on 2 threads at once runs {ceiling:.2f}× its "
                    "1-thread peak here: the machine's own ceiling for these speed-ups."]
    if any(r.get("steal") is not None for r in sel):
        out += ["", "Stolen CPU time: the share of both cores' time that the hypervisor gave to "
                    "other guests while bnnlab's rows were timed (`/proc/stat`); on a shared VM it "
                    "lowers a wall-clock 2-vs-1 speed-up whatever the code does."]
    return "\n".join(out)


# ----------------------------------------------------------------------------- targets
#: issue 12's efficiency targets per instruction-set level: (GEMM >= 2048 with both operands
#: pre-packed, every 3x3 conv case), as fractions of the level's binary peak
EFFICIENCY_TARGETS: dict[str, tuple[float, float]] = {"avx512": (0.85, 0.75), "avx2": (0.70, 0.65)}
#: activation packing inside the timed call: at most this share of a GEMM 2048 / conv 256@14
PACKING_TARGET = 0.10
PACKING_CASES = ("gemm2048", "conv256x14")
#: bnnlab's speed-up over OpenVINO's BinaryConvolution on every conv case at 1 thread
OPENVINO_TARGET = 2.5
#: end-to-end speed-ups over the float twin at batch 1, 1 thread
E2E_TARGETS: dict[str, float] = {"e2e_vgg_small": 8.0, "e2e_resnet18": 6.0}


def _target(label: str, goal: float, vals: Sequence[tuple[float, str]], *, at_most: bool = False,
            unit: str = "x", note: str = "") -> dict | None:
    if not vals:
        return None
    v, case = (max if at_most else min)(vals)
    met = sum((x <= goal) if at_most else (x >= goal) for x, _ in vals)
    return {"target": label, "goal": goal, "at_most": at_most, "unit": unit, "met": met,
            "of": len(vals), "worst": v, "worst_case": case, "note": note}


def targets(rows: Sequence[dict]) -> list[dict]:
    """Issue 12's targets, checked on bench rows (as :func:`run` returns them or a stored
    ``--json`` holds them): one dict per target with ``target`` (what), ``goal``, ``at_most``
    (the goal is an upper bound), ``unit`` (``"%"`` or ``"x"``), ``met`` / ``of`` (cases
    meeting it / measured), ``worst`` and ``worst_case`` (the case furthest from the goal) and
    ``note``; the OpenVINO target also has ``peer_eff`` and ``ceiling`` ((min, max) over the
    cases, see :func:`add_efficiency`) when the rows carry them. Targets without a measured
    case are left out; efficiency targets exist for the ``avx512`` and ``avx2`` levels only."""
    one = [r for r in rows if r.get("threads") == 1 and r.get("correct") and r.get("unit") == "s"]
    out: list[dict | None] = []
    for isa, (gemm_goal, conv_goal) in EFFICIENCY_TARGETS.items():
        sel = [r for r in one if r.get("isa") == isa and r.get("bnnlab_eff") is not None]
        out.append(_target(f"GEMM ≥ 2048, operands pre-packed: efficiency at {isa}", gemm_goal,
                           [(r["bnnlab_eff"], r["case"]) for r in sel
                            if r["case"] in ("gemm2048_prepacked", "gemm4096_prepacked")],
                           unit="%"))
        out.append(_target(f"3×3 convolutions, batch 1 and 16: efficiency at {isa}", conv_goal,
                           [(r["bnnlab_eff"], r["case"]) for r in sel if r["group"] == "conv"],
                           unit="%"))
    out.append(_target("activation packing inside the timed call (GEMM 2048, conv 256@14)",
                       PACKING_TARGET, [(r["pack_share"], r["case"]) for r in one
                                        if r["case"] in PACKING_CASES and r.get("pack_share")],
                       at_most=True, unit="%"))
    thr = [r for r in rows if r.get("group") == "threads" and r.get("ratio")]
    for goal, label in zip(THREADS_TARGETS, ("2 threads vs 1: GEMM 2048 and batch-16 convs",
                                             "2 threads vs 1: batch-1 convs never slower"),
                           strict=True):
        out.append(_target(label, goal, [(r["ratio"], str(r["case"])[len("threads_"):])
                                         for r in thr if threads_target(str(r["case"])) == goal]))
    ov = [(r["peers"]["openvino"], r["case"]) for r in one if r["group"] == "conv"
          and (r.get("peers") or {}).get("openvino", {}).get("ratio")]
    effs = [(e["eff"], e["ceiling"]) for e, _ in ov if e.get("eff") and e.get("ceiling")]
    note, extra = "", {}
    if effs:
        eff = (min(e for e, _ in effs), max(e for e, _ in effs))
        ceiling = (min(c for _, c in effs), max(c for _, c in effs))
        extra = {"peer_eff": eff, "ceiling": ceiling}
        note = (f"OpenVINO runs at {eff[0]:.0%}–{eff[1]:.0%} of this core's best binary "
                f"peak, so a kernel at that peak would be {ceiling[0]:.1f}–{ceiling[1]:.1f}× "
                "faster than it")
        below = sum(c < OPENVINO_TARGET for _, c in effs)
        if below:
            note += (f"; {below} of {len(effs)} cases cannot reach {OPENVINO_TARGET:g}× "
                     "on this machine")
    t = _target("speed-up over OpenVINO's BinaryConvolution, every conv case, 1 thread",
                OPENVINO_TARGET, [(e["ratio"], c) for e, c in ov], note=note)
    out.append(None if t is None else {**t, **extra})
    for case, goal in E2E_TARGETS.items():
        name = "VGG-small" if "vgg" in case else "ResNet-18-style Bi-Real net"
        out.append(_target(f"{name} end to end vs its float twin, batch 1, 1 thread", goal,
                           [(r["ratio"], r["case"]) for r in one if r["case"] == case
                            and r.get("ratio")]))
    return [t for t in out if t is not None]


def format_targets_markdown(rows: Sequence[dict]) -> str:
    """Markdown table of :func:`targets` ('' when no target has a measured case)."""
    ts = targets(rows)
    if not ts:
        return ""

    def val(t: dict, v: float) -> str:
        return f"{v:.0%}" if t["unit"] == "%" else f"{v:.2f}×"

    out = ["| target (issue 12) | goal | cases meeting it | furthest from the goal |",
           "|---|---:|---:|---|"]
    notes = []
    for t in ts:
        out.append(f"| {t['target']} | {'≤' if t['at_most'] else '≥'} {val(t, t['goal'])} | "
                   f"{t['met']} of {t['of']} | {t['worst_case']}: {val(t, t['worst'])} |")
        if t["note"]:
            notes.append(t["note"][0].upper() + t["note"][1:] + ".")
    return "\n".join(out + ([""] + notes if notes else []))


# ----------------------------------------------------------------------------- README block
README_BEGIN = "<!-- bench:begin"
README_END = "<!-- bench:end -->"


def _memory_sentence(rows: Sequence[dict]) -> str:
    mem = {r["case"]: r for r in rows if r.get("unit") == "bytes" and r.get("ratio")}
    parts = []
    if "mem_gemm4096" in mem:
        parts.append(f"a 4096×4096 weight matrix packs {mem['mem_gemm4096']['ratio']:.1f}× smaller "
                     "than float32")
    if "mem_cnn_weights" in mem:
        parts.append(f"the binary layers of the reference CNN {mem['mem_cnn_weights']['ratio']:.1f}×")
    if "mem_cnn_file" in mem:
        parts.append(f"its exported file is {mem['mem_cnn_file']['ratio']:.1f}× smaller than the "
                     "float twin's `state_dict` (float first/last layers and batch-norm dominate "
                     "what is left)")
    return ("Memory: " + "; ".join(parts) + ".") if parts else ""


def readme_block(doc: dict, source: str) -> str:
    """The README's generated speed section for the bench JSON ``doc`` stored at ``source``."""
    cmd = doc.get("command") or "python -m bnnlab bench"
    load, end = doc.get("load_average"), doc.get("load_average_end")
    load_text = "n/a" if not load else f"{load[0]:.1f} (1 min) at the start" + (
        f", {end[0]:.1f} at the end" if end else "")
    timer = ("the thread's CPU time (leaves out the time other processes held the core)"
             if doc.get("clock") == "cpu" else "wall time")
    lines = [f"{README_BEGIN} generated from {source} by `python -m bnnlab bench --from-json {source} "
             f"--update-readme README.md`; do not edit -->",
             f"Measured with `{cmd}`: torch {doc.get('torch_version', '?')}"
             + (f", OpenVINO {doc['openvino_version']}" if doc.get("openvino_version") else "")
             + f"; medians of {timer}, the `threads` table on wall time; load average {load_text}.",
             ""]
    rows = add_efficiency(doc["rows"], doc["peaks"])
    counts = sorted({r["threads"] for r in rows if r.get("threads") and r.get("group") != "threads"})
    main_rows = [r for r in rows if r.get("threads") in (None, counts[0] if counts else 1)
                 or r.get("group") == "threads"]
    lines += [format_markdown(main_rows, doc["peaks"], doc["cpu"]), ""]
    if len(counts) > 1:
        lines += [f"The main table shows {counts[0]} thread{'s' if counts[0] > 1 else ''}; the rows at "
                  f"{', '.join(str(c) for c in counts[1:])} threads are in `{source}` "
                  f"(`python -m bnnlab bench --from-json {source}` prints every row).", ""]
    e2e = [r for r in rows if r.get("breakdown")]
    if e2e:
        from bnnlab import bench_models

        lines += ["End to end (`bnnlab/bench_models.py`): where the packed model's time goes — "
                  "the binary kernels, packing floats to bits, and the float glue between them "
                  "(first and last layers, BatchNorm, shortcuts, pooling, Python dispatch).", "",
                  bench_models.table(e2e), ""]
    tt = format_targets_markdown(rows)
    if tt:
        lines += ["Issue 12's targets on this machine (`bench.targets`, from the same rows):", "",
                  tt, ""]
    pr = peak_ratio(doc["peaks"])
    if pr:
        lines.append(f"Peak ratio on this CPU: binary {pr[0]} / fp32 {doc['peaks']['torch_fp32']} "
                     f"= {pr[1]:.1f}×; a speed-up is that ratio times bnnlab's efficiency over "
                     "torch's, not a fixed factor.")
    mem = _memory_sentence(doc["rows"])
    if mem:
        lines += ["", mem]
    lines.append(README_END)
    return "\n".join(lines)


def update_readme(readme, json_path, *, check: bool = False) -> bool:
    """Rewrite the generated block of ``readme`` from the bench JSON at ``json_path``.

    Returns True when the block already matched. With ``check=True`` nothing is written.
    Raises ValueError when ``readme`` has no ``<!-- bench:begin ... -->`` / ``<!-- bench:end -->``.
    """
    from bnnlab._readme import update_block

    return update_block(readme, json_path, README_BEGIN, README_END,
                        lambda source: readme_block(
                            json.loads(Path(json_path).read_text(encoding="utf-8")), source),
                        check=check)


def _command(argv: Sequence[str], env: dict) -> str:
    import shlex
    return " ".join([*(f"{k}={v}" for k, v in env.items()), "python -m bnnlab bench", shlex.join(argv)]).strip()


def main(argv: list[str] | None = None) -> int:
    """``python -m bnnlab bench``; returns 0, or 1 if a packed result was wrong."""
    p = argparse.ArgumentParser(
        prog="python -m bnnlab bench",
        description="torch float32 vs bnnlab packed kernels: time and memory.")
    p.add_argument("--quick", action="store_true",
                   help="fewer repeats, skip the 4096 GEMM and the batch-16 convs (< 1 min)")
    p.add_argument("--cases", default=None,
                   help=f"comma-separated names or prefixes; known: {', '.join(CASES)}")
    p.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2 (default)")
    p.add_argument("--repeats", type=int, default=None, help="override the repetitions")
    p.add_argument("--peers", action="store_true",
                   help="also time OpenVINO's BinaryConvolution (pip install bnnlab[peers]) and "
                        "torch's int8 paths in the same interleaved run")
    p.add_argument("--json", metavar="FILE",
                   help="also write the rows, peaks, CPU model/flags/clock as JSON")
    p.add_argument("--markdown", action="store_true",
                   help="also print a Markdown table (CPU and peaks in the caption)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall time (default) or the thread's CPU time, which leaves out time other "
                        "processes hold the core (a busy shared machine); cpu needs --threads 1 "
                        "(the threads_* cases always use wall time)")
    p.add_argument("--from-json", metavar="FILE", type=Path, default=None,
                   help="measure nothing: print the tables of a stored --json FILE")
    p.add_argument("--update-readme", metavar="README", type=Path, default=None,
                   help="rewrite README's generated speed block (between <!-- bench:begin --> and "
                        "<!-- bench:end -->) from the --from-json or --json file")
    args = p.parse_args(argv)
    if args.from_json is not None:
        try:
            doc = json.loads(args.from_json.read_text(encoding="utf-8"))
            print(format_markdown(doc["rows"], doc["peaks"], doc["cpu"]))
            print("\n" + format_targets_markdown(add_efficiency(doc["rows"], doc["peaks"])))
            if args.update_readme is not None:
                same = update_readme(args.update_readme, args.from_json)
                print(f"{args.update_readme}: {'unchanged' if same else 'updated'}")
        except (OSError, ValueError, KeyError) as exc:
            print(f"bnnlab bench: error: {exc}", file=sys.stderr)
            return 2
        return 0
    try:
        if args.update_readme is not None and not args.json:
            raise ValueError("--update-readme needs --json FILE (or --from-json FILE)")
        threads = tuple(int(t) for t in args.threads.split(",") if t.strip())
        if args.clock == "cpu" and threads != (1,):
            raise ValueError("--clock cpu measures the calling thread only: use --threads 1")
        info = kernels.kernel_info()
        load = os.getloadavg() if hasattr(os, "getloadavg") else None
        print(f"bnnlab bench: isa={info['isa']}, openmp={info['openmp']}, cpus={os.cpu_count()}, "
              f"load average={'n/a' if load is None else ', '.join(f'{v:.2f}' for v in load)}, "
              f"torch {torch.__version__}"
              + (f", OpenVINO {openvino_version() or 'not installed'}" if args.peers else ""))
        t0 = time.perf_counter()
        _CLOCK["timer"] = time.thread_time if args.clock == "cpu" else time.perf_counter
        try:
            rows = run(args.cases, args.quick, threads, repeats=args.repeats, peers=args.peers)
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
        print("\n" + format_targets_markdown(rows))
    if args.json:
        end_load = os.getloadavg() if hasattr(os, "getloadavg") else None
        doc = {"kernel_info": info, "load_average": load, "load_average_end": end_load,
               "torch_version": torch.__version__,
               "openvino_version": openvino_version() if args.peers else None,
               "command": _command(sys.argv[1:] if argv is None else argv, cpu["env"]),
               "quick": args.quick, "clock": args.clock, "threads": list(threads), "cpu": cpu,
               "peaks": pk, "rows": rows}
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2, default=str)
        if args.update_readme is not None:
            update_readme(args.update_readme, args.json)
    return 0 if all(r["correct"] for r in rows) else 1
