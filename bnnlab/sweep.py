"""Sweeps: every missing run of a list of specs, as tasks of Dask distributed.

:func:`run_sweep` canonicalises the specs (:mod:`bnnlab.runs`), skips those whose record is
already in the results directory (resume), and submits the rest to a Dask cluster: an
embedded :class:`distributed.LocalCluster` by default (one worker process per core, one
thread each, torch on one thread per worker), an existing scheduler given by its address, or
a :class:`distributed.Client` the caller made (JupyterLab: its ``dashboard_link`` shows the
tasks). Each task is :func:`bnnlab.runs.run_spec`; the *client* writes each record into the
store as soon as it arrives (atomically, one file per spec key), so

* an interrupted sweep loses at most the runs in flight, and rerunning it executes only the
  missing ones;
* a worker that dies mid-run (killed, out of memory) loses nothing: the scheduler reruns its
  task on another worker, and the record is written once, when the task finishes;
* workers need no shared file system (records, and the files a run returns with a
  :class:`bnnlab.runs.RunOutput`, travel back with the results).

Command line::

    python -m bnnlab sweep SPECS.json --results DIR [--scheduler tcp://host:8786] [--workers N]

``SPECS.json`` holds a list of specs, or ``{"base": {...}, "grid": {"key": [values], ...}}``
(the Cartesian product of the grid over the base spec; see :func:`expand_grid`).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bnnlab._validation import check_bool, check_int
from bnnlab.runs import ResultStore, canonical_spec, run_spec, spec_key

__all__ = ["SweepReport", "run_sweep", "expand_grid", "load_specs", "throughput_markdown",
           "update_readme", "main"]


@dataclass
class SweepReport:
    """What :func:`run_sweep` did.

    Attributes:
        total: distinct specs asked for.
        skipped: keys whose record was already stored (not executed).
        done: keys executed and written by this call.
        failed: ``{key: error text}`` of runs that failed after their retries.
        seconds: wall-clock seconds of the call.
        scheduler: the scheduler's address (``"local"`` details included).
    """

    total: int = 0
    skipped: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    scheduler: str = ""

    def __repr__(self) -> str:
        return (f"SweepReport(total={self.total}, skipped={len(self.skipped)}, "
                f"done={len(self.done)}, failed={len(self.failed)}, "
                f"seconds={self.seconds:.1f}, scheduler={self.scheduler!r})")


def expand_grid(base: Mapping[str, Any], grid: Mapping[str, Iterable[Any]]) -> list[dict]:
    """Specs of the Cartesian product of ``grid`` over ``base`` (grid keys may be dotted,
    ``"model_kw.hidden"``, to set a nested entry)."""
    if not isinstance(base, Mapping) or not isinstance(grid, Mapping):
        raise TypeError("base and grid must be mappings")
    keys = list(grid)
    values = [list(grid[k]) for k in keys]
    out = []
    for combo in itertools.product(*values):
        spec = json.loads(json.dumps(dict(base)))
        for k, v in zip(keys, combo, strict=True):
            *path, last = k.split(".")
            node = spec
            for p in path:
                node = node.setdefault(p, {})
            node[last] = v
        out.append(spec)
    return out


def load_specs(path: str | os.PathLike[str]) -> list[dict]:
    """Specs of a JSON file: a list of specs, or ``{"base": {...}, "grid": {...}}``."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if isinstance(obj, list):
        return obj
    if isinstance(obj, dict) and "base" in obj:
        return expand_grid(obj["base"], obj.get("grid", {}))
    raise ValueError(f"{path}: expected a list of specs or {{'base': ..., 'grid': ...}}")


#: glibc malloc settings for a worker process (mallopt parameter -> value): an mmap threshold of
#: 32 MiB and a trim threshold of twice that, glibc's own dynamic steady state. Dask's nanny
#: starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, and setting any malloc variable turns
#: glibc's dynamic mmap threshold off: every tensor of 128 KiB or more is then a fresh ``mmap``
#: with its pages faulted in again, which made a ladder run 1.6x slower (26 -> 44 s, the system
#: time 1 -> 17 s; ``tools/sweep_throughput.py`` has the check).
_MALLOPT = {-3: 32 << 20, -1: 64 << 20}      # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
_malloc_tuned = False


