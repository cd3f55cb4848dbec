"""bnnlab.runs: canonical specs and keys, the runner registry, the atomic results store, and the
built-in fit runner (a pure function of its spec)."""
from __future__ import annotations

import json
import os

import pytest

from bnnlab import runs

SPEC = {"runner": "fit", "model": "binary_mlp", "data": "digits",
        "model_kw": {"in_features": 64, "hidden": [16, 16]}, "data_kw": {"n_train": 200},
        "epochs": 2, "batch_size": 32, "lr": 0.01}


def test_keys_are_canonical_and_defaults_are_filled():
    spelled = {**runs.FIT_DEFAULTS, **SPEC}
    reordered = dict(reversed(list(SPEC.items())))
    assert runs.spec_key(SPEC) == runs.spec_key(spelled) == runs.spec_key(reordered)
    assert runs.spec_key({**SPEC, "model_kw": {"in_features": 64, "hidden": (16, 16)}}) == \
        runs.spec_key(SPEC)                                     # tuples are lists in JSON
    assert runs.spec_key({**SPEC, "seed": 1}) != runs.spec_key(SPEC)
    canon = runs.canonical_spec(SPEC)
    assert list(canon) == sorted(canon) and canon["optimizer"] == "adam"
    assert len(runs.spec_key(SPEC)) == 16
    with pytest.raises(ValueError, match="JSON"):
        runs.canonical_spec({**SPEC, "lr": float("nan")})
    with pytest.raises(ValueError, match="JSON"):
        runs.canonical_spec({**SPEC, "model": object()})
    with pytest.raises(ValueError, match="runner"):
        runs.canonical_spec({"model": "x"})
    with pytest.raises(ValueError, match="unknown runner"):
        runs.canonical_spec({"runner": "nope"})
    with pytest.raises(TypeError, match="spec"):
        runs.canonical_spec([("runner", "fit")])


def test_register_runner_by_import_path():
    assert runs.runners()["fit"] == "bnnlab.runs:fit_runner"
    runs.register_runner("fit", runs.fit_runner, defaults=runs.FIT_DEFAULTS)   # same target: ok
    with pytest.raises(ValueError, match="already registered"):
        runs.register_runner("fit", "json:dumps")
    with pytest.raises(ValueError, match="module:function"):
        runs.register_runner("other", "json.dumps")
    with pytest.raises(ValueError, match="module-level"):
        runs.register_runner("other", lambda spec: spec)
    with pytest.raises(ValueError, match="name"):
        runs.register_runner("a:b", "json:dumps")
    assert runs.runner_target("pkg.mod:fn") == "pkg.mod:fn"


def test_store_writes_atomically_and_validates(tmp_path):
    store = runs.ResultStore(tmp_path / "res")
    record = runs.run_spec(SPEC)
    assert record["spec"] == runs.canonical_spec(SPEC) and record["threads"] == 1
    path = store.put(record)
    assert path.name == f"{runs.spec_key(SPEC)}.json" and SPEC in store
    assert store.get(SPEC) == json.loads(json.dumps(record))
    assert [p.name for p in path.parent.iterdir()] == [path.name]      # no temporary left
    (path.parent / f".{path.name}.abc.tmp").write_text("{half")         # a killed writer's
    assert store.keys() == [path.stem] and len(store) == 1
    assert store.missing([SPEC, {**SPEC, "seed": 3}, {**SPEC, "seed": 3}]) == \
        [runs.canonical_spec({**SPEC, "seed": 3})]
    with pytest.raises(ValueError, match="does not match"):
        store.put({**record, "key": "0" * 16})
    other = dict(record, spec={**record["spec"], "seed": 9})
    with pytest.raises(ValueError, match="does not match"):
        store.put(other)
    (tmp_path / "res" / ("f" * 16 + ".json")).write_text(json.dumps(record))
    with pytest.raises(ValueError, match="holds the record"):
        store.get("f" * 16)
    with pytest.raises(ValueError, match="hex"):
        store.path("../../etc/passwd")
    assert not os.listdir(tmp_path / "res") == []


def test_fit_runner_is_a_pure_function_of_its_spec():
    a = runs.run_spec(SPEC)["result"]
    b = runs.run_spec(SPEC)["result"]
    for r in (a, b):
        r.pop("epoch_seconds"), r.pop("fit_seconds")
    assert a == b
    assert a["best_epoch"] == 1 + max(range(2), key=lambda i: (a["history"]["val_acc"][i], -i))
    assert a["sizes"]["train"] == 200 and 0.0 <= a["test_acc"] <= 1.0
    half = runs.run_spec({**SPEC, "fraction": 0.5})["result"]
    assert half["sizes"]["train"] == 100
    with pytest.raises(ValueError, match="fraction"):
        runs.run_spec({**SPEC, "fraction": 0.0})


def test_a_runs_files_are_written_before_its_record_and_checked(tmp_path):
    import hashlib

    store = runs.ResultStore(tmp_path)
    spec = {"runner": "_sweep_helper:with_file", "seed": 3}
    record = runs.run_spec(spec)
    assert record["_files"] == {"data.bin": b"\x03" * 4}
    assert record["files"] == {"data.bin": {"bytes": 4,
                                            "sha256": hashlib.sha256(b"\x03" * 4).hexdigest()}}
    path = store.put(record)
    key = runs.spec_key(spec)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{key}.data.bin", f"{key}.json"]
    assert "_files" not in json.loads(path.read_text())         # the bytes never go to JSON
    assert store.keys() == [key] and store.read_file(spec, "data.bin") == b"\x03" * 4
    store.file(spec, "data.bin").write_bytes(b"\x04" * 4)        # altered after the run
    with pytest.raises(ValueError, match="SHA-256"):
        store.read_file(spec, "data.bin")
    store.file(spec, "data.bin").unlink()
    with pytest.raises(ValueError, match="missing"):
        store.read_file(spec, "data.bin")
    with pytest.raises(ValueError, match="no file"):
        store.read_file(spec, "other.bin")
    with pytest.raises(ValueError, match="no record"):
        store.read_file({**spec, "seed": 4}, "data.bin")
    with pytest.raises(ValueError, match="file name"):
        store.file(spec, "../x.json")
    with pytest.raises(ValueError, match="carries"):
        store.put({k: v for k, v in record.items() if k != "_files"})
    with pytest.raises(ValueError, match="SHA-256"):
        store.put({**record, "_files": {"data.bin": b"\x05" * 4}})
    with pytest.raises(ValueError, match="file name"):
        store.put({**record, "_files": {"x.json": b""}, "files": {"x.json": {}}})
