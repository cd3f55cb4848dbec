"""End-to-end benchmark cases on real architectures: the packed VGG-small (32×32) and the
ResNet-18-style Bi-Real net (``models.resnet18_bireal``), against their float twins, at
batch 1 and 16, with the share of the packed model's time spent outside the binary kernels.

Used by :mod:`bnnlab.bench` (cases ``e2e_vgg_small`` and ``e2e_resnet18``)::

    python -m bnnlab bench --cases e2e_vgg_small,e2e_resnet18 --threads 1 --clock cpu

The models are randomly initialised (the speed does not depend on the weights), with
BatchNorm statistics taken from a few random batches so that every sign is non-trivial.
The packed model is checked against the torch BNN it came from before anything is timed
(``PackedModel.check_against``: allclose logits and identical predictions; bit-exactness is
reported in the row's note).

Breakdown (one interleaved run with the models): ``kernels`` replays every binary layer's
kernel plan on the packed inputs it saw during one forward; ``packing`` replays every
float-to-bits step (:class:`~bnnlab.packed.PackedSign`, a packed layer's own input
packing); the **float share** is ``1 - (kernels + packing) / total``: the first and last
layers, BatchNorm, shortcuts, activations, pooling, copies and Python dispatch.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

#: case name -> (builder name in bnnlab.models, description)
CASES: dict[str, tuple[str, str]] = {
    "e2e_vgg_small": ("vgg_small", "models.vgg_small() 32x32"),
    "e2e_resnet18": ("resnet18_bireal", "models.resnet18_bireal(weight_quantizer=\"ste_sign\") 32x32"),
}
BATCHES = (1, 16)
#: Bi-Real's magnitude-aware weights (α·sign W) make torch sum α-scaled terms in float, which
#: the integer kernel cannot reproduce bit for bit, and a 16-block residual net amplifies
#: every near-zero sign flip; sign weights (the BatchNorm after each conv absorbs a
#: per-channel α at inference) keep the packed net exact and cost the same time
_BUILD_KW: dict[str, dict] = {"e2e_resnet18": {"weight_quantizer": "ste_sign"}}

_BUILT: dict[str, dict] = {}


def _calibrate(model: nn.Module, shape: tuple[int, ...], gen: torch.Generator) -> None:
    """BatchNorm running statistics from a few random batches, then eval mode."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(*shape, generator=gen))
    model.eval()


def build(case: str) -> dict:
    """``{"bnn", "twin", "packed", "x"}`` for ``case`` (a key of :data:`CASES`), built once
    per process: the binary torch model, its float twin, its packed export (checked against
    the BNN on a batch of 4) and a seeded batch-16 input."""
    if case not in CASES:
        raise ValueError(f"case must be one of {sorted(CASES)}, got {case!r}")
    if case not in _BUILT:
        from bnnlab import models, packed

        builder = getattr(models, CASES[case][0])
        kw = _BUILD_KW.get(case, {})
        gen = torch.Generator().manual_seed(11)
        torch.manual_seed(11)
        bnn, twin = builder(**kw), builder(binary=False)
        for m in (bnn, twin):
            _calibrate(m, (8, 3, 32, 32), gen)
        x = torch.randn(max(BATCHES), 3, 32, 32, generator=gen)
        pk = packed.export(bnn, x[:4])
        _BUILT[case] = {"bnn": bnn, "twin": twin, "packed": pk, "x": x}
    return _BUILT[case]