def tune_malloc() -> bool:
    """Apply :data:`_MALLOPT` in this process with glibc's ``mallopt`` (once; a no-op and
    ``False`` where the C library is not glibc). Called by every sweep task."""
    global _malloc_tuned
    if _malloc_tuned:
        return True
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _malloc_tuned = all(mallopt(k, v) == 1 for k, v in _MALLOPT.items())
    return _malloc_tuned


def _execute(spec: dict[str, Any], threads: int,
             env: dict[str, str] | None = None) -> dict[str, Any]:
    """The Dask task: one run (module-level, so workers import it by name)."""
    if env:
        os.environ.update(env)
    tune_malloc()
    return run_spec(spec, threads=threads)


def _local_cluster(workers: int | None) -> Any:
    from distributed import LocalCluster

    n = workers if workers is not None else (os.cpu_count() or 1)
    return LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                        dashboard_address=":0", env={"OMP_NUM_THREADS": "1"})


def run_sweep(specs: Iterable[Mapping[str, Any]], results: str | os.PathLike[str] | ResultStore,
              *, client: Any = None, scheduler: str | None = None, workers: int | None = None,
              retries: int = 2, threads: int = 1, progress: bool = True,
              log: Callable[[str], None] | None = None,
              env: Mapping[str, str] | None = None) -> SweepReport:
    """Execute every spec whose record is missing from ``results``, on Dask.

    Args:
        specs: run specs (see :mod:`bnnlab.runs`); duplicates run once.
        results: a results directory or a :class:`~bnnlab.runs.ResultStore`.
        client: an existing :class:`distributed.Client` (not closed here).
        scheduler: address of an existing scheduler (``"tcp://host:8786"``), used when no
            ``client`` is given.
        workers: worker processes of the embedded :class:`~distributed.LocalCluster` started
            when neither ``client`` nor ``scheduler`` is given (shut down at the end).
            Default: one per core.
        retries: extra attempts of a run that raised (a run whose worker *died* is rerun by
            the scheduler itself, up to ``distributed.scheduler.allowed-failures`` times).
        threads: torch threads inside each run. Default: ``1``.
        progress: a tqdm bar of runs done / total with the ETA.
        log: where summary lines go (default: nowhere).
        env: environment variables set in the worker before each run: facts of the machine
            that are not part of a spec, e.g. ``BNNLAB_DATA_ROOT`` (where the verified
            CIFAR-10 files are).

    Returns:
        :class:`SweepReport`. Failed runs are listed there (no record is written for them).
    """
    retries = check_int(retries, "retries", min_value=0)
    threads = check_int(threads, "threads", min_value=1)
    workers = check_int(workers, "workers", min_value=1, allow_none=True)
    progress = check_bool(progress, "progress")
    if scheduler is not None and not isinstance(scheduler, str):
        raise TypeError(f"scheduler must be an address string, got {type(scheduler).__name__}")
    store = results if isinstance(results, ResultStore) else ResultStore(results)
    say = log or (lambda s: None)
    t0 = time.perf_counter()
    canon: dict[str, dict[str, Any]] = {}
    for s in specs:
        c = canonical_spec(s)
        canon.setdefault(spec_key(c), c)
    report = SweepReport(total=len(canon))
    todo = {k: c for k, c in canon.items() if k not in store}
    report.skipped = [k for k in canon if k not in todo]
    say(f"[sweep] {len(canon)} runs: {len(report.skipped)} already in {store.root}, "
        f"{len(todo)} to run")
    if not todo:
        report.seconds = time.perf_counter() - t0
        return report

    from distributed import Client, as_completed

    cluster = None
    own_client = client is None
    if client is None:
        if scheduler is None:
            cluster = _local_cluster(workers)
            client = Client(cluster)
        else:
            client = Client(scheduler)
    report.scheduler = str(client.scheduler.address) + (" (LocalCluster)" if cluster else "")
    say(f"[sweep] scheduler {report.scheduler}")
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), disable=not progress, desc="sweep", unit="run")
    try:
        env_d = dict(env) if env else None
        futures = {client.submit(_execute, spec, threads, env_d, key=f"bnnlab-run-{key}",
                                 pure=False, retries=retries): key
                   for key, spec in todo.items()}
        for fut in as_completed(list(futures)):
            key = futures[fut]
            try:
                record = fut.result()
            except Exception as exc:  # noqa: BLE001 - a failed run is reported, not fatal
                report.failed[key] = "".join(traceback.format_exception_only(exc)).strip()
                say(f"[sweep] {key} failed: {report.failed[key]}")
            else:
                store.put(record)
                report.done.append(key)
            bar.update(1)
    finally:
        bar.close()
        if own_client:
            client.close()
        if cluster is not None:
            cluster.close()
    report.seconds = time.perf_counter() - t0
    say(f"[sweep] {len(report.done)} done, {len(report.failed)} failed in "
        f"{report.seconds:.1f} s")
    return report


