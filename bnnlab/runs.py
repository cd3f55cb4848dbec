"""Runs as pure functions of a JSON spec, registered runners, and the results store.

A **spec** is a plain-JSON dict that says everything a run depends on (model and its
arguments, data set and fraction, seed, optimiser, schedule, epochs, early stopping, device),
with ``spec["runner"]`` naming the function that executes it. A **run** calls that function
and wraps what it returns into a **record**; records live in a :class:`ResultStore`, one file
``<key>.json`` per run, where ``key = spec_key(spec)`` is the SHA-256 of the canonical spec.
A sweep (:func:`bnnlab.sweep.run_sweep`) executes only the specs whose record is missing.

Runner contract (for modules that add one, e.g. ``bnnlab.ladder``)
------------------------------------------------------------------

A runner is a **module-level** function::

    def run_rung(spec: dict[str, Any]) -> dict[str, Any]:
        ...

registered once, by name, with its import path as a string (so that a Dask worker in another
process or on another machine imports it; nothing is pickled)::

    from bnnlab.runs import register_runner
    register_runner("ladder", "bnnlab.ladder:run_rung", defaults={"epochs": 10, "seed": 0})

* ``spec`` is the **canonical** spec: a new plain-JSON dict (str keys, lists instead of
  tuples, no NaN/Infinity), ``defaults`` filled in under the user's keys, ``spec["runner"]``
  the registered name. Everything the result depends on (seeds, data fraction, budget) must
  be in it; the runner must not read files or globals that change the result.
* It returns a plain-JSON dict, the record's ``"result"`` (metrics, per-epoch history, ...).
  No tensors, no NaN (use ``None``). Timings may be included; they are the only fields two
  runs of the same spec may disagree on.
* It is deterministic for a given spec and torch thread count: the executor sets torch to
  ``threads`` threads (default 1) and seeds nothing itself (seed from ``spec["seed"]``).
* It raises on failure: the sweep retries it, then reports it; no record is written.
* A run that also produces files (trained weights, pickle-free: safetensors) returns
  ``RunOutput(result, files={"weights.safetensors": b"..."})``. The bytes travel back with
  the record (no shared file system needed) and :meth:`ResultStore.put` writes each one
  atomically as ``<key>.<name>`` next to the record, *before* the record, so a record on disk
  means its files are there; the record lists them under ``"files"`` with size and SHA-256.

A spec may also name a runner directly by import path (``"runner": "pkg.module:function"``),
which needs no registration (used by tests and one-off scripts).

The record written for each run::

    {"schema": "bnnlab.run/1", "key": "<16 hex>", "spec": {...canonical spec...},
     "result": {...what the runner returned...}, "seconds": 12.3,
     "started": "2026-12-03T07:30:00Z", "finished": "...", "threads": 1,
     "versions": {"bnnlab": ..., "torch": ..., "numpy": ..., "python": ...},
     "machine": {"host": ..., "platform": ..., "processor": ..., "cpu_count": ..., "pid": ...}}

Other registered runners: ``"ladder"`` (:func:`bnnlab.ladder.ladder_runner`) and
``"experiment"`` (:func:`bnnlab.experiments.experiment_runner`, the report's trainings; its
architecture runs return their weights as a :class:`RunOutput`).

Built-in runner ``"fit"`` (:func:`fit_runner`): a model of :mod:`bnnlab.models` (or a variant
of :data:`bnnlab.experiments.VARIANTS`) trained by :func:`bnnlab.train.fit` on a data set of
:mod:`bnnlab.data`; the weights of the best validation epoch are evaluated once on the test part.

Examples::

    >>> from bnnlab import runs
    >>> spec = {"runner": "fit", "model": "binary_mlp", "data": "digits",
    ...         "model_kw": {"in_features": 64, "hidden": [64, 64]}, "epochs": 1}
    >>> store = runs.ResultStore("results")                     # doctest: +SKIP
    >>> store.put(runs.run_spec(spec))                          # doctest: +SKIP
"""
from __future__ import annotations

import copy
import hashlib
import importlib
import json
import math
import os
import platform
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bnnlab._validation import check_choice, check_int, check_real

