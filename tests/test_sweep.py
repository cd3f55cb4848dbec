"""Sweeps on Dask with real components: a `dask scheduler` and two `dask worker` processes on
loopback, one killed mid-run; resume; equality with the embedded LocalCluster."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bnnlab import runs, sweep

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
DASK = str(Path(sys.executable).with_name("dask"))

BASE = {"runner": "_sweep_helper:marked_fit", "model": "binary_mlp", "data": "digits",
        "model_kw": {"in_features": 64, "hidden": [32, 32]}, "epochs": 1, "batch_size": 64,
        "lr": 3e-3}
SPECS = sweep.expand_grid(BASE, {"seed": [0, 1, 2, 3]})
TIMING = ("epoch_seconds", "fit_seconds")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS)]),
               OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def _wait(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _results(store: runs.ResultStore) -> dict[int, dict]:
    """seed -> result without timings."""
    out = {}
    for rec in store.records():
        res = {k: v for k, v in rec["result"].items() if k not in TIMING}
        out[rec["spec"]["seed"]] = res
    return out


@pytest.fixture
def cluster(tmp_path):
    """A scheduler and two single-threaded workers (no nanny, so a kill is final)."""
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    markers = tmp_path / "markers"
    markers.mkdir()
    env = _env(BNNLAB_TEST_MARKERS=str(markers), BNNLAB_TEST_PAUSE="4")
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []

    def start(args, name):
        fh = open(logs / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen([DASK, *args], env=env, stdout=fh, stderr=subprocess.STDOUT,  # noqa: S603
                             cwd=tmp_path)
        procs.append(p)
        return p

    start(["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
          "scheduler")
    workers = [start(["worker", addr, "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1",
                      "--no-dashboard", "--name", f"w{i}"], f"w{i}") for i in range(2)]
    from distributed import Client

    with Client(addr, timeout=60) as c:
        c.wait_for_workers(2, timeout=90)
    try:
        yield addr, workers, markers, logs
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.mark.slow   # about 100 s on the shared two-core machine (three Dask start-ups)
def test_sweep_survives_a_killed_worker_and_resumes(cluster, tmp_path):
    addr, workers, markers, logs = cluster
    spec_file = tmp_path / "specs.json"
    spec_file.write_text(json.dumps({"base": BASE, "grid": {"seed": [0, 1, 2, 3]}}))
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "bnnlab", "sweep", str(spec_file), "--results", str(results),
           "--scheduler", addr, "--no-progress", "--retries", "0"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE,  # noqa: S603
                            stderr=subprocess.STDOUT, text=True)
    victim = workers[0]
    # kill worker 0 while it is inside a run (it sleeps 4 s after writing its marker)
    _wait(lambda: any(m.name.startswith(f"{victim.pid}-") for m in markers.iterdir()), 120,
          "worker 0 to start a run")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=20)
    killed = {int(m.name.split("-")[1]) for m in markers.iterdir()
              if m.name.startswith(f"{victim.pid}-")}
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary == {**summary, "total": 4, "skipped": 0, "done": 4, "failed": 0}

    store = runs.ResultStore(results)
    files = sorted(p.name for p in results.iterdir())
    assert files == sorted(f"{runs.spec_key(s)}.json" for s in SPECS)   # once each, no tmp
    survivor = workers[1].pid
    # the run in flight on the killed worker was rerun by the survivor, and recorded once
    last_killed = max(killed, key=lambda s: (markers / f"{victim.pid}-{s}").stat().st_mtime)
    assert store.get(SPECS[last_killed])["machine"]["pid"] == survivor
    assert (markers / f"{survivor}-{last_killed}").exists()

    # resume: a second sweep executes nothing (no client is even made)
    again = sweep.run_sweep(SPECS, results, scheduler="tcp://127.0.0.1:1", progress=False)
    assert again.done == [] and len(again.skipped) == 4 and again.scheduler == ""

    # the same sweep on the embedded LocalCluster gives the same records
    embedded = sweep.run_sweep(SPECS, tmp_path / "embedded", workers=1, progress=False)
    assert len(embedded.done) == 4 and embedded.scheduler.endswith("(LocalCluster)")
    assert _results(runs.ResultStore(tmp_path / "embedded")) == _results(store)


def test_failed_runs_are_reported_and_not_written(tmp_path):
    specs = [{"runner": "_sweep_helper:failing", "seed": s} for s in (0, 1)]
    from distributed import Client

    sys.path.insert(0, str(TESTS))
    try:
        with Client(processes=False, n_workers=1, threads_per_worker=1,
                    dashboard_address=None) as client:
            report = sweep.run_sweep(specs, tmp_path, client=client, retries=1,
                                     progress=False)
    finally:
        sys.path.remove(str(TESTS))
    assert sorted(report.failed) == sorted(runs.spec_key(s) for s in specs)
    assert "always fails" in next(iter(report.failed.values()))
    assert list(tmp_path.iterdir()) == []


def test_expand_grid_and_load_specs(tmp_path):
    specs = sweep.expand_grid({"runner": "noop", "model_kw": {"a": 1}},
                              {"seed": [0, 1], "model_kw.b": [2, 3]})
    assert len(specs) == 4 and specs[3] == {"runner": "noop", "model_kw": {"a": 1, "b": 3},
                                            "seed": 1}
    path = tmp_path / "s.json"
    path.write_text(json.dumps(specs))
    assert sweep.load_specs(path) == specs
    path.write_text('{"grid": {}}')
    with pytest.raises(ValueError, match="list of specs"):
        sweep.load_specs(path)
    with pytest.raises(ValueError, match="retries"):
        sweep.run_sweep(specs, tmp_path / "r", retries=-1)


def test_a_runs_files_travel_back_with_its_record(tmp_path):
    """Workers need no shared file system: a run's files come back with the record and the
    client writes them next to it."""
    specs = [{"runner": "_sweep_helper:with_file", "seed": s} for s in (1, 2)]
    from distributed import Client

    sys.path.insert(0, str(TESTS))
    try:
        with Client(processes=False, n_workers=1, threads_per_worker=1,
                    dashboard_address=None) as client:
            report = sweep.run_sweep(specs, tmp_path, client=client, progress=False)
    finally:
        sys.path.remove(str(TESTS))
    assert len(report.done) == 2
    store = runs.ResultStore(tmp_path)
    for s in specs:
        assert store.read_file(s, "data.bin") == bytes([s["seed"]]) * 4
    assert len(list(tmp_path.iterdir())) == 4


def test_readme_throughput_block_is_generated_from_the_committed_measurement(tmp_path):
    """The README's sweep-throughput paragraph is the one docs/sweep_throughput.json gives."""
    root = Path(__file__).resolve().parents[1]
    data = json.loads((root / "docs" / "sweep_throughput.json").read_text())
    assert sweep.update_readme(root / "README.md", root / "docs" / "sweep_throughput.json",
                               check=True), "README block is stale: rerun tools/sweep_throughput.py"
    text = sweep.throughput_markdown(data)
    for key in ("runs_per_min_one_process", "runs_per_min_localcluster_warm"):
        assert f"{data[key]:.0f} runs/min" in text
    assert data["cpu"] in text and f"ratio {data['ratio_warm']:.2f}" in text
    # the verdict follows the data: a slower cluster is called slower
    slow = dict(data, ratio_warm=0.5)
    assert "slower than one process" in sweep.throughput_markdown(slow)
    fast = dict(data, ratio_warm=1.5)
    assert "slower than one process" not in sweep.throughput_markdown(fast)
    # a README without the block is refused by name
    bare = tmp_path / "README.md"
    bare.write_text("# nothing\n")
    with pytest.raises(ValueError, match="sweep-throughput"):
        sweep.update_readme(bare, root / "docs" / "sweep_throughput.json")


def test_tune_malloc_undoes_dasks_trim_setting():
    """Dask's nanny sets MALLOC_TRIM_THRESHOLD_, which turns glibc's dynamic mmap threshold off:
    every 1 MiB tensor then faults its pages in again. After sweep.tune_malloc() (what every
    sweep task calls) reallocating one stays free of page faults."""
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc mallopt: Linux only")
    code = (
        "import resource, sys, torch\n"
        "from bnnlab import sweep\n"
        "def faults():\n"
        "    for _ in range(3):\n"
        "        torch.ones(256, 1024).sum()\n"
        "    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    for _ in range(200):\n"
        "        torch.ones(256, 1024).sum()\n"
        "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0\n"
        "before = faults()\n"
        "ok = sweep.tune_malloc() and sweep.tune_malloc()\n"
        "after = faults()\n"
        "print(before, after, ok)\n")
    env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    before, after, ok = int(out[0]), int(out[1]), out[2]
    if ok != "True":
        pytest.skip("not glibc: mallopt unavailable")
    # 200 allocations of 1 MiB (256 pages each): tens of thousands of faults without the fix
    assert before > 200 * 100, before
    assert after < 200 * 10, after
