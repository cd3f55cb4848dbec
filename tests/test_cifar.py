"""CIFAR-10's binary version, on files and archives generated here in the official format:
folders of ``*.bin`` files, ``cifar-10-binary.tar.gz`` read in memory, digests, and refusals.

The official digests cannot be recomputed offline, so the tests that exercise verification set
the expected sizes and digests to those of the generated files (``monkeypatch``): the
comparisons that run are the loader's own.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnnlab import data as D

N = 12                                   # records per generated file
DIR = "cifar-10-batches-bin"
TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]


# ---------------------------------------------------------------------------------- helpers
def _files(n: int = N, seed: int = 0) -> dict[str, bytes]:
    """The six data files' bytes, written by ``write_cifar10_bin`` through a temporary file."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in D.CIFAR10_FILES:
        x = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, size=n)
        rec = np.concatenate([y.astype(np.uint8)[:, None], x.reshape(n, -1)], axis=1)
        out[name] = rec.tobytes()
    return out


def _folder(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    return folder


def _member(name: str, raw: bytes = b"", kind: bytes = tarfile.REGTYPE,
            linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mtime = kind, linkname, 1262304000
    info.size = len(raw) if kind == tarfile.REGTYPE else 0
    return info, raw


def _official_members(files: dict[str, bytes]) -> list[tuple[tarfile.TarInfo, bytes]]:
    """The official archive's layout: the folder, the six data files, ``batches.meta.txt``
    and ``readme.html`` (the last two are never read)."""
    meta = "\n".join(D.CIFAR10_CLASSES).encode() + b"\n\n"
    members = [_member(DIR, kind=tarfile.DIRTYPE)]
    members += [_member(f"{DIR}/{name}", raw) for name, raw in files.items() if name in TRAIN[:3]]
    members += [_member(f"{DIR}/batches.meta.txt", meta),
                _member(f"{DIR}/readme.html", b"<meta HTTP-EQUIV=\"REFRESH\">\n")]
    members += [_member(f"{DIR}/{name}", raw) for name, raw in files.items()
                if name not in TRAIN[:3]]
    return members


def _archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, raw in members:
            tar.addfile(info, io.BytesIO(raw) if info.isreg() else None)
    path.write_bytes(gzip.compress(buf.getvalue(), mtime=0))
    return path


def _pretend_official(monkeypatch, files: dict[str, bytes], archive: Path | None = None) -> None:
    """Make ``files`` (and ``archive``) the expected ones: their sizes and digests replace
    the official constants, so the loader's real comparisons run."""
    monkeypatch.setattr(D, "CIFAR10_FILE_SIZE", len(files["test_batch.bin"]))
    for name, raw in files.items():
        monkeypatch.setitem(D.CIFAR10_FILES, name, hashlib.sha256(raw).hexdigest())
    monkeypatch.setattr(D, "CIFAR10_TRAIN_SHA256",
                        hashlib.sha256(b"".join(files[n] for n in TRAIN)).hexdigest())
    if archive is not None:
        raw = archive.read_bytes()
        monkeypatch.setattr(D, "CIFAR10_ARCHIVE_SIZE", len(raw))
        monkeypatch.setattr(D, "CIFAR10_ARCHIVE_SHA256", hashlib.sha256(raw).hexdigest())
        monkeypatch.setattr(D, "CIFAR10_ARCHIVE_MD5", hashlib.md5(raw).hexdigest())


def _same(a: D.Split, b: D.Split) -> None:
    for pa, pb in zip(a, b, strict=True):
        assert torch.equal(pa[0], pb[0]) and torch.equal(pa[1], pb[1])


def _flip(raw: bytes, at: int) -> bytes:
    return raw[:at] + bytes([raw[at] ^ 1]) + raw[at + 1:]


# ---------------------------------------------------------------------------------- the format
def test_binary_records_round_trip(tmp_path):
    x = np.arange(2 * 3 * 32 * 32, dtype=np.int64).reshape(2, 3, 32, 32).astype(np.uint8)
    path = D.write_cifar10_bin(tmp_path / "b.bin", x, [3, 9])
    raw = path.read_bytes()
    assert len(raw) == 2 * 3073 and raw[0] == 3 and raw[3073] == 9
    assert raw[1:1025] == x[0, 0].tobytes()                       # red plane first, row-major
    xr, yr = D.read_cifar10_bin(path)
    assert np.array_equal(xr, x) and yr.tolist() == [3, 9]


def test_read_cifar10_bin_refuses_bad_sizes_and_labels(tmp_path):
    bad = tmp_path / "bad.bin"
    for raw in (b"\x01" * 3072, b"", b"\x01" * 3074):
        bad.write_bytes(raw)
        with pytest.raises(ValueError, match="multiple"):
            D.read_cifar10_bin(bad)
    bad.write_bytes(bytes(3073) + bytes([10]) + bytes(3072))
    with pytest.raises(ValueError, match="bad.bin: record 1 has label 10"):
        D.read_cifar10_bin(bad)


def test_official_constants_are_consistent():
    assert D.CIFAR10_FILE_SIZE == 30_730_000 and set(D.CIFAR10_FILES) == {*TRAIN, "test_batch.bin"}
    assert D.CIFAR10_ARCHIVE_URL.endswith("/" + D.CIFAR10_ARCHIVE)
    for digest in (*D.CIFAR10_FILES.values(), D.CIFAR10_TRAIN_SHA256, D.CIFAR10_ARCHIVE_SHA256):
        assert len(digest) == 64 and int(digest, 16) >= 0
    assert len(D.CIFAR10_ARCHIVE_MD5) == 32


# ---------------------------------------------------------------------------------- loading
def test_folder_archive_and_folder_with_the_archive_give_identical_tensors(tmp_path,
                                                                           monkeypatch):
    files = _files()
    _folder(tmp_path / "ext" / DIR, files)
    archive = _archive(tmp_path / "arc" / D.CIFAR10_ARCHIVE, _official_members(files))
    _pretend_official(monkeypatch, files, archive)
    kw = {"val_size": 10, "seed": 1}
    split = D.load_cifar10(tmp_path / "ext", **kw)                 # finds the subfolder
    assert split.info["format"] == "folder" and split.info["verified"] is True
    assert split.sizes == {"train": 50, "val": 10, "test": N}
    assert split.input_shape == (3, 32, 32) and split.classes[0] == "airplane"
    x = split.train[0]
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(x.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    from_archive = D.load_cifar10(archive, **kw)
    assert from_archive.info["format"] == "archive" and from_archive.info["verified"] is True
    _same(split, from_archive)
    beside = D.load_cifar10(str(tmp_path / "arc"), **kw)           # a folder holding the archive
    assert beside.info["source"] == str(archive)
    _same(split, beside)
    _same(split, D.load("cifar10", root=archive, **kw))
    raw = D.load_cifar10(archive, normalize=None, val_size=0)       # the records, in order
    want = np.concatenate([np.frombuffer(files[n], np.uint8).reshape(N, 3073) for n in TRAIN])
    order = np.random.default_rng(0).permutation(5 * N)
    assert np.array_equal(raw.train[0].numpy().astype(np.uint8).reshape(5 * N, -1),
                          want[order, 1:])
    assert raw.train[1].tolist() == want[order, 0].tolist()


def test_extracted_files_win_over_an_archive_beside_them(tmp_path, monkeypatch):
    files = _files()
    _folder(tmp_path, files)
    _archive(tmp_path / D.CIFAR10_ARCHIVE, _official_members(_files(seed=1)))
    _pretend_official(monkeypatch, files)
    assert D.load_cifar10(tmp_path).info["format"] == "folder"
    (tmp_path / "test_batch.bin").unlink()                          # partly extracted: archive
    assert D.load_cifar10(tmp_path, verify=False).info["format"] == "archive"


# ---------------------------------------------------------------------------------- digests
def test_a_changed_byte_in_a_file_is_refused_by_name(tmp_path, monkeypatch):
    files = _files()
    folder = _folder(tmp_path, files)
    _pretend_official(monkeypatch, files)
    (folder / "data_batch_3.bin").write_bytes(_flip(files["data_batch_3.bin"], 5000))
    got = hashlib.sha256((folder / "data_batch_3.bin").read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="data_batch_3.bin") as err:
        D.load_cifar10(folder)
    assert got in str(err.value) and D.CIFAR10_FILES["data_batch_3.bin"] in str(err.value)
    assert "verify=False" in str(err.value)
    split = D.load_cifar10(folder, verify=False, normalize=None)
    assert split.info["verified"] is False and split.sizes["train"] + split.sizes["val"] == 5 * N


def test_the_training_files_are_checked_together_and_in_order(tmp_path, monkeypatch):
    files = _files()
    folder = _folder(tmp_path, files)
    _pretend_official(monkeypatch, files)
    # swap two training files and (as a faulty table would) their per-file entries
    (folder / "data_batch_1.bin").write_bytes(files["data_batch_2.bin"])
    (folder / "data_batch_2.bin").write_bytes(files["data_batch_1.bin"])
    table = dict(D.CIFAR10_FILES)
    monkeypatch.setitem(D.CIFAR10_FILES, "data_batch_1.bin", table["data_batch_2.bin"])
    monkeypatch.setitem(D.CIFAR10_FILES, "data_batch_2.bin", table["data_batch_1.bin"])
    with pytest.raises(ValueError, match="concatenated") as err:
        D.load_cifar10(folder)
    assert D.CIFAR10_TRAIN_SHA256 in str(err.value) and "verify=False" in str(err.value)
    # right bytes, one wrong table entry: refused, but the message says which side is suspect
    _folder(folder, files)
    _pretend_official(monkeypatch, files)
    monkeypatch.setitem(D.CIFAR10_FILES, "data_batch_4.bin", "0" * 64)
    with pytest.raises(ValueError, match="data_batch_4.bin.*please report"):
        D.load_cifar10(folder)


def test_a_file_of_the_wrong_size_is_refused_before_hashing(tmp_path, monkeypatch):
    files = _files()
    folder = _folder(tmp_path, files)
    _pretend_official(monkeypatch, files)
    (folder / "test_batch.bin").write_bytes(files["test_batch.bin"][:-3073])
    with pytest.raises(ValueError, match=f"test_batch.bin is {(N - 1) * 3073} bytes"):
        D.load_cifar10(folder)
    assert D.load_cifar10(folder, verify=False).sizes["test"] == N - 1
    (folder / "test_batch.bin").write_bytes(files["test_batch.bin"][:-1])
    with pytest.raises(ValueError, match="test_batch.bin.*multiple"):
        D.load_cifar10(folder, verify=False)


def test_a_wrong_archive_is_refused_and_accepted_with_verify_false(tmp_path, monkeypatch):
    files = _files()
    archive = _archive(tmp_path / "a.tar.gz", _official_members(files))
    _pretend_official(monkeypatch, files, archive)
    changed = dict(files, **{"data_batch_4.bin": _flip(files["data_batch_4.bin"], 77)})
    bad = _archive(tmp_path / "b" / D.CIFAR10_ARCHIVE, _official_members(changed))
    sha = hashlib.sha256(bad.read_bytes()).hexdigest()
    monkeypatch.setattr(D, "CIFAR10_ARCHIVE_SIZE", bad.stat().st_size)   # same size, other bytes
    with pytest.raises(ValueError, match="SHA-256") as err:
        D.load_cifar10(tmp_path / "b")
    assert str(bad) in str(err.value) and sha in str(err.value)
    assert D.CIFAR10_ARCHIVE_SHA256 in str(err.value) and "verify=False" in str(err.value)
    loose = D.load_cifar10(bad, verify=False, normalize=None, val_size=0)
    assert loose.info["verified"] is False and loose.sizes["train"] == 5 * N
    monkeypatch.setattr(D, "CIFAR10_ARCHIVE_SHA256", sha)                # MD5 checked as well
    with pytest.raises(ValueError, match="MD5"):
        D.load_cifar10(bad)
    monkeypatch.setattr(D, "CIFAR10_ARCHIVE_SIZE", 170_052_171)
    with pytest.raises(ValueError, match=r"bytes, the official cifar-10-binary.tar.gz 170052171"):
        D.load_cifar10(bad)


# ---------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("kind, what", [(tarfile.SYMTYPE, "symbolic link"),
                                        (tarfile.LNKTYPE, "hard link"),
                                        (tarfile.DIRTYPE, "directory"),
                                        (tarfile.CHRTYPE, "character device")])
def test_a_data_file_name_that_is_not_a_regular_file_is_refused(tmp_path, kind, what):
    files = _files()
    members = _official_members(files)
    i = next(i for i, (m, _) in enumerate(members) if m.name == f"{DIR}/test_batch.bin")
    members[i] = _member(f"{DIR}/test_batch.bin", kind=kind,
                         linkname="/etc/passwd" if kind == tarfile.SYMTYPE
                         else f"{DIR}/data_batch_1.bin")
    archive = _archive(tmp_path / "x.tar.gz", members)
    with pytest.raises(ValueError, match=f"root: .*member {DIR}/test_batch.bin is a {what}"):
        D.load_cifar10(archive, verify=False)


def test_missing_duplicated_and_badly_sized_members_are_refused(tmp_path, monkeypatch):
    files = _files()
    members = _official_members(files)
    no_test = [m for m in members if not m[0].name.endswith("test_batch.bin")]
    with pytest.raises(ValueError, match=f"lacks the member.*{DIR}/test_batch.bin"):
        D.load_cifar10(_archive(tmp_path / "missing.tar.gz", no_test), verify=False)
    other_dir = [(_member("cifar-10-python/" + m.name.split("/")[-1], r)[0], r)
                 if m.name.endswith("test_batch.bin") else (m, r) for m, r in members]
    with pytest.raises(ValueError, match="lacks"):                  # only exact names count
        D.load_cifar10(_archive(tmp_path / "elsewhere.tar.gz", other_dir), verify=False)
    twice = members[:2] + [_member(f"{DIR}/data_batch_1.bin", files["data_batch_2.bin"])] \
        + members[2:]
    with pytest.raises(ValueError, match="data_batch_1.bin appears twice"):
        D.load_cifar10(_archive(tmp_path / "twice.tar.gz", twice), verify=False)
    short = [_member(m.name, r[:-1]) if m.name.endswith("data_batch_5.bin") else (m, r)
             for m, r in members]
    with pytest.raises(ValueError, match=f"{DIR}/data_batch_5.bin: {N * 3073 - 1} bytes is "
                                         "not a positive multiple"):
        D.load_cifar10(_archive(tmp_path / "short.tar.gz", short), verify=False)
    # a valid record count that is not the official one: refused only when verifying
    fewer = [_member(m.name, r[:-3073]) if m.name.endswith("data_batch_5.bin") else (m, r)
             for m, r in members]
    archive = _archive(tmp_path / "fewer.tar.gz", fewer)
    _pretend_official(monkeypatch, files, archive)
    with pytest.raises(ValueError, match=f"data_batch_5.bin is {(N - 1) * 3073} bytes, the "
                                         f"official file {N * 3073}"):
        D.load_cifar10(archive)
    assert D.load_cifar10(archive, verify=False, val_size=0).sizes["train"] == 5 * N - 1


def test_labels_above_9_are_refused_in_files_and_members(tmp_path):
    files = _files()
    files["data_batch_2.bin"] = bytes([7]) + bytes(3072) + bytes([200]) + bytes(3072) \
        + files["data_batch_2.bin"][2 * 3073:]
    folder = _folder(tmp_path / "f", files)
    with pytest.raises(ValueError, match="data_batch_2.bin: record 1 has label 200"):
        D.load_cifar10(folder, verify=False)
    archive = _archive(tmp_path / "a.tar.gz", _official_members(files))
    with pytest.raises(ValueError, match=f"member {DIR}/data_batch_2.bin: record 1 has label 200"):
        D.load_cifar10(archive, verify=False)


def _crafted(path: Path, declared: int, present: int) -> Path:
    """A gzipped tar whose ``data_batch_1.bin`` header declares ``declared`` bytes while only
    ``present`` follow (what a malicious or truncated archive looks like)."""
    info = tarfile.TarInfo(f"{DIR}/data_batch_1.bin")
    info.size = declared
    raw = info.tobuf(format=tarfile.GNU_FORMAT) + bytes(present)
    path.write_bytes(gzip.compress(raw, mtime=0))
    return path


def _refused(fn, match: str) -> tuple[str, int]:
    """The ValueError message of ``fn()`` and the peak of Python-traced memory (numpy's and
    bytearray's allocations included) while it ran."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=match) as err:
            fn()
        return str(err.value), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_huge_declared_member_is_refused_before_anything_is_read(tmp_path, monkeypatch):
    huge = _crafted(tmp_path / "huge.tar.gz", declared=3073 * 10**9, present=4096)  # 3 TB
    assert huge.stat().st_size < 200
    msg, peak = _refused(lambda: D.load_cifar10(huge, verify=False),
                         f"member {DIR}/data_batch_1.bin declares")
    assert "3073000000000 bytes, more than 100000 records" in msg and peak < 4 << 20
    raw = huge.read_bytes()
    monkeypatch.setattr(D, "CIFAR10_ARCHIVE_SIZE", len(raw))
    monkeypatch.setattr(D, "CIFAR10_ARCHIVE_SHA256", hashlib.sha256(raw).hexdigest())
    monkeypatch.setattr(D, "CIFAR10_ARCHIVE_MD5", hashlib.md5(raw).hexdigest())
    msg, peak = _refused(lambda: D.load_cifar10(huge), f"member {DIR}/data_batch_1.bin is")
    assert "3073000000000 bytes, the official file 30730000" in msg and peak < 4 << 20
    # a size within bounds (307 MB) with 4 KB present: memory follows the bytes present
    cut = _crafted(tmp_path / "cut.tar.gz", declared=3073 * 100_000, present=4096)
    msg, peak = _refused(lambda: D.load_cifar10(cut, verify=False),
                         f"member {DIR}/data_batch_1.bin: truncated")
    assert peak < 16 << 20


def test_foreign_archives_and_bad_roots_are_refused(tmp_path):
    not_tar = tmp_path / "x.tar.gz"
    not_tar.write_bytes(b"PK\x03\x04 a zip, not a gzipped tar" * 10)
    with pytest.raises(ValueError, match="is not a readable gzip-compressed tar"):
        D.load_cifar10(not_tar, verify=False)
    with pytest.raises(ValueError, match="bytes, the official cifar-10-binary.tar.gz"):
        D.load_cifar10(not_tar)                                     # size refused first
    many = [_member(f"{DIR}/junk_{i}.txt", b"x") for i in range(80)]
    with pytest.raises(ValueError, match="more than 64 members"):
        D.load_cifar10(_archive(tmp_path / "many.tar.gz", many), verify=False)
    with pytest.raises(FileNotFoundError, match="neither a folder nor"):
        D.load_cifar10(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="test_batch.bin.*cifar-10-binary.tar.gz"):
        D.load_cifar10(tmp_path / "empty", verify=False)
    with pytest.raises(TypeError, match="root"):
        D.load_cifar10(3)
    with pytest.raises(TypeError, match="verify"):
        D.load_cifar10(tmp_path, verify="yes")


# ---------------------------------------------------------------------------------- command line
def test_train_cli_and_fit_runner_read_the_archive(tmp_path, monkeypatch):
    from bnnlab import runs, train

    archive = _archive(tmp_path / D.CIFAR10_ARCHIVE, _official_members(_files()))
    data_kw = json.dumps({"verify": False, "val_size": 10, "n_test": 6})
    assert train.main(["--model", "binary_mlp", "--model-kw", '{"hidden": [8]}',
                       "--data", "cifar10", "--data-root", str(archive), "--data-kw", data_kw,
                       "--epochs", "1", "--batch-size", "25", "--out", str(tmp_path / "out")]) \
        in (0, None)
    record = json.loads((tmp_path / "out" / "record.json").read_text())
    assert record["args"]["data_root"] == str(archive) and len(record["history"]["epoch"]) == 1
    # experiments --paper --data-root: the workers find the archive through BNNLAB_DATA_ROOT
    monkeypatch.setenv("BNNLAB_DATA_ROOT", str(archive.resolve()))
    spec = {"runner": "fit", "model": "binary_mlp", "data": "cifar10",
            "model_kw": {"in_features": 3072, "hidden": [8]},
            "data_kw": {"verify": False, "val_size": 10}, "epochs": 1, "batch_size": 25}
    assert runs.run_spec(spec)["result"]["sizes"] == {"train": 50, "val": 10, "test": N}


# ---------------------------------------------------------------------------------- fuzz
_SMALL = _files(n=2, seed=3)


def _small_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, raw in _official_members(_SMALL):
            tar.addfile(info, io.BytesIO(raw) if info.isreg() else None)
    return buf.getvalue()


_TAR = _small_tar()
with tarfile.open(fileobj=io.BytesIO(_TAR)) as _t:
    _HEADERS = [m.offset for m in _t.getmembers()]      # where each 512-byte header starts


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(_HEADERS), st.integers(0, 511), st.integers(0, 255)),
                max_size=6),
       st.lists(st.tuples(st.integers(0, len(_TAR) - 1), st.integers(0, 255)), max_size=3),
       st.integers(0, len(_TAR)))
def test_mutated_archives_load_or_raise_value_error(tmp_path, in_headers, anywhere, cut):
    """Bytes of the tar changed (mostly in its headers: names, types, sizes; checksums then made
    valid) and the stream cut, then gzipped: the loader reads valid records or raises ValueError, within
    bounded memory."""
    raw = bytearray(_TAR)
    for start, at, value in in_headers:
        raw[start + at] = value
    for start in _HEADERS:                  # a valid checksum, so that tarfile reads the fields
        block = raw[start:start + 512]
        block[148:156] = b" " * 8
        raw[start + 148:start + 156] = b"%06o\0 " % sum(block)
    for at, value in anywhere:
        raw[at] = value
    path = tmp_path / "m.tar.gz"
    path.write_bytes(gzip.compress(bytes(raw[:max(1, cut)]), mtime=0))
    tracemalloc.start()
    try:
        split = D.load_cifar10(path, verify=False, normalize=None, val_size=0)
    except ValueError:
        pass
    else:
        for x, y in (split.train, split.test):
            assert x.shape[1:] == (3, 32, 32) and int(y.min()) >= 0 and int(y.max()) <= 9
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 32 << 20


def test_channel_normalisation_equals_the_direct_formula(tmp_path):
    files = _files(n=40, seed=5)
    _folder(tmp_path, files)
    split = D.load_cifar10(tmp_path, verify=False, val_size=30, seed=2)
    raw = D.load_cifar10(tmp_path, verify=False, normalize=None, val_size=30, seed=2)
    x = raw.train[0].numpy().astype(np.float64) / 255.0
    mean = x.mean(axis=(0, 2, 3))
    std = x.std(axis=(0, 2, 3))
    np.testing.assert_allclose(split.info["mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(split.info["std"], std, rtol=1e-12)
    for part, ref in zip(split, raw, strict=True):
        direct = (ref[0].numpy().astype(np.float64) / 255.0 - mean[:, None, None]) \
            / std[:, None, None]
        assert part[0].dtype == torch.float32
        np.testing.assert_allclose(part[0].numpy(), direct, rtol=0, atol=1e-6)
        assert torch.equal(part[1], ref[1])