def _recorder(pk: nn.Module) -> tuple[list, list, Callable[[], None]]:
    """Instrument the packed layers of ``pk``: (kernel calls, packing calls, undo)."""
    from bnnlab.packed.layers import PackedSign, _PackedLayer
    from bnnlab.packed.residual import PackedResidualConv

    kernel_calls: list[tuple[Any, Any]] = []
    pack_calls: list[tuple[Callable, Any]] = []
    patched: list[tuple[nn.Module, str]] = []
    restore: list[tuple[nn.Module, Any]] = []

    def wrap_plan(m: nn.Module, attr: str, log: list) -> None:
        orig = getattr(m, attr)

        def make(pool: Any = None) -> Any:
            plan = orig(pool)

            def call(x: Any, **kw: Any) -> Any:
                log.append((plan, x))
                return plan(x, **kw)
            return call
        m.__dict__[attr] = make
        patched.append((m, attr))

    def wrap_unit(m: nn.Module) -> None:
        plan = m.__dict__["plan"]

        def call(x: Any, **kw: Any) -> Any:
            kernel_calls.append((functools.partial(plan, **kw), x))
            return plan(x, **kw)
        m.__dict__["plan"] = call
        restore.append((m, plan))

    def wrap_pack(m: nn.Module) -> None:
        orig: Any = m._pack

        def pack(x: Any) -> Any:
            if isinstance(x, torch.Tensor):
                pack_calls.append((orig, x))
            return orig(x)
        m.__dict__["_pack"] = pack
        patched.append((m, "_pack"))

    from bnnlab.packed.model import PackedModel

    def forget_steps() -> None:
        # a PackedModel's cached steps hold bound kernel plans: rebuilt while recording (so
        # the calls go through the patched lookups) and again afterwards (so the recording
        # wrappers do not stay bound)
        for m in pk.modules():
            if isinstance(m, PackedModel):
                m.__dict__.pop("_step_cache", None)

    forget_steps()
    for m in pk.modules():
        if isinstance(m, PackedResidualConv):
            wrap_unit(m)
        if isinstance(m, _PackedLayer):
            wrap_plan(m, "_kernel_plan", kernel_calls)
            wrap_pack(m)
        elif isinstance(m, PackedSign):
            wrap_plan(m, "_pack_plan", pack_calls)

    def undo() -> None:
        for m, attr in patched:
            m.__dict__.pop(attr, None)
        for m, plan in restore:
            m.__dict__["plan"] = plan
        forget_steps()
    return kernel_calls, pack_calls, undo


def replay_calls(pk: nn.Module, x: torch.Tensor) -> tuple[Callable[[], None], Callable[[], None]]:
    """Two functions that replay, without the rest of the model, the binary-kernel calls and
    the float-to-bits packing calls of one forward of ``pk`` on ``x``."""
    kernel_calls, pack_calls, undo = _recorder(pk)
    try:
        with torch.inference_mode():
            pk(x)
    finally:
        undo()
    kc, pc = list(kernel_calls), list(pack_calls)

    def kernels_only() -> None:
        for plan, inp in kc:
            plan(inp)

    def packing_only() -> None:
        for fn, inp in pc:
            fn(inp)
    return kernels_only, packing_only


def rows(case: str, threads: int, cfg: dict, interleaved: Callable[..., list[float]],
         make_row: Callable[..., dict]) -> list[dict]:
    """Bench rows for ``case`` at batch 1 and 16 (``case`` and ``case + "_b16"``).

    ``interleaved(fns, **cfg)`` returns median seconds per call of each function, measured
    alternately; ``make_row(case, threads, **fields)`` builds a bench row."""
    built = build(case)
    bnn, twin, pk, xs = built["bnn"], built["twin"], built["packed"], built["x"]
    try:
        info = pk.check_against(bnn, xs)
    except ValueError as exc:
        return [make_row(case if b == 1 else f"{case}_b{b}", threads,
                         note=f"packed model differs from the torch BNN: not timed ({exc})")
                for b in BATCHES]
    out = []
    for b in BATCHES:
        x = xs[:b].contiguous()
        kernels_only, packing_only = replay_calls(pk, x)

        def call(m: nn.Module, x: torch.Tensor = x) -> Callable[[], object]:
            def f() -> object:
                with torch.inference_mode():
                    return m(x)
            return f
        t_twin, t_pk, t_k, t_p = interleaved([call(twin), call(pk), kernels_only, packing_only],
                                             **cfg)
        share = max(0.0, 1.0 - (t_k + t_p) / t_pk)
        note = (f"{CASES[case][1]} batch {b}; logits {'bit-exact' if info['exact'] else 'allclose'}"
                f"; packed time: binary kernels {t_k / t_pk:.0%}, packing {t_p / t_pk:.0%}, "
                f"float glue {share:.0%}")
        out.append(make_row(case if b == 1 else f"{case}_b{b}", threads, torch=t_twin,
                            bnnlab=t_pk, correct=True, baseline="torch float twin",
                            packing="input packed in the loop", note=note,
                            breakdown={"total": t_pk, "binary_kernels": t_k, "packing": t_p,
                                       "float_glue": max(0.0, t_pk - t_k - t_p),
                                       "float_share": share, "batch": b}))
    return out