__all__ = [
    "RECORD_SCHEMA",
    "register_runner",
    "runner_target",
    "runners",
    "canonical_spec",
    "spec_key",
    "run_spec",
    "ResultStore",
    "RunOutput",
    "fit_runner",
    "noop_runner",
    "FIT_DEFAULTS",
    "versions",
    "machine",
]

#: Layout of a record file; bump when it changes.
RECORD_SCHEMA = "bnnlab.run/1"

#: name -> (import path "module:function", defaults)
_RUNNERS: dict[str, tuple[str, dict[str, Any]]] = {}

#: Names of the files a run may store next to its record: ``weights.safetensors`` and the like.
_FILE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*\.(safetensors|npy|bin|txt)")


@dataclass(frozen=True)
class RunOutput:
    """What a runner returns when the run also produces files.

    Attributes:
        result: the record's ``"result"`` (plain JSON, as a runner's plain return value).
        files: ``{name: bytes}``; names like ``"weights.safetensors"`` (lower case letters,
            digits, ``_``/``-``, one suffix of ``.safetensors``, ``.npy``, ``.bin``, ``.txt``).
            Store only pickle-free formats.
    """

    result: Mapping[str, Any]
    files: Mapping[str, bytes] = field(default_factory=dict)


def _check_files(files: Any) -> dict[str, bytes]:
    if not isinstance(files, Mapping):
        raise TypeError(f"files must be a mapping of name -> bytes, got {type(files).__name__}")
    out = {}
    for name, data in files.items():
        if not isinstance(name, str) or not _FILE_NAME.fullmatch(name):
            raise ValueError(f"files: bad file name {name!r} (expected e.g. "
                             "'weights.safetensors')")
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"files[{name!r}] must be bytes, got {type(data).__name__}")
        out[name] = bytes(data)
    return out


# ---------------------------------------------------------------------------------------------
# Runner registry
# ---------------------------------------------------------------------------------------------
def _parse_target(target: str, name: str) -> str:
    if not isinstance(target, str):
        raise TypeError(f"{name} must be a string 'module:function', got {type(target).__name__}")
    module, sep, func = target.partition(":")
    if not sep or not module or not func:
        raise ValueError(f"{name} must look like 'package.module:function', got {target!r}")
    return target


