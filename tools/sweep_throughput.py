"""Measure sweep throughput: one process vs the embedded LocalCluster, and Dask's overhead per
run (the figures of the README's "Experiments at scale"). Prints one JSON object.

    PYTHONPATH=. python tools/sweep_throughput.py [--runs 16] [--workers 2] [--noop 200] \
        [--json docs/sweep_throughput.json] [--update-readme README.md]
    PYTHONPATH=. python tools/sweep_throughput.py --from-json docs/sweep_throughput.json \
        --update-readme README.md       # only rewrite the README block from a stored result
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from bnnlab import runs, sweep

BASE = {"runner": "fit", "model": "binary_mlp", "data": "digits",
        "model_kw": {"in_features": 64, "hidden": [128, 128]}, "epochs": 3, "batch_size": 64,
        "lr": 3e-3}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--noop", type=int, default=200)
    ap.add_argument("--json", type=Path, help="also write the result here (atomically)")
    ap.add_argument("--from-json", type=Path, help="measure nothing: use this stored result")
    ap.add_argument("--update-readme", type=Path, help="rewrite this README's generated block")
    args = ap.parse_args()
    if args.from_json is None:
        out = measure(args.runs, args.workers, args.noop)
        print(json.dumps(out, indent=1))
        if args.json is not None:
            tmp = args.json.with_name(args.json.name + ".tmp")
            tmp.write_text(json.dumps(out, indent=1) + "\n")
            os.replace(tmp, args.json)
    source = args.from_json or args.json
    if args.update_readme is not None:
        if source is None:
            ap.error("--update-readme needs --json or --from-json")
        same = sweep.update_readme(args.update_readme, source)
        print(f"{args.update_readme}: {'unchanged' if same else 'updated'}")


def measure(n_runs: int, workers: int, n_noop: int) -> dict:
    """One process vs a warm and a cold LocalCluster of ``workers``, and Dask's overhead."""
    from distributed import Client, LocalCluster

    from bnnlab.bench import cpu_info

    specs = sweep.expand_grid(BASE, {"seed": list(range(n_runs))})
    out: dict = {"cpu": cpu_info()["model"], "machine": platform.machine(),
                 "cores": os.cpu_count(), "load_before": os.getloadavg()[0], "runs": n_runs,
                 "workers": workers, "noop_runs": n_noop, "spec": BASE,
                 "torch_threads_per_run": 1}
    runs.run_spec(specs[0])                                   # warm imports and data cache
    t0 = time.perf_counter()
    for s in specs:
        runs.run_spec(s, threads=1)
    one = time.perf_counter() - t0
    out["one_process_s"] = one
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        sweep.run_sweep(specs, os.path.join(tmp, "a"), workers=workers, progress=False)
        out["localcluster_with_startup_s"] = time.perf_counter() - t0
        with LocalCluster(n_workers=workers, threads_per_worker=1,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            client.run(runs.run_spec, specs[0])                 # warm the workers
            t0 = time.perf_counter()
            sweep.run_sweep(specs, os.path.join(tmp, "b"), client=client, progress=False)
            out["localcluster_warm_s"] = time.perf_counter() - t0
            noop = [{"runner": "noop", "i": i} for i in range(n_noop)]
            t0 = time.perf_counter()
            sweep.run_sweep(noop, os.path.join(tmp, "c"), client=client, progress=False)
            out["noop_per_run_ms_dask"] = (time.perf_counter() - t0) / n_noop * 1e3
        t0 = time.perf_counter()
        store = runs.ResultStore(os.path.join(tmp, "d"))
        for s in noop:
            store.put(runs.run_spec(s))
        out["noop_per_run_ms_inline"] = (time.perf_counter() - t0) / n_noop * 1e3
    out["runs_per_min_one_process"] = n_runs / one * 60
    out["runs_per_min_localcluster_warm"] = n_runs / out["localcluster_warm_s"] * 60
    out["runs_per_min_localcluster_with_startup"] = \
        n_runs / out["localcluster_with_startup_s"] * 60
    out["ratio_warm"] = out["runs_per_min_localcluster_warm"] / out["runs_per_min_one_process"]
    out["scheduler_overhead_ms_per_run"] = \
        out["noop_per_run_ms_dask"] - out["noop_per_run_ms_inline"]
    out["load_after"] = os.getloadavg()[0]
    out["torch"] = torch.__version__
    return out


if __name__ == "__main__":
    main()