def table(rows_: Sequence[dict]) -> str:
    """A markdown table of e2e rows: latency, ratio and the time breakdown."""
    lines = ["| case | threads | float twin | packed | speed-up | binary kernels | packing | "
             "float glue |", "|---|---|---|---|---|---|---|---|"]
    for r in rows_:
        br = r.get("breakdown")
        if not br or r.get("torch") is None:
            continue
        t = br["total"]
        lines.append(f"| {r['case']} | {r['threads']} | {r['torch'] * 1e3:.2f} ms | "
                     f"{r['bnnlab'] * 1e3:.2f} ms | {r['ratio']:.1f}× | "
                     f"{br['binary_kernels'] / t:.0%} | {br['packing'] / t:.0%} | "
                     f"{br['float_share']:.0%} |")
    return "\n".join(lines)


def fusion_rows(case: str, *, repeats: int = 15, clock: str = "cpu") -> list[dict]:
    """Batch 1 and 16 of ``case``: the float twin, the packed model exported with
    ``fuse=False`` (module replacement only) and the default export, interleaved in one run
    at 1 thread, with the breakdown of the default export.  ``clock="cpu"``: the calling
    thread's CPU time (leaves out time other processes hold the core)."""
    import time

    from bnnlab import bench, kernels, packed

    built = build(case)
    bnn, twin, pk, xs = built["bnn"], built["twin"], built["packed"], built["x"]
    plain = packed.export(bnn, xs[:4], fuse=False)
    for m in (pk, plain):
        m.check_against(bnn, xs)
    cfg: dict[str, Any] = {"repeats": repeats, "warmup": 3, "min_time": 0.02, "budget": 60.0}
    torch_threads, bnn_threads = torch.get_num_threads(), kernels.get_num_threads()
    old_timer = bench._CLOCK["timer"]
    torch.set_num_threads(1)
    kernels.set_num_threads(1)
    bench._CLOCK["timer"] = time.thread_time if clock == "cpu" else time.perf_counter
    out = []
    try:
        for b in BATCHES:
            x = xs[:b].contiguous()
            kernels_only, packing_only = replay_calls(pk, x)

            def call(m: nn.Module, x: torch.Tensor = x) -> Callable[[], object]:
                def f() -> object:
                    with torch.inference_mode():
                        return m(x)
                return f
            t_twin, t_plain, t_pk, t_k, t_p = bench._interleaved(
                [call(twin), call(plain), call(pk), kernels_only, packing_only], **cfg)
            out.append({"case": case, "batch": b, "float_twin": t_twin, "packed_unfused": t_plain,
                        "packed": t_pk, "binary_kernels": t_k, "packing": t_p,
                        "float_glue": max(0.0, t_pk - t_k - t_p),
                        "speedup": t_twin / t_pk, "speedup_unfused": t_twin / t_plain})
    finally:
        bench._CLOCK["timer"] = old_timer
        torch.set_num_threads(torch_threads)
        kernels.set_num_threads(None if bnn_threads == torch_threads else bnn_threads)
    return out


def fusion_table(rows_: Sequence[dict]) -> str:
    """Markdown table of :func:`fusion_rows`."""
    lines = ["| model | batch | float twin | packed, fuse=False | packed (fused) | speed-up "
             "(unfused → fused) | binary kernels | packing | float glue |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows_:
        t = r["packed"]
        lines.append(f"| {r['case']} | {r['batch']} | {r['float_twin'] * 1e3:.2f} ms | "
                     f"{r['packed_unfused'] * 1e3:.2f} ms | {t * 1e3:.2f} ms | "
                     f"{r['speedup_unfused']:.1f}× → {r['speedup']:.1f}× | "
                     f"{r['binary_kernels'] / t:.0%} | {r['packing'] / t:.0%} | "
                     f"{r['float_glue'] / t:.0%} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bnnlab.bench_models [CASE ...]``: print :func:`fusion_table` (1 thread,
    thread CPU time), with the CPU model and the load average."""
    import os
    import platform

    from bnnlab import bench

    cases = list(argv) if argv else list(CASES)
    rows_ = [r for c in cases for r in fusion_rows(c)]
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(fusion_table(rows_))
    print(f"\nCPU: {bench.cpu_info().get('model', platform.processor())}; 1 thread; medians of "
          f"thread CPU time, interleaved; load average "
          f"{'n/a' if load is None else ', '.join(f'{v:.2f}' for v in load)}; torch "
          f"{torch.__version__}")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