def register_runner(name: str, target: str | Callable[..., Any], *,
                    defaults: Mapping[str, Any] | None = None, replace: bool = False) -> str:
    """Register the runner ``target`` under ``name`` (see the module docstring for the contract).

    Args:
        name: the value of ``spec["runner"]`` that selects it (no ``":"``).
        target: ``"package.module:function"``, or a module-level function (its import path is
            stored, never the object, so remote workers import it).
        defaults: keys filled into every spec of this runner before hashing (so a spec that
            omits a default and one that spells it out have the same key).
        replace: allow re-registering ``name`` with another target. Default: ``False``
            (re-registering the same target is always allowed).

    Returns:
        The stored import path.
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"name must be a non-empty string without ':', got {name!r}")
    if callable(target) and not isinstance(target, str):
        module = getattr(target, "__module__", None)
        qual = getattr(target, "__qualname__", "")
        if not module or "<" in qual:
            raise ValueError("target must be a module-level function (importable by name)")
        target = f"{module}:{qual}"
    target = _parse_target(target, "target")
    if defaults is not None and not isinstance(defaults, Mapping):
        raise TypeError(f"defaults must be a mapping or None, got {type(defaults).__name__}")
    old = _RUNNERS.get(name)
    if old is not None and old[0] != target and not replace:
        raise ValueError(f"runner {name!r} is already registered as {old[0]!r} "
                         "(pass replace=True)")
    _RUNNERS[name] = (target, _jsonable(dict(defaults or {}), "defaults"))
    return target


def runners() -> dict[str, str]:
    """``{name: "module:function"}`` of the registered runners."""
    return {k: v[0] for k, v in _RUNNERS.items()}


def runner_target(name: str) -> str:
    """Import path of the runner ``name`` (a registered name or a ``"module:function"`` path)."""
    if not isinstance(name, str):
        raise TypeError(f"spec['runner'] must be a string, got {type(name).__name__}")
    if name in _RUNNERS:
        return _RUNNERS[name][0]
    if ":" in name:
        return _parse_target(name, "spec['runner']")
    raise ValueError(f"spec['runner']: unknown runner {name!r}; registered: {sorted(_RUNNERS)} "
                     "(or give 'package.module:function')")


def _resolve(target: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    module, _, qual = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"runner {target!r} is not callable")
    return obj


# ---------------------------------------------------------------------------------------------
# Canonical specs and keys
# ---------------------------------------------------------------------------------------------
def _jsonable(obj: Any, name: str) -> Any:
    """Round-trip through strict JSON: tuples become lists, NaN/Infinity and objects refused.

    The order of dict keys is kept (a result's per-layer histories stay in layer order);
    :func:`canonical_json` sorts them for hashing.
    """
    try:
        text = json.dumps(obj, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be plain JSON (str keys, numbers, lists, dicts, no "
                         f"NaN): {exc}") from None
    return json.loads(text)


def canonical_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical form of ``spec``: runner defaults filled in, plain JSON, keys sorted.

    Raises:
        TypeError: ``spec`` is not a mapping.
        ValueError: no ``"runner"``, an unknown runner, or a value that is not plain JSON.
    """
    if not isinstance(spec, Mapping):
        raise TypeError(f"spec must be a mapping, got {type(spec).__name__}")
    if "runner" not in spec:
        raise ValueError("spec must have a 'runner' entry")
    name = spec["runner"]
    runner_target(name)
    defaults = _RUNNERS[name][1] if name in _RUNNERS else {}
    merged = {**copy.deepcopy(defaults), **dict(spec)}
    out = _jsonable(merged, "spec")
    return dict(sorted(out.items()))


def canonical_json(spec: Mapping[str, Any]) -> str:
    """The canonical spec as compact JSON with sorted keys (what :func:`spec_key` hashes)."""
    return json.dumps(canonical_spec(spec), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True, allow_nan=False)


def spec_key(spec: Mapping[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of :func:`canonical_json` (the record's file name).

    Integers and floats differ (``1`` and ``1.0`` give different keys): write learning rates
    as floats.
    """
    return hashlib.sha256(canonical_json(spec).encode("ascii")).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Executing one run
# ---------------------------------------------------------------------------------------------
def versions() -> dict[str, str]:
    """Versions of bnnlab, torch, numpy and Python."""
    import numpy
    import torch

    import bnnlab

    return {"bnnlab": bnnlab.__version__, "torch": torch.__version__,
            "numpy": numpy.__version__, "python": platform.python_version()}


def machine() -> dict[str, Any]:
    """Host name, platform, processor, CPU count and process id of the executing process."""
    return {"host": socket.gethostname(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "pid": os.getpid()}


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def run_spec(spec: Mapping[str, Any], *, threads: int | None = 1) -> dict[str, Any]:
    """Execute one run and return its record (nothing is written).

    Args:
        spec: the run's spec (canonicalised here).
        threads: torch threads during the run (restored afterwards); ``None`` leaves torch as it
            is. Default: ``1`` (one thread per worker process: the stable choice on a shared
            machine, and what makes records of different executors equal).

    Returns:
        The record (see the module docstring). When the runner returned a :class:`RunOutput`,
        the record lists its files under ``"files"`` (``{name: {"bytes", "sha256"}}``) and
        carries their contents under ``"_files"`` (``{name: bytes}``, not JSON), which
        :meth:`ResultStore.put` writes next to the record and drops.
    """
    import torch

    threads = check_int(threads, "threads", min_value=1, allow_none=True)
    canon = canonical_spec(spec)
    fn = _resolve(runner_target(canon["runner"]))
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    started = _utc()
    t0 = time.perf_counter()
    try:
        result: Any = fn(copy.deepcopy(canon))
    finally:
        if threads is not None:
            torch.set_num_threads(old)
    seconds = time.perf_counter() - t0
    files: dict[str, bytes] = {}
    if isinstance(result, RunOutput):
        files = _check_files(result.files)
        result = result.result
    if not isinstance(result, Mapping):
        raise TypeError(f"runner {canon['runner']!r} returned {type(result).__name__}, "
                        "not a dict")
    record = {"schema": RECORD_SCHEMA, "key": spec_key(canon), "spec": canon,
              "result": _jsonable(dict(result), "the runner's result"), "seconds": seconds,
              "started": started, "finished": _utc(),
              "threads": threads if threads is not None else old,
              "versions": versions(), "machine": machine()}
    if files:
        record["files"] = {name: {"bytes": len(data),
                                  "sha256": hashlib.sha256(data).hexdigest()}
                           for name, data in files.items()}
        record["_files"] = files
    return record


# ---------------------------------------------------------------------------------------------
# Results store
# ---------------------------------------------------------------------------------------------
def _write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, fsync, then rename onto ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class ResultStore:
    """A directory of run records, one ``<key>.json`` per spec.

    Files are written atomically (temporary name, then rename), so a reader or a killed
    writer never leaves half a record; records from several machines merge by copying the
    files into one directory. Temporary files (``.*.tmp``) are ignored. A run's files
    (:class:`RunOutput`) sit next to its record as ``<key>.<name>`` (:meth:`file`,
    :meth:`read_file`).

    Args:
        root: the directory (created).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root must be a path, got {type(root).__name__}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"ResultStore({str(self.root)!r}, records={len(self)})"

    def path(self, spec_or_key: Mapping[str, Any] | str) -> Path:
        """File of a spec (or of a key)."""
        key = spec_or_key if isinstance(spec_or_key, str) else spec_key(spec_or_key)
        if not (len(key) == 16 and all(c in "0123456789abcdef" for c in key)):
            raise ValueError(f"key must be 16 lowercase hex digits, got {key!r}")
        return self.root / f"{key}.json"

    def __contains__(self, spec_or_key: object) -> bool:
        if not isinstance(spec_or_key, (str, Mapping)):
            return False
        return self.path(spec_or_key).is_file()

    def keys(self) -> list[str]:
        """Keys of the stored records, sorted."""
        return sorted(p.stem for p in self.root.glob("*.json") if not p.name.startswith("."))

    def __len__(self) -> int:
        return len(self.keys())

    def get(self, spec_or_key: Mapping[str, Any] | str) -> dict[str, Any] | None:
        """The record of a spec (or key), ``None`` when missing.

        Raises:
            ValueError: the file is not a record of this schema, or belongs to another spec.
        """
        path = self.path(spec_or_key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return self._parse(path, text)

    @staticmethod
    def _parse(path: Path, text: str) -> dict[str, Any]:
        try:
            rec = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{path}: not JSON ({exc})") from None
        if not isinstance(rec, dict) or rec.get("schema") != RECORD_SCHEMA:
            raise ValueError(f"{path}: not a {RECORD_SCHEMA} record")
        if rec.get("key") != path.stem:
            raise ValueError(f"{path}: holds the record of key {rec.get('key')!r}")
        return rec

    def put(self, record: Mapping[str, Any]) -> Path:
        """Write ``record`` (as returned by :func:`run_spec`) atomically; return its path.

        The key is recomputed from the record's spec and must match ``record["key"]``. The
        run's files (``record["_files"]``) are written first, each atomically, then the record
        (without ``"_files"``): a record on disk always has its files.
        """
        if not isinstance(record, Mapping) or record.get("schema") != RECORD_SCHEMA:
            raise ValueError(f"record must be a {RECORD_SCHEMA} record")
        key = spec_key(record["spec"])
        if record.get("key") != key:
            raise ValueError(f"record key {record.get('key')!r} does not match its spec ({key})")
        record = dict(record)
        files = _check_files(record.pop("_files", {}))
        listed = record.get("files") or {}
        if sorted(files) != sorted(listed):
            raise ValueError(f"record lists files {sorted(listed)} but carries {sorted(files)}")
        for name, data in files.items():
            if hashlib.sha256(data).hexdigest() != listed[name]["sha256"]:
                raise ValueError(f"record: the SHA-256 of file {name!r} does not match")
            _write_atomic(self.file(key, name), data)
        path = self.path(key)
        _write_atomic(path, json.dumps(record, indent=1, allow_nan=False) + "\n")
        return path

    def file(self, spec_or_key: Mapping[str, Any] | str, name: str) -> Path:
        """Path of the file ``name`` of a run (``<key>.<name>``; it may not exist)."""
        if not isinstance(name, str) or not _FILE_NAME.fullmatch(name):
            raise ValueError(f"name: bad file name {name!r} (expected e.g. 'weights.safetensors')")
        return self.path(spec_or_key).with_name(f"{self.path(spec_or_key).stem}.{name}")

    def read_file(self, spec_or_key: Mapping[str, Any] | str, name: str) -> bytes:
        """Contents of the file ``name`` of a stored run, checked against its record's SHA-256.

        Raises:
            ValueError: no record, the record lists no such file, the file is missing, or its
                bytes do not match the record (a partial copy, a record of another run).
        """
        rec = self.get(spec_or_key)
        if rec is None:
            raise ValueError(f"{self.root}: no record for {spec_or_key!r}")
        meta = (rec.get("files") or {}).get(name)
        if meta is None:
            raise ValueError(f"{self.root}: record {rec['key']} has no file {name!r}")
        path = self.file(rec["key"], name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ValueError(f"{path}: missing (listed by record {rec['key']})") from None
        if hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise ValueError(f"{path}: contents do not match the SHA-256 of record {rec['key']}")
        return data

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record, in key order."""
        for key in self.keys():
            rec = self.get(key)
            if rec is not None:
                yield rec

    def missing(self, specs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Canonical specs of ``specs`` without a record (duplicates removed, order kept)."""
        seen: set[str] = set()
        out = []
        for spec in specs:
            canon = canonical_spec(spec)
            key = spec_key(canon)
            if key in seen or key in self:
                continue
            seen.add(key)
            out.append(canon)
        return out


# ---------------------------------------------------------------------------------------------
# The built-in "fit" runner
# ---------------------------------------------------------------------------------------------
#: Defaults of the ``"fit"`` runner (filled into every spec before hashing).
FIT_DEFAULTS: dict[str, Any] = {
    "model_kw": {}, "data_kw": {}, "fraction": 1.0, "seed": 0, "optimizer": "adam",
    "lr": 1e-3, "weight_decay": 0.0, "schedule": "cosine", "epochs": 5, "batch_size": 128,
    "early_stopping": None, "selection": "val_acc", "device": "cpu", "augment": False,
}


def _build_model(spec: Mapping[str, Any], split: Any) -> Any:
    from bnnlab import train

    kw = dict(spec["model_kw"])
    if "variant" in spec:
        from bnnlab import experiments

        return experiments.build_model(spec["variant"], split.input_shape,
                                       int(split.num_classes), **kw)
    return train.build_model(spec["model"], **kw)


def fit_runner(spec: dict[str, Any]) -> dict[str, Any]:
    """Runner ``"fit"``: train one model and evaluate it at its best validation epoch.

    Spec keys (defaults in :data:`FIT_DEFAULTS`): ``model`` (a name of
    :func:`bnnlab.train.build_model`) with ``model_kw``, or ``variant`` (a key of
    :data:`bnnlab.experiments.VARIANTS`) with ``model_kw`` passed to
    :func:`bnnlab.experiments.build_model`; ``data`` (a name of :func:`bnnlab.data.load`) with
    ``data_kw`` (CIFAR-10: the folder is ``data_kw["root"]`` or, when the spec leaves it
    out because the files are SHA-256-verified, the worker's ``BNNLAB_DATA_ROOT``);
    ``fraction`` of the training part kept (its first samples; the loaders'
    training part is already a seeded permutation); ``seed`` (initialisation, shuffling and
    validation split); ``optimizer``, ``lr``, ``weight_decay``, ``schedule``, ``epochs``,
    ``batch_size``; ``early_stopping`` (``None`` or ``{"monitor": ..., "patience": ...}``);
    ``selection`` (``"val_acc"`` or ``"val_loss"``: the epoch whose weights are tested);
    ``device``; ``augment`` (random crop and flip, :func:`bnnlab.data.augment_crop_flip`).

    Result: ``history`` (per epoch: train/val loss and accuracy, lr), ``epoch_seconds``,
    ``best_epoch``, ``val_acc``/``val_loss`` at it, ``test_acc``/``test_loss`` (evaluated
    once, on those weights), ``parameters``, ``sizes`` of the parts, ``fit_seconds``.
    """
    import torch

    from bnnlab import data as D
    from bnnlab import train

    fraction = check_real(spec["fraction"], "spec['fraction']", min_value=0.0, max_value=1.0,
                          include_min=False)
    seed = check_int(spec["seed"], "spec['seed']", min_value=0)
    selection = check_choice(spec["selection"], "spec['selection']", ("val_acc", "val_loss"))
    data_kw = {"seed": seed, **spec["data_kw"]}
    if spec["data"] == "cifar10" and "root" not in data_kw:
        root = os.environ.get("BNNLAB_DATA_ROOT")
        if not root:
            raise ValueError("spec['data'] is 'cifar10' but neither spec['data_kw']['root'] "
                             "nor the worker's BNNLAB_DATA_ROOT names the folder of its files")
        data_kw["root"] = root
    split = D.load(spec["data"], **data_kw)
    if fraction < 1.0:
        x, y = split.train
        k = max(1, int(round(fraction * x.shape[0])))
        split = D.Split((x[:k], y[:k]), split.val, split.test, name=split.name,
                        num_classes=split.num_classes, classes=split.classes,
                        info=dict(split.info, fraction=fraction))
    torch.manual_seed(seed)
    model = _build_model(spec, split)
    best = train.KeepBest(selection)
    callbacks: list[Any] = [best]
    if spec["early_stopping"] is not None:
        es = dict(spec["early_stopping"])
        callbacks.append(train.EarlyStopping(restore_best=False, **es))
    loss = "cross_entropy" if split.num_classes is not None else "mse"
    t0 = time.perf_counter()
    hist = train.fit(model, split, epochs=check_int(spec["epochs"], "spec['epochs']",
                                                    min_value=1),
                     lr=float(spec["lr"]), batch_size=int(spec["batch_size"]),
                     optimizer=spec["optimizer"], weight_decay=float(spec["weight_decay"]),
                     schedule=spec["schedule"], loss=loss, callbacks=callbacks,
                     progress=False, seed=seed, device=spec["device"],
                     augment=D.augment_crop_flip if spec["augment"] else None)
    fit_seconds = time.perf_counter() - t0
    best.restore(model)
    test = train.evaluate(model, *split.test, loss=loss)
    h = hist.as_dict()
    i = h["epoch"].index(best.best_epoch)

    def clean(v: float) -> float | None:
        return None if math.isnan(v) else float(v)

    return {
        "history": {k: [clean(v) for v in h[k]] if k != "epoch" else h[k]
                    for k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")},
        "epoch_seconds": h["time"], "stopped_early": hist.stopped_early,
        "best_epoch": best.best_epoch, "val_acc": clean(h["val_acc"][i]),
        "val_loss": clean(h["val_loss"][i]), "test_acc": clean(test["accuracy"]),
        "test_loss": clean(test["loss"]),
        "parameters": sum(p.numel() for p in model.parameters()),
        "sizes": split.sizes, "fit_seconds": fit_seconds,
    }


def noop_runner(spec: dict[str, Any]) -> dict[str, Any]:
    """Runner ``"noop"``: returns ``{"echo": spec}`` at once (measures a scheduler's overhead
    per run; checks that a cluster's workers import bnnlab)."""
    return {"echo": spec}


register_runner("fit", "bnnlab.runs:fit_runner", defaults=FIT_DEFAULTS)
register_runner("noop", "bnnlab.runs:noop_runner")
register_runner("ladder", "bnnlab.ladder:ladder_runner")  # the ablation ladder (bnnlab.ladder)
# the trainings of the report's experiments (bnnlab.experiments)
register_runner("experiment", "bnnlab.experiments:experiment_runner")