README_BEGIN = "<!-- sweep-throughput:begin"
README_END = "<!-- sweep-throughput:end -->"


def throughput_markdown(data: Mapping[str, Any]) -> str:
    """The README paragraph for a ``tools/sweep_throughput.py --json`` result (every number
    from ``data``; the verdict on the embedded cluster follows the measured ratio)."""
    spec = data["spec"]
    hidden = "-".join(str(h) for h in spec["model_kw"]["hidden"])
    ratio = float(data["ratio_warm"])
    load = (f"load average {data['load_before']:.1f} before and {data['load_after']:.1f} after")
    if ratio >= 1.0:
        verdict = (f"so the {data['workers']} workers pay off even for sub-second runs once the "
                   f"cluster is up; counting its start-up, a sweep must be longer than these few "
                   f"seconds to gain")
    else:
        verdict = ("so on this machine, at that load, the embedded cluster is slower than one "
                   "process: its value is on more cores, on a cluster, and in resuming")
    return (
        f"**Measured on this machine** ({data['cpu']}, {data['cores']} cores, {load}; "
        f"`python tools/sweep_throughput.py --runs {data['runs']} --workers {data['workers']} "
        f"--json docs/sweep_throughput.json`): one process ran "
        f"{data['runs_per_min_one_process']:.0f} runs/min of a small digits fit (binary MLP "
        f"{spec['model_kw']['in_features']}-{hidden}-10, {spec['epochs']} epochs, about "
        f"{60 / data['runs_per_min_one_process']:.2f} s each); the warm {data['workers']}-worker "
        f"LocalCluster {data['runs_per_min_localcluster_warm']:.0f} runs/min (ratio "
        f"{ratio:.2f}), and {data['runs_per_min_localcluster_with_startup']:.0f} runs/min "
        f"counting its start-up; Dask's overhead was "
        f"{data['scheduler_overhead_ms_per_run']:.1f} ms per run (no-op runs: "
        f"{data['noop_per_run_ms_dask']:.1f} ms through the cluster vs "
        f"{data['noop_per_run_ms_inline']:.1f} ms inline, record writing included), {verdict}.")


def update_readme(readme, json_path, *, check: bool = False) -> bool:
    """Rewrite the README's ``sweep-throughput`` block from ``json_path``; True if unchanged."""
    from bnnlab._readme import update_block

    data = json.loads(Path(json_path).read_text(encoding="utf-8"))
    return update_block(readme, json_path, README_BEGIN, README_END, lambda source: (
        f"{README_BEGIN} generated from {source} by `python tools/sweep_throughput.py "
        f"--from-json {source} --update-readme README.md`; do not edit -->\n"
        + throughput_markdown(data) + "\n" + README_END), check=check)


def main(argv: list[str] | None = None) -> int:
    """``python -m bnnlab sweep SPECS.json --results DIR [--scheduler ADDR] [--workers N]``."""
    parser = argparse.ArgumentParser(
        prog="python -m bnnlab sweep",
        description="Run every missing spec of SPECS.json on Dask; one record per run in DIR.")
    parser.add_argument("specs", type=Path, help="JSON: a list of specs or {base, grid}")
    parser.add_argument("--results", type=Path, required=True, help="results directory")
    parser.add_argument("--scheduler", help="address of a running Dask scheduler "
                        "(default: an embedded LocalCluster)")
    parser.add_argument("--workers", type=int, help="LocalCluster workers (default: cores)")
    parser.add_argument("--retries", type=int, default=2, help="retries of a failed run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        specs = load_specs(args.specs)
        report = run_sweep(specs, args.results, scheduler=args.scheduler, workers=args.workers,
                           retries=args.retries, threads=args.threads,
                           progress=not args.no_progress, log=lambda s: print(s, flush=True))
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    print(json.dumps({"total": report.total, "skipped": len(report.skipped),
                      "done": len(report.done), "failed": len(report.failed),
                      "seconds": round(report.seconds, 3)}), flush=True)
    return 1 if report.failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
