"""The packed file format under attack: crafted and mutated files (issue 8, defect 3).

Contract (``bnnlab.packed.load``): every malformed file raises ``ValueError``; every declared
size is checked against the bytes present before anything is allocated, so a file of a few
hundred bytes cannot make the loader allocate megabytes. The fuzzer below mutates valid files
(bit flips, truncations, byte insertions, header JSON edits and payload edits with a recomputed
checksum) and runs in a subprocess that measures its own peak memory with ``resource``.
"""
import hashlib
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
import torch
from torch import nn

from bnnlab import layers as L
from bnnlab import models, packed

ROOT = Path(__file__).resolve().parents[1]


def _file_parts(data):
    """Independent parser of the documented layout: (header dict, payload bytes)."""
    _, _, hlen, zlen = struct.unpack("<8sIIQ", data[:24])
    header = json.loads(zlib.decompress(data[24:24 + hlen]))
    payload = zlib.decompress(data[24 + hlen:24 + hlen + zlen])
    return header, payload


def _file_build(header, payload, version=1, raw_header=None):
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    hz, pz = zlib.compress(text), zlib.compress(payload)
    body = b"BNNLABPK" + struct.pack("<IIQ", version, len(hz), len(pz)) + hz + pz
    return body + hashlib.sha256(body).digest()


def _one_stage(kind, cfg, arrays, payload=b"\0" * 8):
    header = {"format": "bnnlab.packed", "version": 1, "payload_bytes": len(payload),
              "source_state_dict_bytes": None,
              "stages": [{"kind": kind, "name": "x", "cfg": cfg, "arrays": arrays}]}
    return _file_build(header, payload)


def _load_bytes(data, tmp_path):
    path = tmp_path / "crafted.bnnpk"
    path.write_bytes(data)
    return packed.load(path)


# ------------------------------------------------------------------------------ crafted files
def test_a_tiny_file_declaring_a_huge_linear_fails_before_allocating(tmp_path):
    # issue 8, defect 3: 209 bytes declaring an 8000 x 8000 linear allocated ~250 MB first
    data = _one_stage("linear", {"in_features": 8000, "out_features": 8000},
                      {"weight": ["<f4", [8000, 8000], 0]})
    assert len(data) < 300
    with pytest.raises(ValueError, match="outside the payload"):
        _load_bytes(data, tmp_path)


def test_a_declared_huge_batchnorm_fails_before_allocating(tmp_path):
    n = 64 << 20
    arrays = {k: ["<f4", [n], 0] for k in ("running_mean", "running_var")}
    data = _one_stage("batchnorm1d", {"num_features": n, "eps": 1e-5, "affine": False}, arrays)
    with pytest.raises(ValueError, match="outside the payload"):
        _load_bytes(data, tmp_path)


def test_a_packed_maxpool_of_2_to_40_channels_is_refused(tmp_path):
    # it raised MemoryError: its channels are checked against the stage that feeds it
    data = _one_stage("packed_maxpool2d", {"channels": 2**40, "kernel_size": [2, 2],
                                           "stride": [2, 2], "padding": [0, 0]}, {})
    with pytest.raises(ValueError, match="channels"):
        _load_bytes(data, tmp_path)


@pytest.mark.parametrize("lo, hi", [(1.0, 1.0), (2.0, -2.0)])
def test_hardtanh_with_min_not_below_max_is_a_value_error(tmp_path, lo, hi):
    # min == max escaped as AssertionError from torch
    data = _one_stage("hardtanh", {"min_val": lo, "max_val": hi}, {})
    with pytest.raises(ValueError, match="min_val"):
        _load_bytes(data, tmp_path)


_MEMORY_SCRIPT = textwrap.dedent(r'''
    import gc, json, resource, sys
    from bnnlab import packed

    files = [bytes.fromhex(h) for h in json.load(open(sys.argv[1]))]
    packed.PackedModel.from_bytes(bytes.fromhex(json.load(open(sys.argv[2]))))   # warm up
    gc.collect()
    growth = []
    for data in files:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            packed.PackedModel.from_bytes(data)
            result = "loaded"
        except ValueError:
            result = "ValueError"
        growth.append([result, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base])
    print(json.dumps(growth))
''')


