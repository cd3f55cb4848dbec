"""Tests of bnnlab.data: IDX parsing, download + SHA-256 cache, loaders and their splits.

No network: downloads are served from generated files through ``file://`` URLs, a fake
opener or a local ``http.server`` on 127.0.0.1. IDX files are written here by an independent
``struct``-based writer.
"""
import gzip
import hashlib
import io
import struct

import numpy as np
import pytest
import torch

from bnnlab import data

# ---------------------------------------------------------------------------------- helpers
_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C,
          np.float32: 0x0D, np.float64: 0x0E}
_STRUCT = {np.uint8: "B", np.int8: "b", np.int16: "h", np.int32: "i", np.float32: "f",
           np.float64: "d"}


def idx_bytes(arr: np.ndarray) -> bytes:
    """Naive IDX encoder (big-endian header and payload), independent of bnnlab."""
    t = arr.dtype.type
    head = struct.pack(">BBBB", 0, 0, _CODES[t], arr.ndim)
    head += b"".join(struct.pack(">I", d) for d in arr.shape)
    flat = arr.reshape(-1).tolist()
    return head + struct.pack(">" + _STRUCT[t] * len(flat), *flat)


def write_set(folder, n_train=120, n_test=30, side=6, gz=True):
    """Write the four (Fashion-)MNIST files; image i carries its index in pixels 0 and 1."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)

    def images(n, offset):
        x = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
        ids = np.arange(n) + offset
        x[:, 0, 0] = ids % 256
        x[:, 0, 1] = ids // 256
        return x

    arrays = {
        "train_images": images(n_train, 0),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": images(n_test, 1000),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }
    sums = {}
    for role, fname in data.IDX_FILES.items():
        raw = idx_bytes(arrays[role])
        if gz:
            raw = gzip.compress(raw)
        (folder / fname).write_bytes(raw)
        sums[fname] = hashlib.sha256(raw).hexdigest()
    return arrays, sums


def ids_of(x: torch.Tensor) -> set:
    """Sample ids written by write_set, from unit-normalised images (N, 1, H, W)."""
    raw = (x[:, 0, 0, :2] * 255).round().to(torch.int64)
    return set((raw[:, 0] + 256 * raw[:, 1]).tolist())


# ---------------------------------------------------------------------------------- IDX
@pytest.mark.parametrize("dtype", list(_CODES))
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_read_idx_matches_independent_writer(tmp_path, dtype, gz):
    arr = (np.arange(2 * 3 * 5).reshape(2, 3, 5) - 7).astype(dtype)
    if dtype == np.uint8:
        arr = np.arange(30, dtype=np.uint8).reshape(2, 3, 5) * 8
    raw = idx_bytes(arr)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    got = data.read_idx(path)
    assert got.dtype == arr.dtype and got.shape == arr.shape
    np.testing.assert_array_equal(got, arr)
    np.testing.assert_array_equal(data.read_idx(path.read_bytes()), arr)


@pytest.mark.parametrize("dtype", list(_CODES))
def test_write_idx_produces_the_reference_bytes_and_round_trips(tmp_path, dtype):
    arr = np.linspace(-3, 100, 24).reshape(4, 6).astype(dtype)
    p = data.write_idx(tmp_path / "x.idx", arr)
    assert p.read_bytes() == idx_bytes(arr)
    pz = data.write_idx(tmp_path / "x.idx.gz", arr)
    assert gzip.decompress(pz.read_bytes()) == idx_bytes(arr)
    np.testing.assert_array_equal(data.read_idx(pz), arr)


def test_gzip_detected_by_content_not_name(tmp_path):
    arr = np.arange(10, dtype=np.uint8)
    (tmp_path / "labels.bin").write_bytes(gzip.compress(idx_bytes(arr)))
    np.testing.assert_array_equal(data.read_idx(tmp_path / "labels.bin"), arr)


def _good():
    return idx_bytes(np.arange(60, dtype=np.uint8).reshape(3, 4, 5))


@pytest.mark.parametrize("raw, match", [
    pytest.param(_good()[:-1], "truncated", id="payload-short"),
    pytest.param(_good() + b"\x00", "trailing", id="payload-long"),
    pytest.param(_good()[:10], "truncated IDX header", id="header-short"),
    pytest.param(b"\x00\x00", "too short", id="tiny"),
    pytest.param(b"\x89PNG\r\n\x1a\n" + bytes(40), "not an IDX file", id="png"),
    pytest.param(b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"ab", "type code", id="bad-dtype"),
    pytest.param(b"\x00\x00\x08\x00", "0 dimensions", id="ndim0"),
    pytest.param(gzip.compress(_good())[:-12], "gzip", id="gzip-truncated"),
])
def test_read_idx_rejects_truncated_or_foreign_files(tmp_path, raw, match):
    path = tmp_path / "bad"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=match):
        data.read_idx(path)


def test_read_idx_missing_file_and_bad_type(tmp_path):
    with pytest.raises(FileNotFoundError):
        data.read_idx(tmp_path / "nope.idx")
    with pytest.raises(TypeError, match="source"):
        data.read_idx(123)


def test_write_idx_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(TypeError, match="dtype"):
        data.write_idx(tmp_path / "x", np.zeros(3, np.uint16))


# ---------------------------------------------------------------------------------- download
def test_download_file_via_file_url_checks_sha256(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"hello bnnlab" * 100)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    dest = data.download_file(src.as_uri(), tmp_path / "cache" / "f.bin", digest)
    assert dest.read_bytes() == src.read_bytes()


def test_download_file_sha256_mismatch_raises_and_keeps_nothing(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload")
    dest = tmp_path / "cache" / "f.bin"
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        data.download_file(src.as_uri(), dest, "0" * 64)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []          # no .part file left behind


def test_download_file_reuses_valid_cache_without_network(tmp_path):
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"cached")
    digest = hashlib.sha256(b"cached").hexdigest()

    def no_network(url):
        raise AssertionError("network used although the cache is valid")

    assert data.download_file("https://example.invalid/f.bin", dest, digest,
                              opener=no_network) == dest


def test_download_file_replaces_corrupt_cache(tmp_path):
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"corrupt")
    good = b"good bytes"
    calls = []

    def opener(url):
        calls.append(url)
        return io.BytesIO(good)

    data.download_file("https://example.invalid/f.bin", dest,
                       hashlib.sha256(good).hexdigest(), opener=opener)
    assert calls and dest.read_bytes() == good


def test_download_file_rejects_bad_digest_argument(tmp_path):
    with pytest.raises(ValueError, match="sha256"):
        data.download_file("file:///x", tmp_path / "f", "abc")


def test_fetch_idx_from_file_url_then_from_cache(tmp_path):
    _, sums = write_set(tmp_path / "mirror")
    cache = tmp_path / "cache"
    paths = data.fetch_idx("mnist", cache_dir=cache, base_url=(tmp_path / "mirror").as_uri() + "/",
                           checksums=sums)
    assert set(paths) == set(data.IDX_FILES)
    for role, fname in data.IDX_FILES.items():
        assert paths[role] == cache / "mnist" / fname
        assert paths[role].read_bytes() == (tmp_path / "mirror" / fname).read_bytes()

    def no_network(url):
        raise AssertionError("network used although the cache is valid")

    again = data.fetch_idx("mnist", cache_dir=cache, checksums=sums, opener=no_network)
    assert again == paths


def test_fetch_idx_checks_the_known_table(tmp_path):
    write_set(tmp_path / "mirror")                    # digests differ from the real MNIST files
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        data.fetch_idx("mnist", cache_dir=tmp_path / "cache",
                       base_url=(tmp_path / "mirror").as_uri() + "/")
    assert not any((tmp_path / "cache" / "mnist").glob("*.gz"))


def test_fetch_idx_bad_name_and_base_url(tmp_path):
    with pytest.raises(ValueError, match="name"):
        data.fetch_idx("cifar", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="base_url"):
        data.fetch_idx("mnist", cache_dir=tmp_path, base_url="file:///no-slash")


def test_known_files_table_is_complete():
    for entry in data.KNOWN_FILES.values():
        assert set(entry["sha256"]) == set(data.IDX_FILES.values())
        assert all(len(h) == 64 and int(h, 16) >= 0 for h in entry["sha256"].values())
        assert all(m.endswith("/") for m in entry["mirrors"])


def test_load_mnist_downloads_through_opener(tmp_path, monkeypatch):
    arrays, sums = write_set(tmp_path / "mirror")
    monkeypatch.setitem(data.KNOWN_FILES["mnist"], "sha256", sums)
    served = []

    def opener(url):
        served.append(url)
        return io.BytesIO((tmp_path / "mirror" / url.rsplit("/", 1)[1]).read_bytes())

    ds = data.load_mnist(cache_dir=tmp_path / "cache", opener=opener, val_size=20, seed=0)
    assert len(served) == 4 and served[0].startswith(data.KNOWN_FILES["mnist"]["mirrors"][0])
    assert ds.sizes == {"train": 100, "val": 20, "test": 30}
    assert ds.name == "mnist" and ds.input_shape == (1, 6, 6)
    # second call: everything from the cache
    ds2 = data.load_mnist(cache_dir=tmp_path / "cache", opener=None, download=False, val_size=20)
    torch.testing.assert_close(ds2.test[0], ds.test[0])


def test_load_mnist_without_cache_and_download_false(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        data.load_mnist(cache_dir=tmp_path, download=False)


# ---------------------------------------------------------------------------------- IDX loaders
def test_idx_loader_split_shapes_and_disjointness(tmp_path):
    arrays, _ = write_set(tmp_path / "fm")
    ds = data.load_fashion_mnist(root=tmp_path / "fm", val_size=20)
    assert isinstance(ds, data.Split)
    assert ds.sizes == {"train": 100, "val": 20, "test": 30}
    x, y = ds.train
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape[1:] == (1, 6, 6)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    tr, va, te = ids_of(ds.train[0]), ids_of(ds.val[0]), ids_of(ds.test[0])
    assert len(tr) == 100 and len(va) == 20
    assert tr.isdisjoint(va) and tr | va == set(range(120))
    assert te == set(range(1000, 1030))               # the official test file, untouched
    # labels travel with their images
    raw = (ds.train[0][:, 0, 0, :2] * 255).round().to(torch.int64)
    row_ids = (raw[:, 0] + 256 * raw[:, 1]).numpy()
    np.testing.assert_array_equal(ds.train[1].numpy(), arrays["train_labels"][row_ids])


def test_idx_loader_seeds(tmp_path):
    write_set(tmp_path / "fm")
    a = data.load_fashion_mnist(root=tmp_path / "fm", val_size=20, seed=3)
    b = data.load_fashion_mnist(root=tmp_path / "fm", val_size=20, seed=3)
    c = data.load_fashion_mnist(root=tmp_path / "fm", val_size=20, seed=4)
    torch.testing.assert_close(a.train[0], b.train[0])
    assert ids_of(a.val[0]) != ids_of(c.val[0])
    torch.testing.assert_close(a.test[0], c.test[0])


def test_idx_loader_options(tmp_path):
    write_set(tmp_path / "fm")
    root = tmp_path / "fm"
    ds = data.load_fashion_mnist(root=root, val_size=0.25, n_train=40, n_test=10, flatten=True,
                                 normalize="symmetric")
    assert ds.sizes == {"train": 40, "val": 30, "test": 10}
    assert ds.input_shape == (36,)
    assert float(ds.train[0].min()) >= -1.0 and float(ds.train[0].max()) <= 1.0
    assert float(ds.train[0].min()) < -0.9               # really symmetric, not [0, 1]
    raw = data.load_fashion_mnist(root=root, val_size=20, normalize=None)
    assert float(raw.train[0].max()) > 200
    std = data.load_fashion_mnist(root=root, val_size=20, normalize="standard")
    assert abs(float(std.train[0].mean())) < 1e-4
    assert abs(float(std.train[0].std()) - 1.0) < 1e-2
    assert std.info["mean"] == pytest.approx(float(raw.train[0].mean()) / 255, rel=1e-4)
    # the n_train subset is taken from the same train part for a given seed
    full = data.load_fashion_mnist(root=root, val_size=0.25)
    assert ids_of(data.load_fashion_mnist(root=root, val_size=0.25, n_train=40).train[0]) \
        <= ids_of(full.train[0])


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"n_train": 1000}, ValueError, "n_train"),
    ({"n_train": 0}, ValueError, "n_train"),
    ({"val_size": 1.5}, ValueError, "val_size"),
    ({"val_size": 120}, ValueError, "val_size"),
    ({"val_size": "10"}, TypeError, "val_size"),
    ({"normalize": "minmax"}, ValueError, "normalize"),
    ({"n_test": 31}, ValueError, "n_test"),
])
def test_idx_loader_bad_arguments(tmp_path, kwargs, exc, match):
    write_set(tmp_path / "fm")
    kwargs = {"val_size": 20, **kwargs}
    with pytest.raises(exc, match=match):
        data.load_fashion_mnist(root=tmp_path / "fm", **kwargs)


def test_idx_loader_images_labels_length_mismatch(tmp_path):
    write_set(tmp_path / "fm")
    (tmp_path / "fm" / data.IDX_FILES["test_labels"]).write_bytes(
        idx_bytes(np.zeros(29, np.uint8)))
    with pytest.raises(ValueError, match="labels"):
        data.load_fashion_mnist(root=tmp_path / "fm", val_size=20)


def test_fashion_mnist_missing_says_apt_get(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load_fashion_mnist(root=tmp_path / "empty")


def test_fashion_mnist_download_uses_cache(tmp_path, monkeypatch):
    _, sums = write_set(tmp_path / "mirror")
    monkeypatch.setitem(data.KNOWN_FILES["fashion-mnist"], "sha256", sums)
    monkeypatch.setitem(data.KNOWN_FILES["fashion-mnist"], "mirrors",
                        ((tmp_path / "mirror").as_uri() + "/",))
    ds = data.load_fashion_mnist(root=tmp_path / "not-there", download=True,
                                 cache_dir=tmp_path / "cache", val_size=20)
    assert ds.sizes["test"] == 30
    assert (tmp_path / "cache" / "fashion-mnist" / data.IDX_FILES["train_images"]).is_file()


@pytest.mark.skipif(not (data.DEBIAN_FASHION_MNIST / data.IDX_FILES["train_images"]).is_file(),
                    reason="needs `apt-get install dataset-fashion-mnist`")
def test_debian_fashion_mnist():
    ds = data.load_fashion_mnist(n_train=2000, n_test=500)
    assert ds.sizes == {"train": 2000, "val": 5000, "test": 500}
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert ds.classes[0] == "T-shirt/top" and len(ds.classes) == 10
    assert set(ds.train[1].unique().tolist()) == set(range(10))
    # the official test file holds 1,000 images of each class
    full = data.load_fashion_mnist(n_train=10, flatten=True)
    assert torch.bincount(full.test[1]).tolist() == [1000] * 10
    assert full.sizes["val"] + 55000 == 60000


# ---------------------------------------------------------------------------------- digits
def test_digits_is_a_partition_of_sklearn_digits():
    from sklearn.datasets import load_digits as sk

    ds = data.load_digits()
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10
    assert sum(ds.sizes.values()) == 1797
    xs = torch.cat([ds.train[0], ds.val[0], ds.test[0]]) * 16
    ys = torch.cat([ds.train[1], ds.val[1], ds.test[1]])
    full = sk()
    got = sorted(tuple(r) + (int(t),) for r, t in zip(xs.reshape(1797, -1).round().tolist(),
                                                       ys.tolist(), strict=True))
    want = sorted(tuple(r) + (int(t),) for r, t in zip(full.data.tolist(), full.target.tolist(),
                                                        strict=True))
    assert got == want


def test_digits_options_and_seeds():
    a = data.load_digits(flatten=True, seed=1)
    b = data.load_digits(flatten=True, seed=2)
    assert a.input_shape == (64,)
    assert float(a.train[0].max()) == 1.0 and float(a.train[0].min()) == 0.0
    torch.testing.assert_close(a.test[0], b.test[0])              # test fixed across seeds
    assert not torch.equal(a.val[0], b.val[0])
    small = data.load_digits(n_train=100, val_size=50, test_size=100)
    assert small.sizes == {"train": 100, "val": 50, "test": 100}


# ---------------------------------------------------------------------------------- synthetic
def test_moons_spirals_regression():
    m = data.make_moons(300, seed=0)
    assert m.input_shape == (2,) and m.num_classes == 2 and sum(m.sizes.values()) == 300
    assert set(m.train[1].tolist()) == {0, 1}
    torch.testing.assert_close(m.train[0], data.make_moons(300, seed=0).train[0])
    assert not torch.equal(m.train[0], data.make_moons(300, seed=1).train[0])

    s = data.make_spirals(300, num_classes=3, noise=0.0, seed=0)
    assert s.num_classes == 3 and set(s.train[1].tolist()) == {0, 1, 2}
    x = torch.cat([s.train[0], s.val[0], s.test[0]])
    assert float(x.norm(dim=1).max()) <= 1.0 + 1e-6               # radius t <= 1 without noise

    r = data.make_regression(200, noise=0.0, seed=0)
    assert r.task == "regression" and r.num_classes is None
    assert r.train[1].shape == (r.sizes["train"], 1) and r.train[1].dtype == torch.float32
    xr, yr = r.train
    torch.testing.assert_close(yr, torch.sin(3 * xr) + 0.3 * xr, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("fn, kwargs, match", [
    (data.make_moons, {"noise": -1.0}, "noise"),
    (data.make_spirals, {"num_classes": 1}, "num_classes"),
    (data.make_spirals, {"turns": 0}, "turns"),
    (data.make_regression, {"n_samples": 2}, "n_samples"),
    (data.make_moons, {"seed": 1.5}, "seed"),
])
def test_synthetic_bad_arguments(fn, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fn(**kwargs)


def test_split_validates_and_unpacks():
    x, y = torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64)
    s = data.Split((x, y), (x[:1], y[:1]), (x[:2], y[:2]), num_classes=2)
    train, val, test = s
    assert train[0] is x and s.sizes == {"train": 4, "val": 1, "test": 2}
    with pytest.raises(ValueError, match="train"):
        data.Split((x, y[:3]), (x, y), (x, y))
    with pytest.raises(TypeError, match="val"):
        data.Split((x, y), [x, y], (x, y))


# ---------------------------------------------------------------------------------------------
# CIFAR-10 augmentation (the loader's tests are in tests/test_cifar.py)
# ---------------------------------------------------------------------------------------------
def test_augment_crop_flip_is_a_shifted_possibly_flipped_window():
    from bnnlab import data as D

    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6) + 1
    g = torch.Generator().manual_seed(0)
    out = D.augment_crop_flip(x, g, padding=2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, r:r + 6, c:c + 6] for r in range(5) for c in range(5)]
        windows += [w.flip(-1) for w in windows]
        assert any(torch.equal(out[i], w) for w in windows)
    again = D.augment_crop_flip(x, torch.Generator().manual_seed(0), padding=2)
    assert torch.equal(out, again)
    assert torch.equal(D.augment_crop_flip(x, g, padding=0).abs().sum(), x.sum())


# ---------------------------------------------------------------------------------- HTTP download
@pytest.fixture
def local_http(tmp_path):
    """A ``python -m http.server`` on 127.0.0.1 (free port) serving ``tmp_path / "www"``."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    www = tmp_path / "www"
    www.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                             "127.0.0.1", "--directory", str(www)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("http.server did not start")
        yield www, url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_fashion_mnist_download_over_http(tmp_path, local_http, monkeypatch):
    www, url = local_http
    arrays, sums = write_set(www / "fm")
    cache = tmp_path / "cache"
    # offline by default: the message names both ways to get the files
    with pytest.raises(FileNotFoundError, match=r"apt-get install dataset-fashion-mnist.*download=True"):
        data.load_fashion_mnist(root=tmp_path / "none", cache_dir=cache, base_url=url + "fm/")
    assert not cache.exists()
    # the real table: the generated files do not match it, so the first one is refused
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
        data.load_fashion_mnist(root=tmp_path / "none", download=True, cache_dir=cache,
                                base_url=url + "fm/")
    assert not list((cache / "fashion-mnist").iterdir())      # nothing kept, no .part left
    # with the generated files' digests the four files arrive and load
    monkeypatch.setitem(data.KNOWN_FILES["fashion-mnist"], "sha256", sums)
    ds = data.load_fashion_mnist(root=tmp_path / "none", download=True, cache_dir=cache,
                                 base_url=url + "fm/", val_size=20)
    assert ds.sizes == {"train": 100, "val": 20, "test": 30}
    for fname in data.IDX_FILES.values():
        assert (cache / "fashion-mnist" / fname).read_bytes() == (www / "fm" / fname).read_bytes()
    np.testing.assert_array_equal(np.sort(ds.test[1].numpy()), np.sort(arrays["test_labels"]))
    # one corrupted byte on the server is refused by name, the valid cache copy stays
    bad = www / "bad"
    bad.mkdir()
    for fname in data.IDX_FILES.values():
        bad.joinpath(fname).write_bytes((www / "fm" / fname).read_bytes())
    raw = bytearray((bad / "t10k-labels-idx1-ubyte.gz").read_bytes())
    raw[-1] ^= 0xFF
    (bad / "t10k-labels-idx1-ubyte.gz").write_bytes(bytes(raw))
    (cache / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz"):
        data.fetch_idx("fashion-mnist", cache_dir=cache, base_url=url + "bad/")
    assert sorted(p.name for p in (cache / "fashion-mnist").iterdir()) == sorted(
        f for f in data.IDX_FILES.values() if f != "t10k-labels-idx1-ubyte.gz")
