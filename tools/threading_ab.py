"""Packed models at 2 threads: bnnlab's pool against the OpenMP backend (ext/README.md, "Threads").

    python tools/threading_ab.py [--cases e2e_resnet18:1,e2e_vgg_small:1,e2e_resnet18:16]
                                 [--rounds 2] [--repeats 25] [--json FILE]

Each backend runs in a process of its own (``BNNLAB_THREADING=pool|openmp``), so one
backend's idle threads never compete with the other's. In that process the packed model
(:func:`bnnlab.bench_models.build`) at 2 threads, the same model at 1 thread and its float twin
at 2 threads are timed interleaved (medians of wall time), and the pool's stall count
(``kernel_info()["pool_stalls"]``) is read at the end. Rounds alternate the backends' order.

Prints one line per (round, case, backend) with the CPU model and the load average; ``--json``
stores the same rows.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

BACKENDS = ("pool", "openmp")
DEFAULT_CASES = "e2e_resnet18:1,e2e_vgg_small:1,e2e_resnet18:16"


def measure(case: str, batch: int, repeats: int) -> dict:
    """In this process: the packed model of ``case`` at 2 and 1 threads and its float twin at 2
    threads, interleaved; seconds per call (medians) and the pool's stalls."""
    import torch

    from bnnlab import bench, bench_models, kernels

    built = bench_models.build(case)
    pk, twin, x = built["packed"], built["twin"], built["x"][:batch].contiguous()
    torch.set_num_threads(2)
    kernels.set_num_threads(2)

    def run(m):
        def f():
            with torch.inference_mode():
                m(x)
        return f

    def one_thread():
        torch.set_num_threads(1)
        kernels.set_num_threads(1)
        try:
            with torch.inference_mode():
                pk(x)
        finally:
            torch.set_num_threads(2)
            kernels.set_num_threads(2)

    t2, t1, twin2 = bench._interleaved([run(pk), one_thread, run(twin)], repeats=repeats,
                                       warmup=3, min_time=0.05, budget=60.0)
    info = kernels.kernel_info()
    return {"case": case, "batch": batch, "backend": info["threading"], "packed_2t": t2,
            "packed_1t": t1, "twin_2t": twin2, "pool_stalls": info["pool_stalls"]}


def parse_cases(text: str) -> list[tuple[str, int]]:
    """``"e2e_resnet18:1,e2e_vgg_small:16"`` -> ``[("e2e_resnet18", 1), ("e2e_vgg_small", 16)]``."""
    from bnnlab import bench_models

    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        case, _, batch = item.partition(":")
        if case not in bench_models.CASES:
            raise ValueError(f"--cases: unknown case {case!r}; known: {sorted(bench_models.CASES)}")
        if not batch.isdigit() or not 1 <= int(batch) <= 16:
            raise ValueError(f"--cases: batch of {case!r} must be 1..16, got {batch!r}")
        out.append((case, int(batch)))
    if not out:
        raise ValueError("--cases: no case given")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=DEFAULT_CASES, help=f"case:batch,... (default {DEFAULT_CASES})")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--repeats", type=int, default=25)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--child", nargs=3, metavar=("CASE", "BATCH", "REPEATS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), int(args.child[2]))))
        return 0
    try:
        cases = parse_cases(args.cases)
        if args.rounds < 1 or args.repeats < 3:
            raise ValueError("--rounds must be >= 1 and --repeats >= 3")
    except ValueError as exc:
        print(f"threading_ab: error: {exc}", file=sys.stderr)
        return 2
    from bnnlab import bench

    rows = []
    print(f"CPU: {bench.cpu_info()['model']}; load average {os.getloadavg()[0]:.2f} at the start")
    for rnd in range(args.rounds):
        for case, batch in cases:
            for backend in (BACKENDS if rnd % 2 == 0 else BACKENDS[::-1]):
                env = {**os.environ, "BNNLAB_THREADING": backend}
                out = subprocess.run([sys.executable, __file__, "--child", case, str(batch),
                                      str(args.repeats)], env=env, capture_output=True,
                                     text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                if r["backend"] != backend:
                    raise RuntimeError(f"the child ran {r['backend']!r}, not {backend!r}")
                r["round"] = rnd + 1
                rows.append(r)
                print(f"round {rnd + 1} {case} batch {batch} {backend:6s}: packed 2 threads "
                      f"{r['packed_2t'] * 1e3:7.2f} ms, 1 thread {r['packed_1t'] * 1e3:7.2f} ms "
                      f"(2-vs-1 {r['packed_1t'] / r['packed_2t']:.2f}x), float twin 2 threads "
                      f"{r['twin_2t'] * 1e3:7.2f} ms, pool stalls {r['pool_stalls']}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