def _subprocess_json(script, args, tmp_path):
    path = tmp_path / "script.py"
    path.write_text(script)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, str(path), *map(str, args)], capture_output=True,
                         text=True, env=env, cwd=tmp_path, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_crafted_size_declarations_fail_fast_in_little_memory(tmp_path):
    # issue 8, defect 3: these allocated ~250 MB, ~730 MB and raised MemoryError before failing
    n = 64 << 20
    crafted = [
        _one_stage("linear", {"in_features": 8000, "out_features": 8000},
                   {"weight": ["<f4", [8000, 8000], 0]}),
        _one_stage("batchnorm2d", {"num_features": n, "eps": 1e-5, "affine": True},
                   {k: ["<f4", [n], 0] for k in ("running_mean", "running_var", "weight", "bias")}),
        _one_stage("packed_maxpool2d", {"channels": 2**40, "kernel_size": [2, 2], "stride": [2, 2],
                                        "padding": [0, 0]}, {}),
        _one_stage("conv2d", {"in_channels": 4096, "out_channels": 4096, "kernel_size": [3, 3],
                              "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1],
                              "groups": 1}, {"weight": ["<f4", [4096, 4096, 3, 3], 0]}),
    ]
    (tmp_path / "files.json").write_text(json.dumps([d.hex() for d in crafted]))
    torch.manual_seed(0)
    valid = packed.export(models.binary_mlp(64, hidden=(65, 33))).to_bytes()
    (tmp_path / "valid.json").write_text(json.dumps(valid.hex()))
    growth = _subprocess_json(_MEMORY_SCRIPT, [tmp_path / "files.json", tmp_path / "valid.json"],
                              tmp_path)
    print("peak RSS growth per crafted file (KiB):", [kib for _, kib in growth])   # pytest -s
    assert [r for r, _ in growth] == ["ValueError"] * len(crafted)
    assert max(kib for _, kib in growth) < 16 * 1024, growth     # KiB of peak RSS growth


def test_deeply_nested_header_json_is_a_value_error(tmp_path):
    raw = b"[" * 200_000 + b"]" * 200_000
    data = _file_build(None, b"", raw_header=raw)
    with pytest.raises(ValueError, match="header"):
        _load_bytes(data, tmp_path)


def test_an_oversized_header_is_refused(tmp_path):
    raw = json.dumps({"format": "bnnlab.packed", "pad": " " * (2 << 20)}).encode()
    with pytest.raises(ValueError, match="header"):
        _load_bytes(_file_build(None, b"", raw_header=raw), tmp_path)


def test_overlapping_arrays_are_refused(tmp_path):
    payload = b"\0" * 16
    data = _one_stage("linear", {"in_features": 2, "out_features": 2},
                      {"weight": ["<f4", [2, 2], 0], "bias": ["<f4", [2], 8]}, payload)
    with pytest.raises(ValueError, match="overlap"):
        _load_bytes(data, tmp_path)


def test_loaded_modules_hold_their_arrays_not_meta_tensors(tmp_path):
    torch.manual_seed(0)
    model = models.binary_cnn().eval()
    p = packed.export(model, fold_float_bn=False)
    q = packed.PackedModel.from_bytes(p.to_bytes())
    for t in list(q.parameters()) + list(q.buffers()):
        assert t.device.type == "cpu" and not t.is_meta
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(q(x), p(x))


def test_loaded_packed_words_are_read_only():
    torch.manual_seed(0)
    q = packed.PackedModel.from_bytes(packed.export(models.binary_cnn().eval()).to_bytes())
    for layer in q.packed_layers():
        assert not layer.weight.words.flags.writeable


