"""In-process A/B of two builds of ``bnnlab._kernels``: this tree's and an old build's (its .so
path), swapped into ``bnnlab.kernels`` call by call.  The timed call is the bench's conv call,
``plan(pack_nhwc(x))`` (3x3, +1 padding, one thread); thread CPU time, the builds alternated,
medians.  Usage (from the tree to test, after building both)::

    PYTHONPATH=$PWD BNNLAB_ISA=avx2 python ext/abbench/inproc.py OLD.so [64x56x1 ...]
"""
import importlib.machinery
import importlib.util
import os
import statistics
import sys
import time
import types

import torch

from bnnlab import kernels


def load_old(path: str) -> types.ModuleType:
    """The old build as a module named ``kold._kernels`` (its init function is PyInit__kernels)."""
    sys.modules.setdefault("kold", types.ModuleType("kold"))
    loader = importlib.machinery.ExtensionFileLoader("kold._kernels", path)
    spec = importlib.util.spec_from_file_location("kold._kernels", path, loader=loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def timed(plan: kernels.Conv2dPlan, x: torch.Tensor, inner: int) -> float:
    """Microseconds of thread CPU time per call of plan(pack_nhwc(x)), after one untimed call."""
    plan(kernels.pack_nhwc(x))
    t0 = time.thread_time_ns()
    for _ in range(inner):
        plan(kernels.pack_nhwc(x))
    return (time.thread_time_ns() - t0) / inner / 1e3


def compare(mods: dict, c: int, hw: int, b: int) -> str:
    g = torch.Generator().manual_seed(5)
    x = (torch.randint(0, 2, (b, c, hw, hw), generator=g) * 2 - 1).float()
    w = (torch.randint(0, 2, (c, c, 3, 3), generator=g) * 2 - 1).float()
    plans = {m: kernels.prepare_conv2d(kernels.pack_conv_weights(w), padding=1, pad_value=1.0)
             for m in mods}
    outs = {}
    for m in mods:
        kernels._kernels = mods[m]
        outs[m] = plans[m](kernels.pack_nhwc(x))
    assert (outs["old"] == outs["new"]).all(), "the two builds disagree"
    res: dict = {m: [] for m in mods}
    inner = 10 if b == 1 else 1
    for r in range(30 if b == 1 else 12):
        for m in (("old", "new") if r % 2 == 0 else ("new", "old")):
            kernels._kernels = mods[m]
            res[m].append(timed(plans[m], x, inner))
    o, n = statistics.median(res["old"]), statistics.median(res["new"])
    macs = b * hw * hw * c * c * 9
    return (f"{c}x{hw} b{b}: old {o:8.1f} us  new {n:8.1f} us  new/old {n / o:.3f}  "
            f"({macs / (o * 1e-6) / 2.55e9:.1f} -> {macs / (n * 1e-6) / 2.55e9:.1f} MAC/cycle "
            f"at 2.55 GHz)  load {os.getloadavg()[0]:.2f}")


def main() -> None:
    mods = {"old": load_old(sys.argv[1]), "new": kernels._kernels}
    torch.set_num_threads(1)
    kernels.set_num_threads(1)
    cases = [(64, 56, 1), (128, 28, 1), (256, 14, 1), (512, 7, 1), (64, 56, 16)]
    if len(sys.argv) > 2:
        cases = [tuple(int(v) for v in arg.split("x")) for arg in sys.argv[2:]]  # type: ignore[misc]
    try:
        for c, hw, b in cases:
            print(compare(mods, c, hw, b), flush=True)
    finally:
        kernels._kernels = mods["new"]


if __name__ == "__main__":
    main()
