"""Data sets for bnnlab: real images (digits, Fashion-MNIST, MNIST) and synthetic sets.

Every loader returns a :class:`Split`: three ``(x, y)`` pairs of CPU tensors, ``train``,
``val`` and ``test``. The validation part is carved out of the training pool with a seeded
permutation; the test part is fixed (the official test files, or a split made with a constant
seed for sets that have none) and is never used to choose a model.

Sources:

* :func:`load_digits` – scikit-learn's 1,797 real 8×8 handwritten digits (offline).
* :func:`load_fashion_mnist` – Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package
  (``/usr/share/datasets/fashion-mnist``), or downloaded into a cache with ``download=True``.
* :func:`load_mnist` – MNIST digits, downloaded into a cache directory and checked against a
  SHA-256 table (:data:`KNOWN_FILES`); needs internet once.
* :func:`load_cifar10` – CIFAR-10's binary version from the user's folder or the official
  ``cifar-10-binary.tar.gz`` (read in memory), checked against published digests.
* :func:`read_idx` / :func:`write_idx` – the IDX format of the (Fashion-)MNIST files, with
  or without gzip; truncated or foreign files raise :class:`ValueError`.
* :func:`make_moons`, :func:`make_spirals`, :func:`make_regression` – seeded synthetic sets.

Inputs are ``float32``; class labels ``int64``; regression targets ``float32`` of shape (N, 1).

Examples::

    >>> from bnnlab import data
    >>> ds = data.load_digits(flatten=True)
    >>> ds.train[0].shape[1], ds.num_classes
    (64, 10)
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import torch
from torch import Tensor

from bnnlab._validation import check_bool, check_choice, check_int

__all__ = [
    "Split",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "fetch_idx",
    "download_file",
    "read_idx",
    "write_idx",
    "make_moons",
    "make_spirals",
    "make_regression",
    "KNOWN_FILES",
    "IDX_FILES",
    "FASHION_MNIST_CLASSES",
    "DEBIAN_FASHION_MNIST",
    "fashion_mnist_dir",
    "default_cache_dir",
    "DATASETS",
    "load",
    "load_cifar10",
    "read_cifar10_bin",
    "write_cifar10_bin",
    "augment_crop_flip",
    "CIFAR10_FILES",
    "CIFAR10_CLASSES",
    "CIFAR10_ARCHIVE",
    "CIFAR10_ARCHIVE_URL",
    "CIFAR10_ARCHIVE_SIZE",
    "CIFAR10_ARCHIVE_MD5",
    "CIFAR10_ARCHIVE_SHA256",
    "CIFAR10_DIR",
    "CIFAR10_FILE_SIZE",
    "CIFAR10_TRAIN_SHA256",
]

#: Where Debian's ``dataset-fashion-mnist`` package puts the four IDX files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def fashion_mnist_dir() -> Path:
    """The system's Fashion-MNIST folder: ``$BNNLAB_FASHION_MNIST`` if set, else
    :data:`DEBIAN_FASHION_MNIST`. Setting the variable to an empty folder shows what a machine
    without the Debian package sees (the notebooks' download offer is tested that way)."""
    return Path(os.environ.get("BNNLAB_FASHION_MNIST") or DEBIAN_FASHION_MNIST)


#: The four files of an (Fashion-)MNIST release: role -> file name.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

#: Download table: data set -> mirrors (tried in order) and SHA-256 of each gzipped file
#: as distributed upstream. (Debian recompresses Fashion-MNIST, so its .gz files have other
#: digests; they are read in place and not checked against this table.)
KNOWN_FILES: dict[str, dict] = {
    "mnist": {
        "mirrors": (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        "sha256": {
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
    },
    "fashion-mnist": {
        "mirrors": (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        "sha256": {
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
    },
}

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_DIGIT_CLASSES = tuple(str(i) for i in range(10))

# The test part of sets without an official test split is drawn with this constant seed, so
# that changing ``seed`` (which moves the validation split) never changes the test set.
_TEST_SEED = 20240601

_NORMALIZE = ("unit", "symmetric", "standard", None)


# ---------------------------------------------------------------------------------------------
# The container
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Split:
    """A data set cut into train / validation / test parts.

    Attributes:
        train: ``(x, y)`` used for fitting.
        val: ``(x, y)`` carved from the training pool (seeded); use it to choose models,
            epochs, learning rates.
        test: ``(x, y)`` held out; report it, never select on it.
        name: short name of the source (``"digits"``, ``"fashion-mnist"``, ...).
        num_classes: number of classes, or ``None`` for regression.
        classes: class names (empty for regression).
        info: free-form provenance (source path, seed, normalisation constants).

    A split unpacks like a tuple: ``train, val, test = split``.
    """

    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    name: str = ""
    num_classes: int | None = None
    classes: tuple[str, ...] = ()
    info: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for part in ("train", "val", "test"):
            pair = getattr(self, part)
            if (not isinstance(pair, tuple) or len(pair) != 2
                    or not all(isinstance(t, Tensor) for t in pair)):
                raise TypeError(f"{part} must be a tuple (x, y) of tensors")
            if pair[0].shape[0] != pair[1].shape[0]:
                raise ValueError(
                    f"{part}: x has {pair[0].shape[0]} rows but y has {pair[1].shape[0]}")

    @property
    def task(self) -> str:
        """``"classification"`` or ``"regression"``."""
        return "regression" if self.num_classes is None else "classification"

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample, e.g. ``(1, 28, 28)`` or ``(784,)``."""
        return tuple(self.train[0].shape[1:])

    @property
    def sizes(self) -> dict[str, int]:
        """Number of samples in each part."""
        return {p: int(getattr(self, p)[0].shape[0]) for p in ("train", "val", "test")}

    def __iter__(self):
        return iter((self.train, self.val, self.test))

    def __repr__(self) -> str:
        s = self.sizes
        return (f"Split(name={self.name!r}, task={self.task!r}, input_shape={self.input_shape}, "
                f"num_classes={self.num_classes}, train={s['train']}, val={s['val']}, "
                f"test={s['test']})")


# ---------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------
def _resolve_count(size, total: int, name: str) -> int:
    """``size`` as a count: an int, or a float fraction of ``total``."""
    if isinstance(size, bool):
        raise TypeError(f"{name} must be an int or a float fraction, got bool")
    if isinstance(size, (float, np.floating)):
        if not 0.0 <= size < 1.0:
            raise ValueError(f"{name} as a fraction must be in [0, 1), got {size}")
        return int(round(size * total))
    if isinstance(size, (int, np.integer)):
        if not 0 <= size < total:
            raise ValueError(f"{name} must be in [0, {total}), got {size}")
        return int(size)
    raise TypeError(f"{name} must be an int or a float fraction, got {type(size).__name__}")


def _carve(x: np.ndarray, y: np.ndarray, *, val_size, n_train, seed: int):
    """Split a training pool into (train, val) with a seeded permutation."""
    n = len(x)
    n_val = _resolve_count(val_size, n, "val_size")
    perm = np.random.default_rng(seed).permutation(n)
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    if n_train is not None:
        check_int(n_train, "n_train", min_value=1)
        if n_train > len(train_idx):
            raise ValueError(
                f"n_train={n_train} is larger than the {len(train_idx)} training samples "
                f"left after the validation split")
        train_idx = train_idx[:n_train]
    return (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx])


def _finish_images(parts, *, scale: float, normalize, flatten: bool, image_shape):
    """Scale raw pixel arrays to float32 tensors; statistics come from train only."""
    check_choice(normalize, "normalize", _NORMALIZE)
    xs = [np.asarray(x, dtype=np.float32) for x, _ in parts]
    info: dict = {"normalize": normalize}
    if normalize in ("unit", "symmetric", "standard"):
        xs = [x / scale for x in xs]
    if normalize == "symmetric":
        xs = [2.0 * x - 1.0 for x in xs]
    elif normalize == "standard":
        mean = float(xs[0].mean())
        std = float(xs[0].std()) or 1.0
        xs = [(x - mean) / std for x in xs]
        info.update(mean=mean, std=std)
    shape = (-1,) if flatten else tuple(image_shape)
    out = []
    for x, (_, y) in zip(xs, parts, strict=True):
        xt = torch.from_numpy(np.ascontiguousarray(x.reshape(len(x), *shape)))
        yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
        out.append((xt, yt))
    return out, info


def _subset_test(x, y, n_test, seed=_TEST_SEED):
    if n_test is None:
        return x, y
    check_int(n_test, "n_test", min_value=1)
    if n_test > len(x):
        raise ValueError(f"n_test={n_test} is larger than the {len(x)} test samples")
    idx = np.sort(np.random.default_rng(seed).permutation(len(x))[:n_test])
    return x[idx], y[idx]


# ---------------------------------------------------------------------------------------------
# scikit-learn digits
# ---------------------------------------------------------------------------------------------
def load_digits(*, flatten: bool = False, normalize: str | None = "unit", val_size=0.2,
                test_size=0.2, n_train: int | None = None, seed: int = 0) -> Split:
    """scikit-learn's real handwritten digits: 1,797 images of 8×8 pixels, 10 classes.

    Args:
        flatten: return inputs of shape (N, 64) instead of (N, 1, 8, 8). Default: ``False``.
        normalize: ``"unit"`` (pixels / 16, in [0, 1]), ``"symmetric"`` ([-1, 1]),
            ``"standard"`` (zero mean, unit variance, statistics of the train part) or
            ``None`` (raw 0..16). Default: ``"unit"``.
        val_size: validation part, a fraction of the training pool or a count. Default: ``0.2``.
        test_size: test part, a fraction of all 1,797 images or a count; drawn with a constant
            seed, so it does not move with ``seed``. Default: ``0.2``.
        n_train: keep only this many training samples (after the validation split).
        seed: seed of the validation split and the ``n_train`` subset. Default: ``0``.

    Returns:
        :class:`Split` with ``num_classes=10``.
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    check_int(seed, "seed", min_value=0)
    bunch = _sk_load_digits()
    x = bunch.images.astype(np.float32)          # (1797, 8, 8), values 0..16
    y = bunch.target.astype(np.int64)
    n_test = _resolve_count(test_size, len(x), "test_size")
    perm = np.random.default_rng(_TEST_SEED).permutation(len(x))
    test_idx, pool_idx = perm[:n_test], perm[n_test:]
    train, val = _carve(x[pool_idx], y[pool_idx], val_size=val_size, n_train=n_train, seed=seed)
    parts, info = _finish_images([train, val, (x[test_idx], y[test_idx])], scale=16.0,
                                 normalize=normalize, flatten=flatten, image_shape=(1, 8, 8))
    info.update(source="sklearn.datasets.load_digits", seed=seed)
    return Split(parts[0], parts[1], parts[2], name="digits", num_classes=10, classes=_DIGIT_CLASSES, info=info)


# ---------------------------------------------------------------------------------------------
# IDX format
# ---------------------------------------------------------------------------------------------
# type code -> big-endian numpy dtype (the IDX format of LeCun's MNIST page)
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dt.newbyteorder("="): code for code, dt in _IDX_DTYPES.items()}


def _read_bytes(source) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw, label = bytes(source), "<bytes>"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"IDX file not found: {path}")
        raw, label = path.read_bytes(), str(path)
    else:
        raise TypeError(f"source must be a path or bytes, got {type(source).__name__}")
    if raw[:2] == b"\x1f\x8b":                    # gzip magic: decompress in memory
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, gzip.BadGzipFile) as exc:
            raise ValueError(f"{label}: corrupt or truncated gzip stream ({exc})") from None
    return raw, label


def read_idx(source) -> np.ndarray:
    """Parse an IDX file (the format of the MNIST files), gzipped or not.

    The header is two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then each dimension as a big-endian
    uint32; the data follow in big-endian C order. Gzip is detected from its magic bytes, not
    from the file name.

    Args:
        source: path of the file, or its bytes.

    Returns:
        ``np.ndarray`` in native byte order with the stored shape.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: not an IDX file (bad magic or type code, no dimensions), corrupt gzip,
            or a payload that is shorter or longer than the header announces.
    """
    raw, label = _read_bytes(source)
    if len(raw) < 4:
        raise ValueError(f"{label}: too short for an IDX header ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{label}: not an IDX file (magic starts with {raw[:2].hex()}, "
                         f"expected 0000)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{label}: unknown IDX type code 0x{code:02x}")
    if ndim == 0:
        raise ValueError(f"{label}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{label}: truncated IDX header ({len(raw)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        what = "truncated" if got < expected else "has trailing bytes"
        raise ValueError(f"{label}: IDX payload {what}: {got} bytes for shape {dims} of "
                         f"{dtype.name} ({expected} expected)")
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def write_idx(path, array) -> Path:
    """Write ``array`` as an IDX file (gzipped when ``path`` ends in ``.gz``).

    Args:
        path: destination file.
        array: array of dtype uint8, int8, int16, int32, float32 or float64, 1 to 255 dims.

    Returns:
        The path written.
    """
    arr = np.asarray(array)
    key = arr.dtype.newbyteorder("=")
    if key not in _IDX_CODES:
        raise TypeError(f"array dtype {arr.dtype} has no IDX type code "
                        f"(use uint8, int8, int16, int32, float32 or float64)")
    if not 1 <= arr.ndim <= 255:
        raise ValueError(f"array must have 1..255 dimensions, got {arr.ndim}")
    header = bytes([0, 0, _IDX_CODES[key], arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    payload = header + np.ascontiguousarray(arr, dtype=key.newbyteorder(">")).tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
    return path


def _read_pair(images_path, labels_path) -> tuple[np.ndarray, np.ndarray]:
    x = read_idx(images_path)
    y = read_idx(labels_path)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise ValueError(f"{images_path}: expected uint8 images (N, H, W), got {x.dtype} "
                         f"{x.shape}")
    if y.ndim != 1 or y.dtype != np.uint8:
        raise ValueError(f"{labels_path}: expected uint8 labels (N,), got {y.dtype} {y.shape}")
    if len(x) != len(y):
        raise ValueError(f"{images_path} has {len(x)} images but {labels_path} has "
                         f"{len(y)} labels")
    return x, y


# ---------------------------------------------------------------------------------------------
# Download with SHA-256 check
# ---------------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$BNNLAB_DATA`` if set, else ``$XDG_CACHE_HOME/bnnlab`` (``~/.cache/bnnlab``)."""
    env = os.environ.get("BNNLAB_DATA")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bnnlab"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_file(url: str, dest, sha256: str, *, opener: Callable | None = None,
                  timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` and verify its SHA-256.

    A file already at ``dest`` with the right digest is reused without any network access.
    The download goes to a temporary file in the same folder and is renamed only after the
    digest matched, so a failed or corrupted download never leaves a file at ``dest``.

    Args:
        url: ``http(s)://`` or ``file://`` URL.
        dest: destination path (its folder is created).
        sha256: expected hex digest.
        opener: function ``url -> file-like`` (defaults to :func:`urllib.request.urlopen`);
            tests pass their own to stay offline.
        timeout: seconds, passed to ``urlopen``.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: the downloaded bytes do not have digest ``sha256``.
    """
    if not isinstance(sha256, str) or len(sha256) != 64:
        raise ValueError(f"sha256 must be a 64-character hex digest, got {sha256!r}")
    sha256 = sha256.lower()
    dest = Path(dest)
    if dest.is_file() and _sha256(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    if opener is None:
        def opener(u):
            return urllib.request.urlopen(u, timeout=timeout)  # noqa: S310 (http/file only)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, opener(url) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
        digest = h.hexdigest()
        if digest != sha256:
            raise ValueError(f"SHA-256 mismatch for {url}: got {digest}, expected {sha256}; "
                             f"the file was not kept")
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def fetch_idx(name: str, *, cache_dir=None, base_url: str | None = None,
              checksums: Mapping[str, str] | None = None,
              opener: Callable | None = None) -> dict[str, Path]:
    """Make sure the four IDX files of ``name`` are in the cache, downloading if needed.

    Files are stored as ``cache_dir / name / <file name>``; cached files whose SHA-256 matches
    are reused (no network access at all when all four are present and valid).

    Args:
        name: ``"mnist"`` or ``"fashion-mnist"`` (keys of :data:`KNOWN_FILES`).
        cache_dir: root of the cache. Default: :func:`default_cache_dir`.
        base_url: fetch from this URL prefix instead of the known mirrors (for example a
            ``file://`` folder or a local mirror); must end with ``/``.
        checksums: file name -> SHA-256 overriding the table (for a private mirror).
        opener: forwarded to :func:`download_file`.

    Returns:
        Role (``"train_images"``, ...) -> local path.
    """
    if name not in KNOWN_FILES:
        raise ValueError(f"name must be one of {sorted(KNOWN_FILES)}, got {name!r}")
    entry = KNOWN_FILES[name]
    sums = dict(entry["sha256"])
    if checksums is not None:
        sums.update(checksums)
    if base_url is not None:
        if not isinstance(base_url, str) or not base_url.endswith("/"):
            raise ValueError(f"base_url must be a string ending with '/', got {base_url!r}")
        mirrors = (base_url,)
    else:
        mirrors = tuple(entry["mirrors"])
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir()) / name
    paths = {}
    for role, fname in IDX_FILES.items():
        errors = []
        for mirror in mirrors:
            try:
                paths[role] = download_file(mirror + fname, folder / fname, sums[fname],
                                            opener=opener)
                break
            except ValueError:
                raise
            except OSError as exc:          # URLError is an OSError: try the next mirror
                errors.append(f"{mirror}{fname}: {exc}")
        else:
            raise OSError(f"could not download {fname} for {name}:\n  " + "\n  ".join(errors))
    return paths


# ---------------------------------------------------------------------------------------------
# (Fashion-)MNIST loaders
# ---------------------------------------------------------------------------------------------
def _load_idx_split(paths: Mapping[str, Path], *, name, classes, flatten, normalize, val_size,
                    n_train, n_test, seed, source) -> Split:
    check_int(seed, "seed", min_value=0)
    check_choice(normalize, "normalize", _NORMALIZE)
    x_pool, y_pool = _read_pair(paths["train_images"], paths["train_labels"])
    x_test, y_test = _read_pair(paths["test_images"], paths["test_labels"])
    x_test, y_test = _subset_test(x_test, y_test, n_test)
    train, val = _carve(x_pool, y_pool, val_size=val_size, n_train=n_train, seed=seed)
    h, w = x_pool.shape[1:]
    parts, info = _finish_images([train, val, (x_test, y_test)], scale=255.0,
                                 normalize=normalize, flatten=flatten, image_shape=(1, h, w))
    info.update(source=str(source), seed=seed)
    return Split(parts[0], parts[1], parts[2], name=name, num_classes=10, classes=classes, info=info)


def load_fashion_mnist(*, root=None, download: bool = False, cache_dir=None,
                       base_url: str | None = None, flatten: bool = False,
                       normalize: str | None = "unit", val_size=5000,
                       n_train: int | None = None, n_test: int | None = None,
                       seed: int = 0) -> Split:
    """Fashion-MNIST: 70,000 real 28×28 grey images of clothing, 10 classes.

    By default reads the files of Debian's ``dataset-fashion-mnist`` package
    (``/usr/share/datasets/fashion-mnist``, or ``$BNNLAB_FASHION_MNIST``: :func:`fashion_mnist_dir`),
    else the download cache. The official 10,000-image test files are the
    test part; validation is carved from the 60,000 training images.

    Args:
        root: folder holding the four ``*-ubyte.gz`` files. Default: the Debian folder, else
            the download cache when ``download=True``.
        download: if the files are not found, download them into ``cache_dir`` (needs
            internet; checked against :data:`KNOWN_FILES`). Default: ``False``.
        cache_dir: cache root for ``download``. Default: :func:`default_cache_dir`.
        base_url: URL prefix (ending with ``/``) to download from instead of the official
            mirrors; the files are still checked against :data:`KNOWN_FILES`.
        flatten: inputs of shape (N, 784) instead of (N, 1, 28, 28). Default: ``False``.
        normalize: ``"unit"`` ([0, 1]), ``"symmetric"`` ([-1, 1]), ``"standard"`` (train
            mean/std) or ``None`` (raw 0..255). Default: ``"unit"``.
        val_size: validation count (int) or fraction of the 60,000. Default: ``5000``.
        n_train: keep only this many training images (seeded subset). Default: all 55,000.
        n_test: keep only this many test images (a fixed subset, same for every ``seed``).
        seed: seed of the validation split and the ``n_train`` subset. Default: ``0``.

    Raises:
        FileNotFoundError: no files and ``download=False``; the message says
            ``apt-get install dataset-fashion-mnist``.
        ValueError: a downloaded file does not have its SHA-256 (nothing is kept).
    """
    if root is not None:
        folder = Path(root)
    elif all((fashion_mnist_dir() / f).is_file() for f in IDX_FILES.values()):
        folder = fashion_mnist_dir()
    else:
        folder = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "fashion-mnist"
    paths = {role: folder / f for role, f in IDX_FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        if download:
            paths = fetch_idx("fashion-mnist", cache_dir=cache_dir, base_url=base_url)
            folder = paths["train_images"].parent
        else:
            raise FileNotFoundError(
                "Fashion-MNIST files not found: " + ", ".join(missing) + ". Install them with "
                "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu, puts them in "
                f"{DEBIAN_FASHION_MNIST}) or call load_fashion_mnist(download=True).")
    return _load_idx_split(paths, name="fashion-mnist", classes=FASHION_MNIST_CLASSES,
                           flatten=flatten, normalize=normalize, val_size=val_size,
                           n_train=n_train, n_test=n_test, seed=seed, source=folder)


def load_mnist(*, root=None, download: bool = True, cache_dir=None, base_url: str | None = None,
               flatten: bool = False, normalize: str | None = "unit", val_size=5000,
               n_train: int | None = None, n_test: int | None = None, seed: int = 0,
               opener: Callable | None = None) -> Split:
    """MNIST handwritten digits (28×28, 10 classes), from a cache filled by download.

    No Debian package ships MNIST, so the files are downloaded once into
    ``cache_dir / "mnist"`` and verified against the SHA-256 table :data:`KNOWN_FILES`.

    Args:
        root: folder that already holds the four ``*-ubyte.gz`` files (no download, no
            checksum). Default: the cache.
        download: download missing files. Default: ``True``.
        cache_dir: cache root. Default: :func:`default_cache_dir`.
        base_url: URL prefix to download from instead of the known mirrors.
        opener: forwarded to :func:`download_file` (tests use it to stay offline).
        flatten, normalize, val_size, n_train, n_test, seed: as :func:`load_fashion_mnist`.
    """
    if root is not None:
        folder = Path(root)
        paths = {role: folder / f for role, f in IDX_FILES.items()}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise FileNotFoundError("MNIST files not found: " + ", ".join(missing))
    elif download:
        paths = fetch_idx("mnist", cache_dir=cache_dir, base_url=base_url, opener=opener)
        folder = paths["train_images"].parent
    else:
        folder = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "mnist"
        paths = {role: folder / f for role, f in IDX_FILES.items()}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise FileNotFoundError("MNIST files not in the cache: " + ", ".join(missing)
                                    + "; call load_mnist(download=True) once (needs internet).")
    return _load_idx_split(paths, name="mnist", classes=_DIGIT_CLASSES, flatten=flatten,
                           normalize=normalize, val_size=val_size, n_train=n_train,
                           n_test=n_test, seed=seed, source=folder)


# ---------------------------------------------------------------------------------------------
# Synthetic sets
# ---------------------------------------------------------------------------------------------
def _split_synthetic(x: np.ndarray, y: np.ndarray, *, val_size, test_size, seed, name,
                     num_classes, classes=()) -> Split:
    """Generated sets: all parts come from the same seeded draw, cut by one permutation."""
    n = len(x)
    n_test = _resolve_count(test_size, n, "test_size")
    perm = np.random.default_rng(seed + 1).permutation(n)
    test_idx, pool_idx = perm[:n_test], perm[n_test:]
    train, val = _carve(x[pool_idx], y[pool_idx], val_size=val_size, n_train=None, seed=seed)
    ydtype = np.int64 if num_classes is not None else np.float32
    parts = [(torch.from_numpy(np.ascontiguousarray(a, np.float32)),
              torch.from_numpy(np.ascontiguousarray(b, ydtype)))
             for a, b in (train, val, (x[test_idx], y[test_idx]))]
    return Split(parts[0], parts[1], parts[2], name=name, num_classes=num_classes, classes=classes,
                 info={"source": "synthetic", "seed": seed})


def make_moons(n_samples: int = 1000, *, noise: float = 0.1, val_size=0.2, test_size=0.2,
               seed: int = 0) -> Split:
    """Two interleaving half circles in 2-D (scikit-learn's ``make_moons``), 2 classes.

    Args:
        n_samples: total number of points (all three parts). Default: ``1000``.
        noise: standard deviation of Gaussian noise added to the points. Default: ``0.1``.
        val_size, test_size: fractions (or counts) of the validation and test parts.
        seed: seed of the draw and of the split. Default: ``0``.
    """
    from sklearn.datasets import make_moons as _sk_make_moons

    check_int(n_samples, "n_samples", min_value=10)
    check_int(seed, "seed", min_value=0)
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    x, y = _sk_make_moons(n_samples=n_samples, noise=noise, random_state=seed)
    return _split_synthetic(x, y, val_size=val_size, test_size=test_size, seed=seed,
                            name="moons", num_classes=2, classes=("0", "1"))


def make_spirals(n_samples: int = 1000, *, num_classes: int = 2, turns: float = 1.5,
                 noise: float = 0.05, val_size=0.2, test_size=0.2, seed: int = 0) -> Split:
    r"""Interleaved Archimedean spirals in 2-D, one arm per class.

    Point :math:`i` of arm :math:`k` has radius :math:`r = t` and angle
    :math:`\theta = 2\pi(\text{turns}\cdot t + k/K)` with :math:`t \sim U(0.05, 1)`, plus
    Gaussian noise of standard deviation ``noise``.

    Args:
        n_samples: total number of points, split evenly between arms. Default: ``1000``.
        num_classes: number of arms :math:`K`. Default: ``2``.
        turns: turns of each arm. Default: ``1.5``.
        noise: standard deviation of the noise. Default: ``0.05``.
        val_size, test_size, seed: as :func:`make_moons`.
    """
    check_int(n_samples, "n_samples", min_value=10)
    check_int(num_classes, "num_classes", min_value=2)
    check_int(seed, "seed", min_value=0)
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if turns <= 0:
        raise ValueError(f"turns must be > 0, got {turns}")
    rng = np.random.default_rng(seed)
    y = np.arange(n_samples) % num_classes
    t = rng.uniform(0.05, 1.0, size=n_samples)
    theta = 2 * np.pi * (turns * t + y / num_classes)
    x = np.stack([t * np.cos(theta), t * np.sin(theta)], axis=1)
    x = x + noise * rng.standard_normal(x.shape)
    return _split_synthetic(x, y, val_size=val_size, test_size=test_size, seed=seed,
                            name="spirals", num_classes=num_classes,
                            classes=tuple(str(k) for k in range(num_classes)))


def make_regression(n_samples: int = 512, *, noise: float = 0.1, val_size=0.2, test_size=0.2,
                    seed: int = 0) -> Split:
    r"""A 1-D regression curve :math:`y = \sin(3x) + 0.3x + \varepsilon`, :math:`x \sim U(-2, 2)`.

    Targets have shape (N, 1) and dtype float32; ``num_classes`` is ``None``.

    Args:
        n_samples: total number of points. Default: ``512``.
        noise: standard deviation of :math:`\varepsilon`. Default: ``0.1``.
        val_size, test_size, seed: as :func:`make_moons`.
    """
    check_int(n_samples, "n_samples", min_value=10)
    check_int(seed, "seed", min_value=0)
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2.0, 2.0, size=(n_samples, 1))
    y = np.sin(3.0 * x) + 0.3 * x + noise * rng.standard_normal(x.shape)
    return _split_synthetic(x, y, val_size=val_size, test_size=test_size, seed=seed,
                            name="regression", num_classes=None)


# ---------------------------------------------------------------------------------------------
# CIFAR-10 (the official binary version, from the user's folder or archive; no pickle)
# ---------------------------------------------------------------------------------------------
#: The official archive of the binary version, and where Toronto serves it.
CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR10_ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
#: The archive's MD5, the only digest Toronto publishes (https://www.cs.toronto.edu/~kriz/cifar.html).
CIFAR10_ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
#: The archive's size and SHA-256, which Toronto does not publish. The same SHA-256 is recorded
#: by at least four unrelated projects (a Go data downloader, a TensorFlow-Datasets
#: manual-download script that also records the size, a reproducibility protocol that also
#: records the size and Toronto's MD5, and torchvision-ruby's CIFAR-10 loader).
CIFAR10_ARCHIVE_SIZE = 170_052_171
CIFAR10_ARCHIVE_SHA256 = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
#: The folder of the six data files inside the archive.
CIFAR10_DIR = "cifar-10-batches-bin"
#: SHA-256 of each data file of the archive. All six come from torchvision-ruby's CIFAR-10
#: loader; ``test_batch.bin``'s is also recorded by two unrelated projects. The five training
#: files are further checked together by :data:`CIFAR10_TRAIN_SHA256`. Not re-derived here
#: (this environment has no internet); a user whose genuine files are refused can pass
#: ``verify=False`` (and report it).
CIFAR10_FILES: dict[str, str] = {
    "data_batch_1.bin": "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
    "data_batch_2.bin": "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
    "data_batch_3.bin": "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
    "data_batch_4.bin": "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
    "data_batch_5.bin": "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
    "test_batch.bin": "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
}
#: SHA-256 of the 50,000 training records in order (``data_batch_1.bin`` … ``data_batch_5.bin``
#: concatenated), recorded by a reproducibility project, unrelated to torchvision-ruby, that
#: compared every byte of the binary and the python versions. With each file's size fixed,
#: it determines the five training files on its own.
CIFAR10_TRAIN_SHA256 = "a0181da372c0d63a5920fdbea2ec3f83ecbc552d378218e1cb473cf634941a3b"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
_CIFAR_RECORD = 1 + 3 * 32 * 32
#: Size of each official data file: 10,000 records.
CIFAR10_FILE_SIZE = 10_000 * _CIFAR_RECORD
#: Unverified files from an archive: at most this many records per member (10× the official),
#: so that a crafted archive cannot make the reader allocate without bound.
_CIFAR_MAX_RECORDS = 100_000
#: Tar headers read before the six data files must have appeared (the official archive holds
#: nine: the folder, the six data files, ``batches.meta.txt`` and ``readme.html``).
_CIFAR_MAX_MEMBERS = 64
_CHUNK = 1 << 22
_TAR_KINDS = {tarfile.SYMTYPE: "symbolic link", tarfile.LNKTYPE: "hard link",
              tarfile.DIRTYPE: "directory", tarfile.FIFOTYPE: "FIFO",
              tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device",
              tarfile.GNUTYPE_SPARSE: "sparse file"}


def _read_exact(f: IO[bytes], size: int, where: str) -> bytearray:
    """Exactly ``size`` bytes of ``f``, read in chunks, so the memory held grows with the bytes
    actually present (a short stream raises before its declared size is allocated)."""
    buf = bytearray()
    while len(buf) < size:
        chunk = f.read(min(_CHUNK, size - len(buf)))
        if not chunk:
            raise ValueError(f"{where}: truncated, {len(buf)} of its {size} bytes present")
        buf += chunk
    return buf


def _check_record_count(size: int, where: str) -> None:
    if size <= 0 or size % _CIFAR_RECORD:
        raise ValueError(f"{where}: {size} bytes is not a positive multiple of the "
                         f"{_CIFAR_RECORD}-byte CIFAR-10 record")


def _parse_cifar10_records(raw: bytes | bytearray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The one parser of CIFAR-10 binary records (files and archive members alike)."""
    _check_record_count(len(raw), where)
    rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = rec[:, 0].astype(np.int64)
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise ValueError(f"{where}: record {int(bad[0])} has label {int(labels[bad[0]])}, "
                         "outside 0..9")
    return rec[:, 1:].reshape(-1, 3, 32, 32), labels


def read_cifar10_bin(path) -> tuple[np.ndarray, np.ndarray]:
    """Read one file of the CIFAR-10 binary version: records of 1 label byte + 3,072 pixel
    bytes (1,024 red, then green, then blue, row-major 32×32).

    Returns:
        ``(images, labels)``: ``uint8`` of shape (N, 3, 32, 32) and ``int64`` of shape (N,).

    Raises:
        ValueError: an empty file, a size that is not a multiple of 3,073 bytes (checked
            before reading), or a label outside 0..9.
    """
    path = Path(path)
    size = path.stat().st_size
    _check_record_count(size, str(path))
    with open(path, "rb") as f:
        return _parse_cifar10_records(_read_exact(f, size, str(path)), str(path))


def write_cifar10_bin(path, images, labels) -> Path:
    """Write ``images`` (uint8, (N, 3, 32, 32)) and ``labels`` (0..9) in the binary format of
    :func:`read_cifar10_bin` (for tests and for exporting a subset)."""
    x = np.asarray(images)
    y = np.asarray(labels)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (3, 32, 32):
        raise ValueError(f"images must be uint8 of shape (N, 3, 32, 32), got {x.dtype} {x.shape}")
    if y.shape != (x.shape[0],) or (y.size and (y.min() < 0 or y.max() > 9)):
        raise ValueError("labels must be N integers in 0..9")
    rec = np.concatenate([y.astype(np.uint8)[:, None], x.reshape(len(x), -1)], axis=1)
    path = Path(path)
    rec.tofile(path)
    return path


def _cifar_source(root) -> tuple[str, Path]:
    """Where ``root`` points: ``("folder", dir)`` holding the six files, or ``("archive", file)``.

    A folder's files (in it or in its ``cifar-10-batches-bin``) win over an archive beside them.
    """
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path (str or os.PathLike), got {type(root).__name__}")
    path = Path(root)
    if path.is_file():
        return "archive", path
    if not path.is_dir():
        raise FileNotFoundError(f"root: {path} is neither a folder nor the {CIFAR10_ARCHIVE} "
                                "archive")
    for folder in (path, path / CIFAR10_DIR):
        if all((folder / name).is_file() for name in CIFAR10_FILES):
            return "folder", folder
    if (path / CIFAR10_ARCHIVE).is_file():
        return "archive", path / CIFAR10_ARCHIVE
    folder = path / CIFAR10_DIR if (path / CIFAR10_DIR).is_dir() else path
    missing = [name for name in CIFAR10_FILES if not (folder / name).is_file()]
    raise FileNotFoundError(
        f"root: CIFAR-10 binary files not found in {folder}: {', '.join(missing)}, and no "
        f"{CIFAR10_ARCHIVE} in {path}. Download {CIFAR10_ARCHIVE} from "
        "https://www.cs.toronto.edu/~kriz/cifar.html and pass its path (or its folder, or the "
        "folder it extracts to).")


def _cifar_read_folder(folder: Path, verify: bool) -> dict[str, bytearray]:
    """The six files' bytes, each read once; sizes checked before reading, digests after."""
    sizes = {name: (folder / name).stat().st_size for name in CIFAR10_FILES}
    for name, size in sizes.items():
        if verify and size != CIFAR10_FILE_SIZE:
            raise ValueError(f"root: {folder / name} is {size} bytes, the official file "
                             f"{CIFAR10_FILE_SIZE}; pass verify=False to use it anyway")
        _check_record_count(size, f"root: {folder / name}")
    raw = {}
    for name, size in sizes.items():
        with open(folder / name, "rb") as f:
            raw[name] = _read_exact(f, size, f"root: {folder / name}")
    if verify:
        _verify_cifar_files(raw, folder)
    return raw


def _verify_cifar_files(raw: Mapping[str, bytes | bytearray], folder: Path) -> None:
    """Each file against :data:`CIFAR10_FILES`, the training files in order against
    :data:`CIFAR10_TRAIN_SHA256` (one hash object fed file after file)."""
    got = {name: hashlib.sha256(raw[name]).hexdigest() for name in CIFAR10_FILES}
    train = hashlib.sha256()
    for i in range(1, 6):
        train.update(raw[f"data_batch_{i}.bin"])
    train_got = train.hexdigest()
    for name, want in CIFAR10_FILES.items():
        if got[name] != want:
            note = ""
            if name != "test_batch.bin" and train_got == CIFAR10_TRAIN_SHA256:
                note = (" (yet the five training files together match the independently "
                        "recorded digest of the training set, so bnnlab's entry for this file "
                        "may be the error: please report it)")
            raise ValueError(f"root: {folder / name}: SHA-256 {got[name]} differs from the "
                             f"official {want}{note}; pass verify=False to use these files "
                             "anyway")
    if train_got != CIFAR10_TRAIN_SHA256:
        raise ValueError(f"root: {folder}: data_batch_1.bin ... data_batch_5.bin concatenated "
                         f"have SHA-256 {train_got}, the official training set "
                         f"{CIFAR10_TRAIN_SHA256}; pass verify=False to use these files anyway")


def _cifar_read_archive(path: Path, verify: bool) -> dict[str, bytearray]:
    """The six data members of ``cifar-10-binary.tar.gz``, read into memory from one open file:
    with ``verify`` its size, SHA-256 and MD5 are checked first (streamed), then the same file
    is read again as a tar stream."""
    with open(path, "rb") as f:
        if verify:
            size = os.fstat(f.fileno()).st_size
            if size != CIFAR10_ARCHIVE_SIZE:
                raise ValueError(f"root: {path} is {size} bytes, the official {CIFAR10_ARCHIVE} "
                                 f"{CIFAR10_ARCHIVE_SIZE}; pass verify=False to use it anyway")
            sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
            for chunk in iter(lambda: f.read(1 << 20), b""):
                sha.update(chunk)
                md5.update(chunk)
            for algo, got, want in (("SHA-256", sha.hexdigest(), CIFAR10_ARCHIVE_SHA256),
                                    ("MD5", md5.hexdigest(), CIFAR10_ARCHIVE_MD5)):
                if got != want:
                    raise ValueError(f"root: {path}: {algo} {got} differs from the official "
                                     f"{CIFAR10_ARCHIVE}'s {want}; pass verify=False to use "
                                     "it anyway")
            f.seek(0)
        return _cifar_members(f, path, verify)


def _cifar_members(fileobj: IO[bytes], path: Path, verify: bool) -> dict[str, bytearray]:
    """Read ``cifar-10-batches-bin/<file>`` for the six data files from a gzipped tar stream.

    Member names are only compared with those six (nothing is written to disk); every other
    member is skipped unread. A wanted name must be a regular file of a valid size (exactly
    :data:`CIFAR10_FILE_SIZE` with ``verify``), checked before its data is read.
    """
    wanted = {f"{CIFAR10_DIR}/{name}": name for name in CIFAR10_FILES}
    limit = CIFAR10_FILE_SIZE if verify else _CIFAR_MAX_RECORDS * _CIFAR_RECORD
    raw: dict[str, bytearray] = {}
    reading = ""                                    # the member being read, for messages
    try:
        with tarfile.open(fileobj=fileobj, mode="r|gz") as tar:
            for count, member in enumerate(tar, 1):
                if count > _CIFAR_MAX_MEMBERS:
                    raise ValueError(f"root: {path}: more than {_CIFAR_MAX_MEMBERS} members "
                                     "before the six data files; not a CIFAR-10 archive")
                name = wanted.get(member.name)
                if name is None:
                    continue
                where = f"root: {path} member {member.name}"
                if name in raw:
                    raise ValueError(f"{where} appears twice")
                if not member.isreg() or member.issparse():
                    kind = _TAR_KINDS.get(member.type, f"member of type {member.type!r}")
                    raise ValueError(f"{where} is a {kind}, not a regular file")
                if verify and member.size != CIFAR10_FILE_SIZE:
                    raise ValueError(f"{where} is {member.size} bytes, the official file "
                                     f"{CIFAR10_FILE_SIZE}; pass verify=False to use it anyway")
                _check_record_count(member.size, where)
                if member.size > limit:
                    raise ValueError(f"{where} declares {member.size} bytes, more than "
                                     f"{_CIFAR_MAX_RECORDS} records; refused")
                data = tar.extractfile(member)
                if data is None:                    # unreachable for a regular member
                    raise ValueError(f"{where} cannot be read")
                reading = member.name
                raw[name] = _read_exact(data, member.size, where)
                reading = ""
                if len(raw) == len(wanted):
                    break
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        if reading:
            raise ValueError(f"root: {path} member {reading}: truncated or damaged "
                             f"({exc})") from exc
        raise ValueError(f"root: {path} is not a readable gzip-compressed tar archive "
                         f"({exc})") from exc
    missing = [m for m, name in wanted.items() if name not in raw]
    if missing:
        raise ValueError(f"root: {path} lacks the member(s) {', '.join(missing)}")
    return raw


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std of the uint8 images ``x`` (N, C, H, W) scaled to
    [0, 1], from exact integer sums (a zero std counts as 1). No float copy of ``x`` is made:
    on CIFAR-10 the direct float64 formula held 2.7 GB at its peak."""
    mean, std = [], []
    for c in range(x.shape[1]):
        v = x[:, c]
        n = v.size
        s1 = int(v.sum(dtype=np.int64))
        s2 = int((v.astype(np.uint16) ** 2).sum(dtype=np.int64))      # 255² fits in uint16
        mean.append(s1 / n / 255.0)
        std.append(math.sqrt((n * s2 - s1 * s1) / (n * n)) / 255.0)    # exact, then rounded
    sd = np.asarray(std)
    return np.asarray(mean), np.where(sd > 0, sd, 1.0)


def _affine(x: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``x * scale[c] + shift[c]`` per channel, in float32, in place on one copy of ``x``."""
    out = x.astype(np.float32)
    out *= scale.astype(np.float32)[None, :, None, None]
    out += shift.astype(np.float32)[None, :, None, None]
    return out


def load_cifar10(root, *, verify: bool = True, normalize: str | None = "channel",
                 val_size=0.1, n_train: int | None = None, n_test: int | None = None,
                 seed: int = 0) -> Split:
    """CIFAR-10 (32×32 colour images, 10 classes) from the official *binary* version.

    ``root`` is one of: the archive ``cifar-10-binary.tar.gz`` itself (read in memory, never
    extracted); a folder holding ``data_batch_1.bin`` … ``data_batch_5.bin`` and
    ``test_batch.bin`` (directly or in its ``cifar-10-batches-bin``), as extracted from the
    archive; or a folder holding only the archive. Nothing is downloaded and nothing is
    unpickled (the "python version" of the archive is pickle and is not read).

    Verification (``verify=True``), every digest compared before any record is used:

    * the archive: its size (:data:`CIFAR10_ARCHIVE_SIZE`), its MD5 (:data:`CIFAR10_ARCHIVE_MD5`,
      the one Toronto publishes) and its SHA-256 (:data:`CIFAR10_ARCHIVE_SHA256`, recorded by
      four unrelated projects), streamed before the tar is opened; its six data members must
      then be regular files of 30,730,000 bytes;
    * extracted files: each file's size (30,730,000 bytes) and SHA-256
      (:data:`CIFAR10_FILES`, from torchvision-ruby; ``test_batch.bin``'s also from two
      unrelated projects), and the five training files concatenated in order
      (:data:`CIFAR10_TRAIN_SHA256`, from a reproducibility project unrelated to
      torchvision-ruby).

    Args:
        root: the archive or a folder (``--data-root`` on the command line).
        verify: check sizes and digests as above and refuse a mismatch. Default: ``True``.
            With ``False`` any files in the format are read (archive members: a positive
            multiple of 3,073 bytes, at most 100,000 records each).
        normalize: ``"channel"`` (per-channel mean and std of the train part, the standard
            CIFAR preprocessing), ``"unit"`` ([0, 1]), ``"symmetric"`` ([-1, 1]) or ``None``
            (raw 0..255). Default: ``"channel"``.
        val_size: validation count or fraction of the 50,000 training images. Default: ``0.1``
            (5,000 images).
        n_train: keep only this many training images. n_test: a fixed subset of the test part.
        seed: seed of the validation split and the ``n_train`` subset. Default: ``0``.

    Augmentation (random crop with 4-pixel padding, horizontal flip) is applied per batch while
    training: ``fit(..., augment=data.augment_crop_flip)``.

    Raises:
        FileNotFoundError: ``root`` does not exist, or a folder holds neither the six files nor
        the archive. ValueError (naming ``root`` and the file or archive member): a size or
        digest mismatch (with ``verify=True``); a missing, duplicated, non-regular (link,
        directory, device) or oversized archive member; a damaged archive; a size that is not a
        multiple of 3,073 bytes; a label outside 0..9.
    """
    verify = check_bool(verify, "verify")
    check_choice(normalize, "normalize", ("channel", "unit", "symmetric", None))
    check_int(seed, "seed", min_value=0)
    kind, where = _cifar_source(root)
    if kind == "archive":
        raw = _cifar_read_archive(where, verify)
        label = {name: f"root: {where} member {CIFAR10_DIR}/{name}" for name in CIFAR10_FILES}
    else:
        raw = _cifar_read_folder(where, verify)
        label = {name: f"root: {where / name}" for name in CIFAR10_FILES}
    parts = [_parse_cifar10_records(raw[f"data_batch_{i}.bin"], label[f"data_batch_{i}.bin"])
             for i in range(1, 6)]
    x_test, y_test = _parse_cifar10_records(raw["test_batch.bin"], label["test_batch.bin"])
    x_pool = np.concatenate([p[0] for p in parts])
    y_pool = np.concatenate([p[1] for p in parts])
    del parts, raw
    x_test, y_test = _subset_test(x_test, y_test, n_test)
    train, val = _carve(x_pool, y_pool, val_size=val_size, n_train=n_train, seed=seed)
    info: dict = {"source": str(where), "format": kind, "seed": seed, "verified": verify}
    if normalize == "channel":
        mean, std = _channel_stats(train[0])
        out = [(torch.from_numpy(_affine(x, 1.0 / (255.0 * std), -mean / std)),
                torch.from_numpy(y.astype(np.int64))) for x, y in (train, val, (x_test, y_test))]
        info.update(normalize="channel", mean=mean.tolist(), std=std.tolist())
    else:
        out, extra = _finish_images([train, val, (x_test, y_test)], scale=255.0,
                                    normalize=normalize, flatten=False, image_shape=(3, 32, 32))
        info.update(extra)
    return Split(out[0], out[1], out[2], name="cifar10", num_classes=10, classes=CIFAR10_CLASSES, info=info)


def augment_crop_flip(x: Tensor, generator: torch.Generator | None = None, *,
                      padding: int = 4) -> Tensor:
    """Standard CIFAR augmentation of a batch: random crop of the image padded by ``padding``
    zeros on each side (zero = the mean after per-channel normalisation), then a horizontal
    flip with probability 1/2; one draw per sample from ``generator``.

    Args:
        x: images (N, C, H, W).
        generator: the random source (:func:`bnnlab.train.fit` passes its shuffling generator,
            which its checkpoints save, so resumed runs draw the same crops).
        padding: pixels of padding. Default: ``4``.
    """
    padding = check_int(padding, "padding", min_value=0)
    if not isinstance(x, Tensor) or x.ndim != 4:
        raise ValueError("x must be a tensor of shape (N, C, H, W)")
    n, _, h, w = x.shape
    off = torch.randint(0, 2 * padding + 1, (2, n), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    rows = (off[0][:, None] + torch.arange(h)).to(x.device)
    cols = (off[1][:, None] + torch.arange(w)).to(x.device)
    cols = torch.where(flip.to(x.device)[:, None], cols.flip(1), cols)
    idx = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------------------------------------
# By name
# ---------------------------------------------------------------------------------------------
#: name -> loader, for :func:`load`, ``python -m bnnlab train --data`` and run specs.
DATASETS: dict[str, Callable[..., Split]] = {
    "digits": load_digits,
    "fashion-mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "moons": make_moons,
    "spirals": make_spirals,
    "regression": make_regression,
    "cifar10": load_cifar10,
}


def load(name: str, **kwargs) -> Split:
    """Load the data set ``name`` (a key of :data:`DATASETS`) with the loader's ``kwargs``.

    ``root`` is accepted as an alias of the loaders' data-directory argument.
    """
    check_choice(name, "name", DATASETS)
    return DATASETS[name](**kwargs)