# ------------------------------------------------------------------------------ the fuzzer
def _seed_files():
    """Valid saved models covering every stage kind the flat export writes."""
    torch.manual_seed(1)
    out = []
    cnn = models.binary_cnn(channels=(16, 40, 70), hidden=33).eval()
    out.append(packed.export(cnn).to_bytes())
    out.append(packed.export(cnn, fold_float_bn=False).to_bytes())
    out.append(packed.export(models.binary_mlp(65, hidden=(129, 63))).to_bytes())
    zero_pad = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardtanh(),
        L.BinaryConv2d(8, 65, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(65),
        L.BinaryConv2d(65, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Dropout(0.1), nn.Linear(16 * 2 * 2, 10), nn.LeakyReLU(0.1), nn.Tanh(), nn.Sigmoid()).eval()
    out.append(packed.export(zero_pad).to_bytes())
    return out


_FUZZ_SCRIPT = textwrap.dedent(r'''
    import copy, json, random, resource, sys, time, hashlib, struct, zlib, gc
    from bnnlab import packed

    seeds = [bytes.fromhex(h) for h in json.load(open(sys.argv[1]))]
    n_cases, seed = int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    VALUES = [0, 1, -1, 2, 3, 63, 64, 65, 2**31, 2**40, 2**63, -2**63, 10**30, 0.5, -0.0,
              1e308, "x", "<f4", "<u8", "|u1", "<f8", None, True, False, [], [1], [2, 2],
              [0, 0], [1, 2, 3], [2**40, 2**40], {}, {"a": 1}, [[1]], "packed_conv2d",
              "linear", "rsign", "kmap", "dense", float("inf"), float("-inf")]

    def pick():
        return copy.deepcopy(rng.choice(VALUES))     # fresh lists / dicts: no shared objects

    def parts(data):
        _, _, hlen, zlen = struct.unpack("<8sIIQ", data[:24])
        return json.loads(zlib.decompress(data[24:24 + hlen])), zlib.decompress(data[24 + hlen:24 + hlen + zlen])

    def build(header, payload):
        hz = zlib.compress(json.dumps(header).encode())
        pz = zlib.compress(payload)
        body = b"BNNLABPK" + struct.pack("<IIQ", 1, len(hz), len(pz)) + hz + pz
        return body + hashlib.sha256(body).digest()

    def resign(data):
        body = data[:-32] if len(data) > 32 else data
        return body + hashlib.sha256(body).digest()

    def edit_json(obj):
        """Replace, delete or add one random leaf somewhere in obj (in place)."""
        path = []
        node = obj
        while isinstance(node, (dict, list)) and node and rng.random() < 0.8:
            key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
            path.append((node, key))
            node = node[key]
        if not path:
            return
        parent, key = path[-1]
        r = rng.random()
        if r < 0.15 and isinstance(parent, dict):
            del parent[key]
        elif r < 0.25 and isinstance(parent, list):
            parent.insert(key, pick())
        elif r < 0.35 and isinstance(parent, dict):
            parent["k" + str(rng.randrange(5))] = pick()
        elif r < 0.5 and isinstance(node, int) and not isinstance(node, bool):
            parent[key] = node + rng.choice([-1, 1, 2, 64, -64, 2**20, 2**40])
        else:
            parent[key] = pick()

    def mutate(data):
        kind = rng.choice(["flip", "flip_resign", "truncate", "insert", "insert_resign", "json",
                           "json", "json", "json2", "payload"])
        if kind in ("flip", "flip_resign"):
            b = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
            return kind, resign(bytes(b)) if kind == "flip_resign" else bytes(b)
        if kind == "truncate":
            return kind, data[:rng.randrange(len(data))]
        if kind.startswith("insert"):
            i = rng.randrange(len(data))
            out = data[:i] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))) + data[i:]
            return kind, resign(out) if kind == "insert_resign" else out
        header, payload = parts(data)
        if kind == "payload":
            b = bytearray(payload)
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(b))
                b[i] = rng.randrange(256)
            return kind, build(header, bytes(b))
        for _ in range(1 if kind == "json" else rng.randint(2, 5)):
            edit_json(header)
        return kind, build(header, payload)

    for s in seeds:                     # warm up: the valid files load
        packed.PackedModel.from_bytes(s)
    gc.collect()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcomes, escapes, worst = {}, [], 0.0
    for case in range(n_cases):
        kind, data = mutate(rng.choice(seeds))
        t0 = time.process_time()
        try:
            packed.PackedModel.from_bytes(data)
            result = "loaded"
        except ValueError:
            result = "ValueError"
        except BaseException as exc:          # anything else is an escape
            result = "escape"
            escapes.append(f"case {case} ({kind}): {type(exc).__name__}: {str(exc)[:200]}")
        worst = max(worst, time.process_time() - t0)
        outcomes[f"{kind}:{result}"] = outcomes.get(f"{kind}:{result}", 0) + 1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"outcomes": outcomes, "escapes": escapes, "max_cpu_s": worst,
                      "peak_growth_kib": peak - base}))
''')


def _fuzz_files(n_cases, seed, tmp_path):
    seeds = tmp_path / "seeds.json"
    seeds.write_text(json.dumps([d.hex() for d in _seed_files()]))
    stats = _subprocess_json(_FUZZ_SCRIPT, [seeds, n_cases, seed], tmp_path)
    print(json.dumps(stats, indent=1, sort_keys=True))      # shown with pytest -s
    assert stats["escapes"] == []
    assert sum(stats["outcomes"].values()) == n_cases
    assert stats["peak_growth_kib"] <= 64 * 1024             # peak memory grows < 64 MiB
    assert stats["max_cpu_s"] < 1.0                          # CPU seconds of the worst load
    return stats


def test_file_fuzzer_mutated_files_load_or_raise_value_error(tmp_path):
    stats = _fuzz_files(300, 0, tmp_path)
    assert any(k.endswith(":ValueError") and k.startswith("json") for k in stats["outcomes"])


@pytest.mark.slow
@pytest.mark.long
def test_file_fuzzer_5000_mutations(tmp_path):
    _fuzz_files(5000, 1, tmp_path)
