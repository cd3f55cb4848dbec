"""Measure sweep throughput: one process vs the embedded LocalCluster, and Dask's overhead per
run (the figures quoted in the README's "Experiments at scale"). Prints one JSON object.

    PYTHONPATH=. python tools/sweep_throughput.py [--runs 8] [--workers 2] [--noop 200]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import torch

from bnnlab import runs, sweep

BASE = {"runner": "fit", "model": "binary_mlp", "data": "digits",
        "model_kw": {"in_features": 64, "hidden": [128, 128]}, "epochs": 3, "batch_size": 64,
        "lr": 3e-3}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--noop", type=int, default=200)
    args = ap.parse_args()
    from distributed import Client, LocalCluster

    specs = sweep.expand_grid(BASE, {"seed": list(range(args.runs))})
    out: dict = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                 "load_before": os.getloadavg()[0], "runs": args.runs, "spec": BASE,
                 "torch_threads_per_run": 1}
    runs.run_spec(specs[0])                                   # warm imports and data cache
    t0 = time.perf_counter()
    for s in specs:
        runs.run_spec(s, threads=1)
    one = time.perf_counter() - t0
    out["one_process_s"] = one
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        sweep.run_sweep(specs, os.path.join(tmp, "a"), workers=args.workers, progress=False)
        out["localcluster_with_startup_s"] = time.perf_counter() - t0
        with LocalCluster(n_workers=args.workers, threads_per_worker=1,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            client.run(runs.run_spec, specs[0])                 # warm the workers
            t0 = time.perf_counter()
            sweep.run_sweep(specs, os.path.join(tmp, "b"), client=client, progress=False)
            out["localcluster_warm_s"] = time.perf_counter() - t0
            noop = [{"runner": "noop", "i": i} for i in range(args.noop)]
            t0 = time.perf_counter()
            sweep.run_sweep(noop, os.path.join(tmp, "c"), client=client, progress=False)
            out["noop_per_run_ms_dask"] = (time.perf_counter() - t0) / args.noop * 1e3
        t0 = time.perf_counter()
        store = runs.ResultStore(os.path.join(tmp, "d"))
        for s in noop:
            store.put(runs.run_spec(s))
        out["noop_per_run_ms_inline"] = (time.perf_counter() - t0) / args.noop * 1e3
    out["runs_per_min_one_process"] = args.runs / one * 60
    out["runs_per_min_localcluster_warm"] = args.runs / out["localcluster_warm_s"] * 60
    out["runs_per_min_localcluster_with_startup"] = \
        args.runs / out["localcluster_with_startup_s"] * 60
    out["ratio_warm"] = out["runs_per_min_localcluster_warm"] / out["runs_per_min_one_process"]
    out["scheduler_overhead_ms_per_run"] = \
        out["noop_per_run_ms_dask"] - out["noop_per_run_ms_inline"]
    out["load_after"] = os.getloadavg()[0]
    out["torch"] = torch.__version__
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
