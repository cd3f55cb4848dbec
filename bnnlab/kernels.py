r"""Packed-bit XNOR-popcount kernels on the CPU: the public face of ``ext/``.

This module is the only importer of the compiled ``bnnlab._kernels``.  It validates every
argument (raising :class:`ValueError` / :class:`TypeError` that name the argument),
converts NumPy arrays and CPU tensors (zero-copy when they are already C-contiguous with a
supported dtype; **non-contiguous views are copied**), allocates the outputs and only then
calls into ``nogil`` C code, which trusts its caller.

Notation: :math:`x_b = \operatorname{sign}(x) \in \{-1, +1\}` with **sign(0) = +1**;
:math:`K` the reduction length (``in_features``, or ``C_in * k_h * k_w`` for a conv).

Bit layout (as larq-compute-engine): element ``j`` of a row lives in word ``j // 64``, bit
``j % 64`` (least significant first) along the reduction axis; bit 1 :math:`\Leftrightarrow`
value :math:`-1` (:math:`x < 0`); the padding bits past :math:`K` are 0 in both operands, so

.. math::
    \langle a_b, b_b \rangle = K - 2\,\operatorname{popcount}(a \oplus b).

Conv activations are packed **NHWC**: for each pixel, the ``C`` channel bits fill
``ceil(C / 64)`` words (:class:`PackedActivations`, words of shape ``(N, H, W, ceil(C/64))``);
conv weights are packed per ``(out_channel, k_h, k_w)`` over ``C_in``
(:class:`PackedConvWeights`, words of shape ``(O, k_h, k_w, ceil(C/64))``).

Everything here is inference-only: no autograd, no surrogate gradient (the layers in
:mod:`bnnlab.layers` carry those).  Results do not depend on the number of threads or on
the instruction set used (AVX-512 VPOPCNTDQ, AVX2, POPCNT or portable C, picked at run time;
see :func:`kernel_info`).

Threads: every kernel takes ``n_threads`` (an upper bound: tiny problems use fewer);
``None`` means :func:`get_num_threads`, which follows ``torch.get_num_threads()`` unless
:func:`set_num_threads` was called.  The work runs on bnnlab's own thread pool, in which the
caller never waits for a thread that has not started (so a core busy with torch's spinning
OpenMP workers or another process costs speed, not a stall); idle workers sleep after ~50 us.
``BNNLAB_THREADING=openmp`` selects an OpenMP loop instead (ext/README.md, "Threads").

References:
    Rastegari et al., "XNOR-Net", ECCV 2016.  Hubara et al., "Binarized Neural Networks",
    NeurIPS 2016.  Bannink et al., "Larq Compute Engine", MLSys 2021 (bit layout, padding).
    Zhang et al., "daBNN", ACM MM 2019 (packed binary conv on CPUs).
"""
from __future__ import annotations

import numbers
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# bnnlab/__init__ runs _check_build first, which explains a missing or stale build
from bnnlab import _kernels
from bnnlab._validation import check_array, check_int

__all__ = [
    "WORD_BITS",
    "n_words",
    "PackedBits",
    "PackedActivations",
    "PackedConvWeights",
    "pack_signs",
    "unpack_signs",
    "pack_nhwc",
    "unpack_nhwc",
    "pack_rows_affine",
    "pack_nhwc_affine",
    "MaxPoolSpec",
    "prepare_maxpool2d",
    "maxpool2d_packed",
    "flatten_nhwc",
    "pack_conv_weights",
    "unpack_conv_weights",
    "xnor_matmul",
    "binary_matmul",
    "Thresholds",
    "prepare_thresholds",
    "Affine",
    "prepare_affine",
    "matmul_threshold",
    "matmul_affine",
    "conv2d_packed",
    "conv2d_threshold",
    "conv2d_affine",
    "binary_conv2d",
    "zero_padding_correction",
    "Conv2dPlan",
    "prepare_conv2d",
    "MatmulPlan",
    "prepare_matmul",
    "PackPlan",
    "prepare_pack_nhwc",
    "set_num_threads",
    "get_num_threads",
    "kernel_info",
]

#: an int or an ``(h, w)`` pair (stride, padding, kernel size)
IntPair = int | tuple[int, int] | list[int]

WORD_BITS = 64
_MAX_THREADS = 256          # the C side keeps per-thread flags for at most 256 threads
_MAX_K = 2**31 - 1          # dot products are int32
_ISA_NAMES = _kernels.LEVEL_NAMES   # ("portable", "popcnt", "avx2", "avx512")
_num_threads: int | None = None     # set_num_threads(); None: follow torch


def n_words(k: int) -> int:
    """Number of 64-bit words that hold ``k`` bits: ``ceil(k / 64)``."""
    return -(-int(k) // WORD_BITS)


def _last_word_mask(k: int) -> np.uint64:
    used = k % WORD_BITS
    return np.uint64(0xFFFFFFFFFFFFFFFF if used == 0 else (1 << used) - 1)


def _validated_words(words: Any, ndim: int, what: str, count: int, count_name: str) -> np.ndarray:
    """A read-only copy of ``words`` after checking its type, layout and bit count.

    The copy (made read-only) keeps the invariant checked here (padding bits 0) from being
    broken later through the caller's array."""
    check_array(words, "words", dtype=np.uint64, ndim=ndim, layout=what, c_contiguous=True,
                min_size=1)
    if words.shape[-1] != n_words(count):
        raise ValueError(f"words has {words.shape[-1]} words in its last axis; "
                         f"{count_name}={count} needs {n_words(count)}")
    _check_padding_bits(words[..., -1], count, "words")
    out = words.copy()
    out.setflags(write=False)
    return out


def _read_only(words: np.ndarray) -> np.ndarray:
    """``words`` (made by bnnlab itself) as a read-only view: no copy, O(1)."""
    if words.flags.writeable:
        words = words.view()
        words.setflags(write=False)
    return words


def _check_padding_bits(last_words: np.ndarray, k: int, what: str) -> None:
    mask = _last_word_mask(k)
    if mask != np.uint64(0xFFFFFFFFFFFFFFFF) and np.any(last_words & ~mask):
        raise ValueError(
            f"{what}: padding bits past {k} must be 0 (the kernels rely on it: "
            "dot = K - 2*popcount(a XOR b))"
        )


# ----------------------------------------------------------------------------- containers
@dataclass(frozen=True, eq=False)
class PackedBits:
    r"""Rows of :math:`\pm 1` values, 64 per ``uint64`` word, with their unpacked length ``k``.

    Row ``r``, element ``j`` is bit ``j % 64`` of ``words[r, j // 64]``; bit 1 means -1.
    Bits past ``k`` are 0 (checked on construction).  Packed weights of a linear layer with
    ``in_features = k`` occupy exactly ``ceil(k / 64) * 8`` bytes per output row.

    Args:
        words: ``uint64`` array of shape ``(rows, ceil(k / 64))``, C-contiguous, rows >= 1.
        k: the unpacked row length, >= 1.

    Shape:
        ``shape == (rows, k)`` is the logical (unpacked) shape.

    Examples::

        >>> p = pack_signs(np.array([[0.5, -2.0, 0.0]], dtype=np.float32))
        >>> p.words, p.k, p.shape, p.nbytes
        (array([[2]], dtype=uint64), 3, (1, 3), 8)
    """

    words: np.ndarray
    k: int

    def __post_init__(self) -> None:
        k = check_int(self.k, "k", min_value=1, max_value=_MAX_K)
        words = _validated_words(self.words, 2, "(rows, ceil(k/64))", k, "k")
        object.__setattr__(self, "k", k)
        object.__setattr__(self, "words", words)

    @classmethod
    def trusted(cls, words: np.ndarray, k: int) -> PackedBits:
        """Wrap ``words`` **without any check**: the caller guarantees the invariants.

        For code that produced or re-laid valid words itself (used by :mod:`bnnlab.packed`
        for reshaped kernel outputs): ``words`` a C-contiguous native ``uint64`` array
        ``(rows >= 1, ceil(k / 64))``, ``1 <= k < 2**31`` an int, every bit past ``k`` 0.
        Anything else gives wrong results or worse in the kernels.  User data goes through
        ``PackedBits(words, k)``, which checks all of this.
        """
        obj = object.__new__(cls)
        object.__setattr__(obj, "words", _read_only(words))
        object.__setattr__(obj, "k", k)
        return obj

    @property
    def rows(self) -> int:
        """Number of packed rows."""
        return self.words.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        """Logical shape ``(rows, k)``."""
        return (self.rows, self.k)

    @property
    def nbytes(self) -> int:
        """Bytes held by the words: ``rows * ceil(k / 64) * 8``."""
        return self.words.nbytes

    def __repr__(self) -> str:
        return f"PackedBits(rows={self.rows}, k={self.k}, nbytes={self.nbytes})"


@dataclass(frozen=True, eq=False)
class PackedActivations:
    r"""A batch of :math:`\pm 1` feature maps packed NHWC along the channels.

    Pixel ``(n, y, x)``, channel ``c`` is bit ``c % 64`` of ``words[n, y, x, c // 64]``;
    bit 1 means -1; bits past ``channels`` are 0 (checked).

    Args:
        words: ``uint64`` array ``(N, H, W, ceil(C / 64))``, C-contiguous.
        channels: ``C``, >= 1.

    Shape:
        ``shape == (N, C, H, W)``, the logical NCHW shape (as torch).
    """

    words: np.ndarray
    channels: int

    def __post_init__(self) -> None:
        c = check_int(self.channels, "channels", min_value=1)
        words = _validated_words(self.words, 4, "(N, H, W, ceil(C/64))", c, "channels")
        object.__setattr__(self, "channels", c)
        object.__setattr__(self, "words", words)

    @classmethod
    def trusted(cls, words: np.ndarray, channels: int) -> PackedActivations:
        """Wrap ``words`` **without any check**: the caller guarantees the invariants.

        For code that produced valid words itself (used by :mod:`bnnlab.packed`):
        ``words`` a C-contiguous native ``uint64`` array ``(N, H, W, ceil(channels / 64))``
        with every dimension >= 1, ``channels >= 1`` an int, every bit past ``channels`` 0.
        User data goes through ``PackedActivations(words, channels)``, which checks it.
        """
        obj = object.__new__(cls)
        object.__setattr__(obj, "words", _read_only(words))
        object.__setattr__(obj, "channels", channels)
        return obj

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Logical shape ``(N, C, H, W)``."""
        n, h, w, _ = self.words.shape
        return (n, self.channels, h, w)

    @property
    def nbytes(self) -> int:
        """Bytes held by the words: ``N * H * W * ceil(C / 64) * 8``."""
        return self.words.nbytes

    def __repr__(self) -> str:
        return f"PackedActivations(shape={self.shape}, nbytes={self.nbytes})"


@dataclass(frozen=True, eq=False)
class PackedConvWeights:
    r"""Binary conv weights packed per ``(out_channel, k_h, k_w)`` over the input channels.

    Weight ``(o, c, dy, dx)`` is bit ``c % 64`` of ``words[o, dy, dx, c // 64]``; bit 1 means
    -1; bits past ``in_channels`` are 0 (checked).  Memory: ``k_h * k_w * ceil(C/64) * 8``
    bytes per output channel (the kernel builds a transient, same-size transposed copy per
    call; nothing else is cached).

    Args:
        words: ``uint64`` array ``(O, k_h, k_w, ceil(C / 64))``, C-contiguous.
        in_channels: ``C``, >= 1.

    Shape:
        ``shape == (O, C, k_h, k_w)``, the logical torch weight shape.
    """

    words: np.ndarray
    in_channels: int

    def __post_init__(self) -> None:
        c = check_int(self.in_channels, "in_channels", min_value=1)
        words = _validated_words(self.words, 4, "(O, kh, kw, ceil(C/64))", c, "in_channels")
        object.__setattr__(self, "in_channels", c)
        object.__setattr__(self, "words", words)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Logical shape ``(O, C, k_h, k_w)``."""
        o, kh, kw, _ = self.words.shape
        return (o, self.in_channels, kh, kw)

    @property
    def out_channels(self) -> int:
        return self.words.shape[0]

    @property
    def kernel_size(self) -> tuple[int, int]:
        return (self.words.shape[1], self.words.shape[2])

    @property
    def nbytes(self) -> int:
        """Bytes held by the words: ``O * k_h * k_w * ceil(C / 64) * 8``."""
        return self.words.nbytes

    def __repr__(self) -> str:
        return f"PackedConvWeights(shape={self.shape}, nbytes={self.nbytes})"


# ----------------------------------------------------------------------------- conversions
def _torch() -> Any:
    return sys.modules.get("torch")


_DTYPE_CHARS = {"f": "float32", "d": "float64", "b": "int8", "?": "bool"}


def _tensor_to_numpy(x: Any, name: str) -> np.ndarray:
    torch = _torch()
    if not x.is_cpu:
        raise ValueError(f"{name} must be a CPU tensor, got device {x.device}")
    if x.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {x.layout}")
    if x.dtype not in (torch.float32, torch.float64, torch.int8, torch.bool):
        raise TypeError(f"{name} has dtype {x.dtype}; expected torch.float32, float64, int8 or bool")
    if x.requires_grad:
        x = x.detach()
    if x.is_conj() or x.is_neg():
        x = x.resolve_conj().resolve_neg()
    return x.numpy()


def _as_real(x: Any, name: str, ndim: int, layout: str) -> np.ndarray:
    """``x`` as a C-contiguous ``ndim``-D array of float32/float64/int8/uint8(bool)."""
    if type(x) is not np.ndarray:
        torch = _torch()
        if torch is not None and isinstance(x, torch.Tensor):
            x = _tensor_to_numpy(x, name)
        elif isinstance(x, np.ndarray):
            x = np.asarray(x)                  # ndarray subclasses (e.g. np.matrix): plain view
        elif isinstance(x, (PackedBits, PackedActivations, PackedConvWeights)):
            raise TypeError(f"{name} is already packed ({type(x).__name__}); pass real values")
        else:
            raise TypeError(f"{name} must be a numpy.ndarray or torch.Tensor, got {type(x).__name__}")
    dt = x.dtype
    if dt.char not in _DTYPE_CHARS:
        raise TypeError(f"{name} has dtype {dt}; expected float32, float64, int8 or bool")
    if not dt.isnative:
        x = x.astype(dt.newbyteorder("="))
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}, got shape {tuple(x.shape)}")
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)            # non-contiguous views are copied
    if dt.char == "?":
        x = x.view(np.uint8)                   # C side: bit = (x == 0): True means +1
    return x


def _pack_rows(arr: np.ndarray, name: str, nt: int) -> PackedBits:
    """Pack a validated 2-D array (output of _as_real) into trusted PackedBits."""
    rows, k = arr.shape
    if k > _MAX_K:
        raise ValueError(f"{name} has k={k} columns; at most 2**31 - 1 are supported")
    out = np.empty((rows, (k + 63) >> 6), np.uint64)
    if _kernels.pack_rows(arr, out, nt):
        raise _nonfinite_error(name)
    return PackedBits.trusted(out, k)


def _check_strict(arr: np.ndarray, name: str) -> None:
    if arr.dtype == np.uint8:  # bool: binary by construction
        return
    ok = (arr == 1) | (arr == -1)
    if not ok.all():
        idx = tuple(int(i) for i in np.argwhere(~ok)[0])
        raise ValueError(
            f"{name} must contain only -1 and +1 when strict=True; found {arr[idx]!r} at index {idx}"
        )


def _nonfinite_error(name: str) -> ValueError:
    return ValueError(f"{name} contains NaN or inf (NaN would silently pack as +1)")


def _as_vector(v: Any, name: str, n: int, *, allow_inf: bool = False) -> np.ndarray:
    """A real scalar (broadcast) or 1-D array of length ``n`` as float64."""
    torch = _torch()
    if torch is not None and isinstance(v, torch.Tensor):
        if v.device.type != "cpu":
            raise ValueError(f"{name} must be a CPU tensor, got device {v.device}")
        if v.dtype == torch.bool or v.is_complex():
            raise TypeError(f"{name} must be real numbers (float or int), got {v.dtype}")
        v = v.detach().to(torch.float64).numpy()
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be real numbers, got a bool")
    try:
        arr = np.asarray(v)
    except Exception as exc:  # pragma: no cover - exotic objects
        raise TypeError(f"{name} must be a real scalar or 1-D array: {exc}") from exc
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be real numbers (float or int), got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got {tuple(arr.shape)}")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    if not allow_inf and np.isinf(arr).any():
        raise ValueError(f"{name} contains inf")
    return np.ascontiguousarray(arr)


def _as_flags(v: Any, name: str, n: int) -> np.ndarray:
    if v is None:
        return np.zeros(n, np.uint8)
    torch = _torch()
    if torch is not None and isinstance(v, torch.Tensor):
        if v.device.type != "cpu":
            raise ValueError(f"{name} must be a CPU tensor, got device {v.device}")
        v = v.detach().cpu().numpy()
    arr = np.asarray(v)
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    elif arr.dtype.kind in "iu":
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must hold booleans (or 0/1)")
        arr = arr.astype(np.uint8)
    else:
        raise TypeError(f"{name} must be booleans, got dtype {arr.dtype}")
    if arr.ndim == 0:
        arr = np.full(n, arr, np.uint8)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got {tuple(arr.shape)}")
    return np.ascontiguousarray(arr)


@dataclass(frozen=True, eq=False)
class Thresholds:
    r"""Per-output-channel thresholds prepared for the fused sign epilogue (reusable).

    Built by :func:`prepare_thresholds`; pass it as ``threshold`` to :func:`matmul_threshold`
    or :func:`conv2d_threshold` (with ``flip=None``) to skip the per-call conversion.  It holds
    the exact integer form of the test: output channel ``c`` is -1 iff
    ``(popcount mismatches > lim[c]) XOR flip[c]``.

    Attributes:
        lim: int64 ``(channels,)``.  flipw: uint64 ``(ceil(channels / 64),)``, bit ``c`` =
        flip of channel ``c``.  channels: number of output channels.  k: reduction length
        the limits were computed for (``in_features`` or ``C_in * k_h * k_w``).
        int_threshold: int64 ``(channels,)``, the integer threshold ``t`` (+1 iff ``d >= t``,
        ``d <= t`` where flipped; what zero-padded convs test).  flip: bool ``(channels,)``.
    """

    lim: np.ndarray
    flipw: np.ndarray
    channels: int
    k: int
    int_threshold: np.ndarray
    flip: np.ndarray


def prepare_thresholds(threshold: Any, flip: Any = None, *, channels: int, k: int) -> Thresholds:
    r"""Convert real thresholds (and flips) to the integer test the kernels run.

    Output channel ``c`` is +1 iff ``d >= threshold[c]`` (``d <= threshold[c]`` where
    ``flip[c]``), ``d`` the integer ±1 dot product of length ``k``: since ``d`` is an integer,
    ``d >= tau`` iff ``d >= ceil(tau)``, exactly.

    Args:
        threshold: scalar or ``(channels,)`` reals; ±inf allowed, NaN not.
        flip: ``None`` or scalar / ``(channels,)`` booleans.
        channels: number of output channels (``b.rows`` / ``O``), >= 1.
        k: reduction length (``in_features``, or ``C_in * k_h * k_w``), >= 1.
    """
    n = check_int(channels, "channels", min_value=1)
    K = check_int(k, "k", min_value=1)
    thr = _as_vector(threshold, "threshold", n, allow_inf=True)
    fl = _as_flags(flip, "flip", n)
    flb = fl.view(np.bool_)
    t = np.clip(np.where(flb, np.floor(thr), np.ceil(thr)), -K - 1, K + 1).astype(np.int64)
    lim = np.where(flb, (K - t - 1) // 2, (K - t) // 2).astype(np.int64)
    flipw = np.zeros(n_words(n) * 8, np.uint8)
    packed = np.packbits(fl, bitorder="little")
    flipw[: packed.size] = packed
    return Thresholds(np.ascontiguousarray(lim), flipw.view("<u8").astype(np.uint64), n, K, t,
                      flb.copy())


def _limits(threshold: Any, flip: Any, n: int, K: int) -> tuple[np.ndarray, np.ndarray]:
    """(lim, flipw) for the BITS epilogue from reals or a prepared :class:`Thresholds`."""
    if isinstance(threshold, Thresholds):
        if flip is not None:
            raise ValueError("flip must be None when threshold is a prepared Thresholds")
        if threshold.channels != n or threshold.k != K:
            raise ValueError(
                f"threshold was prepared for channels={threshold.channels}, k={threshold.k}; "
                f"this layer has channels={n}, k={K}"
            )
        return threshold.lim, threshold.flipw
    th = prepare_thresholds(threshold, flip, channels=n, k=K)
    return th.lim, th.flipw


def _as_f32_vector(v: Any, name: str, n: int) -> np.ndarray:
    if type(v) is np.ndarray and v.dtype == np.float32 and v.shape == (n,) and v.flags.c_contiguous:
        arr = v                                        # fast path: nothing to convert
    else:
        arr = _as_vector(v, name, n).astype(np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite (in float32)")
    return arr


@dataclass(frozen=True, eq=False)
class Affine:
    r"""A per-channel float32 affine map ``x * scale + offset``, validated once (reusable).

    Built by :func:`prepare_affine`; pass it in place of the scale (``alpha`` / ``scale``)
    argument of :func:`matmul_affine`, :func:`conv2d_affine`, :func:`pack_rows_affine` or
    :func:`pack_nhwc_affine` (with the offset / bias argument ``None``) to skip the per-call
    conversion and finiteness checks.

    Attributes:
        scale, offset: finite float32 ``(channels,)``, C-contiguous.  channels: their length.
    """

    scale: np.ndarray
    offset: np.ndarray
    channels: int


def prepare_affine(scale: Any, offset: Any = None, *, channels: int) -> Affine:
    """Validate a per-channel affine map once (see :class:`Affine`).

    Args:
        scale: scalar or ``(channels,)`` reals, finite in float32.
        offset: ``None`` (zeros) or scalar / ``(channels,)`` reals, finite in float32.
        channels: >= 1.
    """
    n = check_int(channels, "channels", min_value=1)
    sc = _as_f32_vector(scale, "scale", n).copy()
    of = np.zeros(n, np.float32) if offset is None else _as_f32_vector(offset, "offset", n).copy()
    sc.flags.writeable = False
    of.flags.writeable = False
    return Affine(sc, of, n)


def _affine(alpha: Any, bias: Any, n: int, names: tuple[str, str] = ("alpha", "bias")) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(alpha, Affine):
        if bias is not None:
            raise ValueError(f"{names[1]} must be None when {names[0]} is a prepared Affine")
        if alpha.channels != n:
            raise ValueError(f"{names[0]} was prepared for {alpha.channels} channels, "
                             f"expected {n}")
        return alpha.scale, alpha.offset
    al = _as_f32_vector(alpha, names[0], n)
    bi = np.zeros(n, np.float32) if bias is None else _as_f32_vector(bias, names[1], n)
    return al, bi


# ----------------------------------------------------------------------------- threads
def _threads(n_threads: int | None) -> int:
    if n_threads is None:
        return get_num_threads()
    return check_int(n_threads, "n_threads", min_value=1, max_value=_MAX_THREADS)


def set_num_threads(n: int | None) -> None:
    """Set the default number of threads of every kernel (``n_threads=None``).

    Args:
        n: a positive int, or ``None`` to follow ``torch.get_num_threads()`` again (the
            default; OpenMP's ``omp_get_max_threads()`` when torch is not imported).

    Kernels use fewer threads than asked when the problem is too small to profit.
    """
    global _num_threads
    _num_threads = None if n is None else check_int(n, "n", min_value=1, max_value=_MAX_THREADS)


def get_num_threads() -> int:
    """The default number of threads: :func:`set_num_threads`'s value, else torch's."""
    if _num_threads is not None:
        return _num_threads
    torch = _torch()
    if torch is not None:
        return max(1, min(_MAX_THREADS, int(torch.get_num_threads())))
    return max(1, min(_MAX_THREADS, int(_kernels.openmp_max_threads())))


# ----------------------------------------------------------------------------- packing
def pack_signs(x: Any, *, strict: bool = False, n_threads: int | None = None) -> PackedBits:
    r"""Pack :math:`\operatorname{sign}(x)` row by row along the last axis.

    Bit ``j % 64`` of word ``j // 64`` of row ``r`` is 1 iff ``x[r, j] < 0``; so
    sign(0) = +1 (also for -0.0).  For bool input, ``True`` means +1 and ``False`` -1.

    Args:
        x: real ``(rows, k)`` array or CPU tensor: float32, float64, int8 or bool.
            Non-contiguous inputs are copied; contiguous ones are read in place.
        strict: if True, refuse values other than -1 and +1 (bool is always accepted).
        n_threads: threads for large inputs (``None``: :func:`get_num_threads`).

    Returns:
        :class:`PackedBits` with ``words`` of shape ``(rows, ceil(k / 64))``.

    Raises:
        TypeError: wrong type or dtype.  ValueError: not 2-D, empty, NaN/inf, or a non-±1
        value under ``strict``.

    Examples::

        >>> pack_signs(np.array([[1.0, -1.0, -3.0]], np.float32)).words
        array([[6]], dtype=uint64)
    """
    nt = _threads(n_threads)
    arr = _as_real(x, "x", 2, "(rows, k)")
    if strict:
        _check_strict(arr, "x")
    return _pack_rows(arr, "x", nt)


def unpack_signs(p: PackedBits, dtype: Any = np.float32) -> np.ndarray:
    """The ±1 matrix ``(rows, k)`` that ``p`` packs (inverse of :func:`pack_signs` on ±1).

    Args:
        p: :class:`PackedBits`.
        dtype: float32 (default), float64 or int8.
    """
    if not isinstance(p, PackedBits):
        raise TypeError(f"p must be a PackedBits, got {type(p).__name__}")
    dt = _check_out_dtype(dtype)
    bits = _unpack_bits(p.words, p.k)
    return (1 - 2 * bits.astype(dt)).astype(dt, copy=False)


def _check_out_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be float32, float64 or int8, got {dtype!r}") from exc
    if dt not in (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int8)):
        raise TypeError(f"dtype must be float32, float64 or int8, got {dt}")
    return dt


def _unpack_bits(words: np.ndarray, k: int) -> np.ndarray:
    """Bits along the last axis, LSB first, truncated to k: uint8 array (..., k)."""
    le = words.astype("<u8", copy=False)
    as_bytes = le.view(np.uint8).reshape(*words.shape[:-1], words.shape[-1] * 8)
    return np.unpackbits(as_bytes, axis=-1, count=k, bitorder="little")


def pack_nhwc(x: Any, *, strict: bool = False, n_threads: int | None = None) -> PackedActivations:
    r"""Pack the signs of an NCHW batch into channel-packed NHWC words.

    Bit ``c % 64`` of ``words[n, y, x, c // 64]`` is 1 iff ``x[n, c, y, x] < 0`` (sign(0)
    = +1; bool ``True`` means +1).

    Args:
        x: real ``(N, C, H, W)`` array or CPU tensor (float32, float64, int8, bool);
            non-contiguous inputs are copied.
        strict: refuse values other than ±1.
        n_threads: threads (``None``: :func:`get_num_threads`).

    Shape:
        - Input: :math:`(N, C, H, W)`.
        - Output words: :math:`(N, H, W, \lceil C / 64 \rceil)`.
    """
    nt = _threads(n_threads)
    arr = _as_real(x, "x", 4, "(N, C, H, W)")
    if strict:
        _check_strict(arr, "x")
    return _pack_nchw(arr, nt)


def _pack_nchw(arr: np.ndarray, nt: int) -> PackedActivations:
    """Pack a validated (N, C, H, W) array (output of _as_real) into NHWC words."""
    n, c, h, w = arr.shape
    out = np.empty((n, h, w, n_words(c)), np.uint64)
    if _kernels.pack_nchw(arr.reshape(n, c, h * w), out.reshape(n, h * w, n_words(c)), nt):
        raise _nonfinite_error("x")
    return PackedActivations.trusted(out, c)


def unpack_nhwc(p: PackedActivations, dtype: Any = np.float32) -> np.ndarray:
    """The ±1 NCHW batch ``(N, C, H, W)`` that ``p`` packs."""
    if not isinstance(p, PackedActivations):
        raise TypeError(f"p must be a PackedActivations, got {type(p).__name__}")
    dt = _check_out_dtype(dtype)
    bits = _unpack_bits(p.words, p.channels)               # (N, H, W, C)
    return np.ascontiguousarray((1 - 2 * bits.astype(dt)).astype(dt, copy=False).transpose(0, 3, 1, 2))


def _as_f32_input(x: Any, name: str, ndim: int, layout: str) -> np.ndarray:
    arr = _as_real(x, name, ndim, layout)
    if arr.dtype != np.float32:
        shown = "bool" if arr.dtype == np.uint8 else str(arr.dtype)
        raise TypeError(f"{name} must be float32 for the affine packers, got {shown}")
    return arr


def pack_rows_affine(x: Any, scale: Any, offset: Any = None, *, n_threads: int | None = None) -> PackedBits:
    r"""Pack the sign of a per-column affine map of ``x``, with no float temporary.

    .. math::
        \text{bit}[r, j] = 1 \iff z_{rj} < 0, \qquad
        z_{rj} = \operatorname{fl}(\operatorname{fl}(x_{rj} \cdot s_j) + o_j)

    i.e. :math:`\operatorname{sign}(x \cdot s + o)` with sign(0) = +1, computed in float32
    with two roundings and no FMA: exactly NumPy's float32 ``x * scale + offset < 0``.
    With ``scale = ±1`` and ``offset = -u`` the bit is that of the exact comparison
    ``±x >= u`` (IEEE subtraction has the sign of the exact difference), which is how
    :class:`bnnlab.packed.PackedSign` reproduces torch's ``sign(BatchNorm(x))`` bit for bit
    from thresholds computed at export.

    Args:
        x: float32 ``(rows, k)`` array or CPU tensor (non-contiguous inputs are copied).
        scale: scalar or ``(k,)`` finite reals (converted to float32), or a prepared
            :class:`Affine` (then ``offset=None``).
        offset: ``None`` (zeros) or scalar / ``(k,)`` finite reals (converted to float32).
        n_threads: threads (``None``: :func:`get_num_threads`).

    Returns:
        :class:`PackedBits` ``(rows, k)``.

    Raises:
        TypeError: ``x`` not float32.  ValueError: wrong shapes, NaN/inf in ``x``,
        non-finite ``scale`` / ``offset``.

    Examples::

        >>> pack_rows_affine(np.array([[0.5, 2.0, -1.0]], np.float32), -1.0, 1.0).words
        array([[2]], dtype=uint64)
    """
    nt = _threads(n_threads)
    arr = _as_f32_input(x, "x", 2, "(rows, k)")
    rows, k = arr.shape
    if k > _MAX_K:
        raise ValueError(f"x has k={k} columns; at most 2**31 - 1 are supported")
    sc, of = _affine(scale, offset, k, ("scale", "offset"))
    out = np.empty((rows, (k + 63) >> 6), np.uint64)
    if _kernels.pack_rows_affine(arr, sc, of, out, nt):
        raise _nonfinite_error("x")
    return PackedBits.trusted(out, k)


def pack_nhwc_affine(x: Any, scale: Any, offset: Any = None, *, pool: MaxPoolSpec | None = None,
                     n_threads: int | None = None) -> PackedActivations:
    r"""Pack the sign of a per-channel affine map of an NCHW batch into NHWC words.

    Bit ``c % 64`` of ``words[n, y, x, c // 64]`` is 1 iff
    ``fl(fl(x[n, c, y, x] * scale[c]) + offset[c]) < 0`` (float32, two roundings, no FMA;
    sign(0) = +1), see :func:`pack_rows_affine` for the exactness of ``scale = ±1``.
    With ``pool`` (a :class:`MaxPoolSpec`), the packed map is max-pooled on the bits
    (:func:`maxpool2d_packed`) in the same call.

    Args:
        x: float32 ``(N, C, H, W)`` array or CPU tensor.
        scale, offset: scalar or ``(C,)`` finite reals (converted to float32; ``offset=None``
            means zeros), or ``scale`` a prepared :class:`Affine` and ``offset=None``.
        pool: ``None`` or a :class:`MaxPoolSpec` for ``C`` channels.
        n_threads: threads (``None``: :func:`get_num_threads`).

    Shape:
        - Input: :math:`(N, C, H, W)`.
        - Output words: :math:`(N, H, W, \lceil C / 64 \rceil)`, or the pooled
          :math:`(N, H_o, W_o, \lceil C / 64 \rceil)`.
    """
    nt = _threads(n_threads)
    arr = _as_f32_input(x, "x", 4, "(N, C, H, W)")
    n, c, h, w = arr.shape
    sc, of = _affine(scale, offset, c, ("scale", "offset"))
    if pool is None:
        out = np.empty((n, h, w, n_words(c)), np.uint64)
        bad = _kernels.pack_nchw_affine(arr.reshape(n, c, h * w), sc, of,
                                        out.reshape(n, h * w, n_words(c)), nt)
    else:
        oh, ow = _pool_shape(pool, c, h, w, "x")
        out = np.empty((n, oh, ow, n_words(c)), np.uint64)
        (kh, kw), (sh, sw), (ph, pw) = pool.kernel_size, pool.stride, pool.padding
        bad = _kernels.pack_nchw_affine_pool(arr, sc, of, kh, kw, sh, sw, ph, pw, pool.or_words,
                                             out, nt)
    if bad:
        raise _nonfinite_error("x")
    return PackedActivations.trusted(out, c)


def flatten_nhwc(p: PackedActivations) -> PackedBits:
    """Flatten packed activations to one packed row per image, in ``(h, w, c)`` order.

    The bridge from a binary conv to a binary linear layer without unpacking to float:
    row ``n`` holds ``k = H * W * C`` elements, element ``(y * W + x) * C + c`` being channel
    ``c`` of pixel ``(y, x)``.  torch's ``flatten`` uses ``(c, h, w)`` order, so the dense
    weights must be permuted to match:
    ``w.reshape(O, C, H, W).permute(0, 2, 3, 1).reshape(O, -1)``.
    Zero-copy when ``C`` is a multiple of 64; otherwise the bits are repacked.

    Args:
        p: :class:`PackedActivations` ``(N, C, H, W)``.

    Returns:
        :class:`PackedBits` ``(N, H * W * C)``.
    """
    if not isinstance(p, PackedActivations):
        raise TypeError(f"p must be a PackedActivations, got {type(p).__name__}")
    n, c, h, w = p.shape
    k = h * w * c
    if k > _MAX_K:
        raise ValueError(f"p flattens to k={k} > 2**31 - 1 elements per row")
    if c % WORD_BITS == 0:
        return PackedBits.trusted(p.words.reshape(n, -1), k)
    bits = _unpack_bits(p.words, c).reshape(n, k)
    nw = n_words(k)
    padded = np.zeros((n, nw * WORD_BITS), np.uint8)
    padded[:, :k] = bits
    words = np.packbits(padded, axis=1, bitorder="little").view("<u8").astype(np.uint64, copy=False)
    return PackedBits.trusted(np.ascontiguousarray(words.reshape(n, nw)), k)


def pack_conv_weights(w: Any, *, strict: bool = False) -> PackedConvWeights:
    r"""Pack the signs of conv weights ``(O, C, k_h, k_w)`` per ``(o, dy, dx)`` over ``C``.

    Args:
        w: real ``(O, C, k_h, k_w)`` array or CPU tensor (torch layout).
        strict: refuse values other than ±1.

    Returns:
        :class:`PackedConvWeights`, words ``(O, k_h, k_w, ceil(C / 64))``.
    """
    arr = _as_real(w, "w", 4, "(O, C, kh, kw)")
    if strict:
        _check_strict(arr, "w")
    return _pack_conv_weights(arr, "w")


def _pack_conv_weights(arr: np.ndarray, name: str) -> PackedConvWeights:
    """Pack a validated (O, C, kh, kw) array (output of _as_real)."""
    o, c, kh, kw = arr.shape
    rows = np.ascontiguousarray(arr.transpose(0, 2, 3, 1)).reshape(o * kh * kw, c)
    out = np.empty((o * kh * kw, n_words(c)), np.uint64)
    if _kernels.pack_rows(rows, out, 1):
        raise _nonfinite_error(name)
    return PackedConvWeights(out.reshape(o, kh, kw, n_words(c)), c)


def unpack_conv_weights(w: PackedConvWeights, dtype: Any = np.float32) -> np.ndarray:
    """The ±1 weights ``(O, C, k_h, k_w)`` that ``w`` packs."""
    if not isinstance(w, PackedConvWeights):
        raise TypeError(f"w must be a PackedConvWeights, got {type(w).__name__}")
    dt = _check_out_dtype(dtype)
    bits = _unpack_bits(w.words, w.in_channels)            # (O, kh, kw, C)
    return np.ascontiguousarray((1 - 2 * bits.astype(dt)).astype(dt, copy=False).transpose(0, 3, 1, 2))


# ----------------------------------------------------------------------------- matmul
def _packed_pair(a: Any, b: Any) -> None:
    if not isinstance(a, PackedBits):
        raise TypeError(f"a must be a PackedBits (see pack_signs), got {type(a).__name__}")
    if not isinstance(b, PackedBits):
        raise TypeError(f"b must be a PackedBits (see pack_signs), got {type(b).__name__}")
    if a.k != b.k:
        raise ValueError(f"a and b pack rows of different lengths: a.k={a.k}, b.k={b.k}")


def _pack_operand(x: Any, name: str, nt: int) -> PackedBits:
    if isinstance(x, PackedBits):
        return x
    return _pack_rows(_as_real(x, name, 2, "(rows, k)"), name, nt)


def xnor_matmul(a: PackedBits, b: PackedBits, n_threads: int | None = None) -> np.ndarray:
    r"""XNOR-popcount product of packed rows: :math:`A_b B_b^\top` as int32.

    .. math::
        \text{out}[i, j] = k - 2\,\operatorname{popcount}(a_i \oplus b_j)
        = \sum_l \operatorname{sign}(A_{il}) \operatorname{sign}(B_{jl})

    ``a.rows <= 8`` takes a GEMV-like path that streams ``b`` once; larger ``a`` uses a
    register-blocked kernel over a transient transposed copy ("panel") of ``b``.

    Args:
        a: :class:`PackedBits` ``(M, k)`` (activations).
        b: :class:`PackedBits` ``(N, k)`` (weights, one row per output).
        n_threads: threads (``None``: :func:`get_num_threads`).

    Returns:
        ``np.ndarray`` int32 of shape ``(M, N)``.

    Examples::

        >>> a = pack_signs(np.array([[1.0, -1.0]], np.float32))
        >>> xnor_matmul(a, a)
        array([[2]], dtype=int32)
    """
    return _xnor_matmul(a, b, _threads(n_threads))


def _xnor_matmul(a: PackedBits, b: PackedBits, nt: int) -> np.ndarray:
    _packed_pair(a, b)
    out = np.empty((a.words.shape[0], b.words.shape[0]), np.int32)
    _kernels.gemm(a.words, b.words, a.k, out, nt)
    return out


def binary_matmul(a: Any, b: Any, n_threads: int | None = None) -> np.ndarray:
    r""":math:`\operatorname{sign}(a)\,\operatorname{sign}(b)^\top` exactly, as int32.

    Packs real inputs by sign (sign(0) = +1; bool True = +1) and calls :func:`xnor_matmul`;
    either operand may already be a :class:`PackedBits` (e.g. pre-packed weights).

    Args:
        a: ``(M, k)`` real array / CPU tensor, or :class:`PackedBits`.
        b: ``(N, k)`` real array / CPU tensor, or :class:`PackedBits`.
        n_threads: threads (``None``: :func:`get_num_threads`).

    Returns:
        int32 ``np.ndarray`` ``(M, N)``.
    """
    nt = _threads(n_threads)
    pa, pb = _pack_operand(a, "a", nt), _pack_operand(b, "b", nt)
    return _xnor_matmul(pa, pb, nt)


def matmul_threshold(a: Any, b: PackedBits, threshold: Any, flip: Any = None,
                     n_threads: int | None = None) -> PackedBits:
    r"""Binary matmul fused with a per-column threshold that emits the next layer's bits.

    For :math:`d_{ij} = \langle \operatorname{sign}(a_i), \operatorname{sign}(b_j)\rangle`
    the output row ``i`` packs, over ``j``:

    .. math::
        y_{ij} = +1 \text{ if } d_{ij} \ge \tau_j \text{ (or } d_{ij} \le \tau_j
        \text{ where flip}_j\text{)}, \quad -1 \text{ otherwise}.

    To fold ``sign(s_j * d + t_j)`` (e.g. a BatchNorm after the layer, sign(0) = +1):
    ``s_j > 0``: ``threshold = -t_j / s_j``; ``s_j < 0``: same threshold, ``flip=True``;
    ``s_j == 0``: ``threshold = -inf`` if ``t_j >= 0`` (always +1) else ``+inf``.  The
    comparison is exact in the integers (``d >= tau`` iff ``d >= ceil(tau)``); whether it
    matches a float computation of ``s_j * d + t_j`` at near-ties is the caller's concern.

    Args:
        a: ``(M, K)`` :class:`PackedBits` or real array/tensor (packed by sign).
        b: ``(N, K)`` :class:`PackedBits` weights.
        threshold: scalar or ``(N,)`` reals (±inf allowed, NaN not), or a
            :class:`Thresholds` from :func:`prepare_thresholds` (then ``flip=None``).
        flip: ``None`` or scalar / ``(N,)`` booleans.
        n_threads: threads (``None``: :func:`get_num_threads`).

    Returns:
        :class:`PackedBits` ``(M, N)``: the next layer's packed input (``k = N``).
    """
    nt = _threads(n_threads)
    a = _pack_operand(a, "a", nt)
    _packed_pair(a, b)
    lim, fl = _limits(threshold, flip, b.rows, a.k)
    out = np.zeros((a.rows, n_words(b.rows)), np.uint64)
    _kernels.gemm_threshold_pack(a.words, b.words, a.k, lim, fl, out, nt)
    return PackedBits.trusted(out, b.rows)


def matmul_affine(a: Any, b: PackedBits, alpha: Any, bias: Any = None, n_threads: int | None = None) -> np.ndarray:
    r"""Binary matmul with a float epilogue: ``out[i, j] = alpha[j] * d_ij + bias[j]``.

    Computed in float32 as ``float32(d) * alpha_j`` rounded, then ``+ bias_j`` rounded (no
    FMA), i.e. exactly NumPy's ``d.astype(float32) * alpha + bias``; ``d`` is exact as long
    as ``|d| <= 2**24``.  For the last binary layer (e.g. XNOR-Net's alpha and the bias).

    Args:
        a: ``(M, K)`` :class:`PackedBits` or real array/tensor.
        b: ``(N, K)`` :class:`PackedBits`.
        alpha: scalar or ``(N,)`` finite reals, or a prepared :class:`Affine` (then
            ``bias=None``).
        bias: ``None`` (zeros) or scalar / ``(N,)`` finite reals.
        n_threads: threads (``None``: :func:`get_num_threads`).

    Returns:
        float32 ``np.ndarray`` ``(M, N)``.
    """
    nt = _threads(n_threads)
    a = _pack_operand(a, "a", nt)
    _packed_pair(a, b)
    al, bi = _affine(alpha, bias, b.rows)
    out = np.empty((a.rows, b.rows), np.float32)
    _kernels.gemm_affine(a.words, b.words, a.k, al, bi, out, nt)
    return out


# ----------------------------------------------------------------------------- conv
def _pair(v: Any, name: str, minimum: int) -> tuple[int, int]:
    tv = type(v)
    if tv is int:                                       # fast paths: plain ints
        if v >= minimum:
            return (v, v)
    elif tv is tuple and len(v) == 2 and type(v[0]) is int and type(v[1]) is int \
            and v[0] >= minimum and v[1] >= minimum:
        return v
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
        return (check_int(v[0], name, min_value=minimum), check_int(v[1], name, min_value=minimum))
    v = check_int(v, name, min_value=minimum)
    return (v, v)


_ZERO_PAD = 2          # _pad_value's code for pad_value=0 (torch's zero padding)
_MAX_PADDED_PIXELS = 2**31 - 1


def _pad_value(v: Any) -> int:
    """0 for +1, 1 for -1 (the C kernels' flag), ``_ZERO_PAD`` for 0."""
    if type(v) is float:                                # fast path
        if v == 1.0:
            return 0
        if v == -1.0:
            return 1
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"pad_value must be +1.0, -1.0 or 0.0, got {v!r}")
    if v == 1:
        return 0
    if v == -1:
        return 1
    if v == 0:
        return _ZERO_PAD
    raise ValueError(f"pad_value must be +1.0, -1.0 or 0.0, got {v!r}")


def _conv_setup(x: Any, w: Any, stride: IntPair, padding: IntPair,
                pad_value: Any) -> tuple[tuple[int, int, int, int, int], tuple[int, int, int, int]]:
    if not isinstance(x, PackedActivations):
        raise TypeError(f"x must be a PackedActivations (see pack_nhwc), got {type(x).__name__}")
    if not isinstance(w, PackedConvWeights):
        raise TypeError(f"w must be a PackedConvWeights (see pack_conv_weights), got {type(w).__name__}")
    sy, sx = _pair(stride, "stride", 1)
    py, px = _pair(padding, "padding", 0)
    pad_neg = _pad_value(pad_value)
    if x.channels != w.in_channels:
        raise ValueError(
            f"x has {x.channels} channels but w expects in_channels={w.in_channels}"
        )
    n, c, h, wd = x.shape
    kh, kw = w.kernel_size
    if h + 2 * py < kh or wd + 2 * px < kw:
        raise ValueError(
            f"kernel size {(kh, kw)} is larger than the padded input {(h + 2 * py, wd + 2 * px)}"
        )
    if c * kh * kw > _MAX_K:
        raise ValueError("C_in * kh * kw must be < 2**31")
    if (h + 2 * py) * (wd + 2 * px) > _MAX_PADDED_PIXELS:
        raise ValueError(f"padding={(py, px)} is too large: the padded input would have "
                         f"{(h + 2 * py) * (wd + 2 * px)} pixels per channel (at most 2**31 - 1)")
    oh, ow = (h + 2 * py - kh) // sy + 1, (wd + 2 * px - kw) // sx + 1
    return (sy, sx, py, px, pad_neg), (n, w.out_channels, oh, ow)


def _layout(layout: str) -> bool:
    if layout not in ("nchw", "nhwc"):
        raise ValueError(f"layout must be 'nchw' or 'nhwc', got {layout!r}")
    return layout == "nhwc"


@dataclass(frozen=True, eq=False)
class MaxPoolSpec:
    r"""A validated max-pool on packed ±1 maps (build with :func:`prepare_maxpool2d`).

    The max of ±1 values is +1 iff one of them is +1: with bit 1 meaning -1, that is the
    AND of the window's bits.  Channels flagged in ``or_channels`` take the **min** (OR of
    the bits) instead, e.g. a max-pool in front of a decreasing function of a fused chain.
    Taps outside the image never win (as torch's ``-inf`` padding).

    Attributes:
        channels: ``C``.  kernel_size, stride, padding: ``(h, w)`` int pairs.
        or_channels: bool ``(C,)``.  or_words: uint64 ``(ceil(C / 64),)``, bit ``c`` =
        ``or_channels[c]``.
    """

    channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    or_channels: np.ndarray
    or_words: np.ndarray


def prepare_maxpool2d(channels: int, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0,
                      or_channels: Any = None) -> MaxPoolSpec:
    r"""Validate a bit max-pool once: for :func:`maxpool2d_packed`, ``conv2d_threshold(pool=)``
    and ``pack_nhwc_affine(pool=)``.

    Spatial semantics of :class:`torch.nn.MaxPool2d` with ``dilation=1``,
    ``ceil_mode=False``: :math:`H_o = \lfloor (H + 2 p_h - k_h) / s_h \rfloor + 1`.

    Args:
        channels: ``C``, >= 1.
        kernel_size: int or ``(k_h, k_w)``, >= 1.
        stride: ``None`` (= kernel_size), int or pair, >= 1.
        padding: int or pair, ``0 <= p <= k / 2`` (torch's rule).
        or_channels: ``None`` or bool ``(C,)``: channels pooled with min (OR) instead of max.

    Examples::

        >>> spec = prepare_maxpool2d(3, 2)
        >>> spec.kernel_size, spec.stride, spec.padding
        ((2, 2), (2, 2), (0, 0))
    """
    c = check_int(channels, "channels", min_value=1)
    k = _pair(kernel_size, "kernel_size", 1)
    st = k if stride is None else _pair(stride, "stride", 1)
    pad = _pair(padding, "padding", 0)
    if 2 * pad[0] > k[0] or 2 * pad[1] > k[1]:
        raise ValueError(f"padding must be at most half the kernel size, got padding={pad} "
                         f"for kernel_size={k}")
    fl = _as_flags(or_channels, "or_channels", c)
    words = np.zeros(n_words(c) * 8, np.uint8)
    packed = np.packbits(fl, bitorder="little")
    words[: packed.size] = packed
    return MaxPoolSpec(c, k, st, pad, fl.astype(bool), words.view("<u8").astype(np.uint64))


def _pool_shape(pool: Any, c: int, h: int, w: int, name: str) -> tuple[int, int]:
    if not isinstance(pool, MaxPoolSpec):
        raise TypeError(f"pool must be a MaxPoolSpec (see prepare_maxpool2d) or None, "
                        f"got {type(pool).__name__}")
    if pool.channels != c:
        raise ValueError(f"pool was prepared for {pool.channels} channels, {name} has {c}")
    (kh, kw), (sh, sw), (ph, pw) = pool.kernel_size, pool.stride, pool.padding
    if h + 2 * ph < kh or w + 2 * pw < kw:
        raise ValueError(f"{name} is {h}x{w}: too small for the pool's kernel_size "
                         f"{pool.kernel_size} with padding {pool.padding}")
    return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1


def maxpool2d_packed(x: PackedActivations, pool: MaxPoolSpec, *,
                     n_threads: int | None = None) -> PackedActivations:
    r"""Max-pool packed ±1 feature maps on the bits (AND over the window; OR for the
    channels flagged in the spec), exactly ``torch.nn.MaxPool2d`` on the ±1 values
    (min-pool for flagged channels).

    Args:
        x: :class:`PackedActivations` ``(N, C, H, W)``.
        pool: :class:`MaxPoolSpec` from :func:`prepare_maxpool2d` for ``C`` channels.
        n_threads: threads (``None``: :func:`get_num_threads`).

    Returns:
        :class:`PackedActivations` ``(N, C, H_o, W_o)``.
    """
    nt = _threads(n_threads)
    if not isinstance(x, PackedActivations):
        raise TypeError(f"x must be a PackedActivations (see pack_nhwc), got {type(x).__name__}")
    n, h, w, cw = x.words.shape
    oh, ow = _pool_shape(pool, x.channels, h, w, "x")
    out = np.empty((n, oh, ow, cw), np.uint64)
    (kh, kw), (sh, sw), (ph, pw) = pool.kernel_size, pool.stride, pool.padding
    _kernels.maxpool_bits(x.words, x.channels, kh, kw, sh, sw, ph, pw, pool.or_words, out, nt)
    return PackedActivations.trusted(out, x.channels)


def _tap_sums(w: PackedConvWeights) -> np.ndarray:
    """int64 ``(O, k_h, k_w)``: the sum over input channels of each ±1 weight tap (cached on
    ``w``, whose words are read-only)."""
    cached = w.__dict__.get("_tap_sums")
    if cached is None:
        bits = _unpack_bits(w.words, w.in_channels)                  # (O, kh, kw, C), 1 = -1
        cached = w.in_channels - 2 * bits.sum(axis=-1, dtype=np.int64)
        object.__setattr__(w, "_tap_sums", cached)
    return cached


def zero_padding_correction(w: PackedConvWeights, input_size: tuple[int, int], stride: IntPair = 1,
                            padding: IntPair = 0) -> np.ndarray:
    r"""What zero padding removes from a +1-padded binary conv, per output position.

    The packed kernels pad with ±1.  Torch's zero padding of the binarised input instead
    makes every out-of-image tap contribute 0, so

    .. math::
        d_{	ext{zero}}[n, o, y, x] = d_{+1}[n, o, y, x] - P[o, y, x], \qquad
        P[o, y, x] = \sum_{(d_y, d_x)\ 	ext{outside}} \sum_c w_b[o, c, d_y, d_x]

    where :math:`P` does not depend on the input: one int map per output channel and
    position, non-zero only on the border (larq-compute-engine's zero-padding correction).

    Args:
        w: :class:`PackedConvWeights`.
        input_size: ``(H, W)`` of the input.
        stride, padding: as :func:`conv2d_packed`.

    Returns:
        int32 ``(O, H_o, W_o)``: :math:`P`.
    """
    if not isinstance(w, PackedConvWeights):
        raise TypeError(f"w must be a PackedConvWeights, got {type(w).__name__}")
    if not isinstance(input_size, (tuple, list)) or len(input_size) != 2:
        raise ValueError(f"input_size must be (H, W), got {input_size!r}")
    h = check_int(input_size[0], "input_size[0]", min_value=1)
    wd = check_int(input_size[1], "input_size[1]", min_value=1)
    sy, sx = _pair(stride, "stride", 1)
    py, px = _pair(padding, "padding", 0)
    kh, kw = w.kernel_size
    if h + 2 * py < kh or wd + 2 * px < kw:
        raise ValueError(f"kernel size {(kh, kw)} is larger than the padded input "
                         f"{(h + 2 * py, wd + 2 * px)}")
    if (h + 2 * py) * (wd + 2 * px) > _MAX_PADDED_PIXELS:
        raise ValueError(f"padding={(py, px)} is too large for an input of {(h, wd)}")
    oh, ow = (h + 2 * py - kh) // sy + 1, (wd + 2 * px - kw) // sx + 1
    rows = np.arange(oh)[:, None] * sy - py + np.arange(kh)[None, :]     # (H_o, k_h)
    cols = np.arange(ow)[:, None] * sx - px + np.arange(kw)[None, :]     # (W_o, k_w)
    in_y = ((rows >= 0) & (rows < h)).astype(np.int64)
    in_x = ((cols >= 0) & (cols < wd)).astype(np.int64)
    s = _tap_sums(w)
    inside = np.einsum("okl,yk,xl->oyx", s, in_y, in_x)
    return (s.sum(axis=(1, 2))[:, None, None] - inside).astype(np.int32)


def _zero_padded_conv(x: PackedActivations, w: PackedConvWeights, sy: int, sx: int, py: int,
                      px: int, nt: int) -> np.ndarray:
    """int32 NCHW conv with torch's zero padding: the +1-padded kernel minus the correction."""
    n, _, h, wd = x.shape
    _, o, oh, ow = n, w.out_channels, (h + 2 * py - w.kernel_size[0]) // sy + 1, \
        (wd + 2 * px - w.kernel_size[1]) // sx + 1
    out = np.empty((n, o, oh, ow), np.int32)
    _kernels.conv(x.words, x.channels, w.words, sy, sx, py, px, False, out, False, nt)
    out -= zero_padding_correction(w, (h, wd), (sy, sx), (py, px))[None]
    return out


def conv2d_packed(x: PackedActivations, w: PackedConvWeights, stride: IntPair = 1, padding: IntPair = 0,
                  pad_value: float = 1.0, *, layout: str = "nchw",
                  n_threads: int | None = None) -> np.ndarray:
    r"""Binary 2-D convolution (cross-correlation, as torch) of packed operands, int32.

    .. math::
        \text{out}[n, o, y, x] = \sum_{c, d_y, d_x} x_b[n, c, y s_h - p_h + d_y, x s_w - p_w + d_x]
        \; w_b[o, c, d_y, d_x]

    where input pixels outside the image equal ``pad_value`` (±1) in every channel, or
    contribute nothing with ``pad_value=0.0`` (torch's zero padding of the binarised input:
    the +1-padded result minus :func:`zero_padding_correction`, exact).  No
    im2col buffer: each output pixel reads ``k_h`` runs of ``k_w * ceil(C/64)`` words from a
    padded copy of the packed input.  Groups and dilation are not supported.

    Args:
        x: :class:`PackedActivations` ``(N, C, H, W)``.
        w: :class:`PackedConvWeights` ``(O, C, k_h, k_w)`` (any kernel size).
        stride: int or (s_h, s_w), >= 1.
        padding: int or (p_h, p_w), >= 0.
        pad_value: +1.0, -1.0 or 0.0 (zero padding; see ``BinaryConv2d(pad_value=...)``).
        layout: ``"nchw"`` (default, torch's) or ``"nhwc"`` for the output.
        n_threads: threads (``None``: :func:`get_num_threads`).

    Shape:
        Output :math:`(N, O, H_o, W_o)` (or NHWC) with
        :math:`H_o = \lfloor (H + 2 p_h - k_h) / s_h \rfloor + 1`, same for W.
    """
    nt = _threads(n_threads)
    (sy, sx, py, px, neg), (n, o, oh, ow) = _conv_setup(x, w, stride, padding, pad_value)
    nhwc = _layout(layout)
    if neg == _ZERO_PAD:
        d = _zero_padded_conv(x, w, sy, sx, py, px, nt)
        return np.ascontiguousarray(d.transpose(0, 2, 3, 1)) if nhwc else d
    out = np.empty((n, oh, ow, o) if nhwc else (n, o, oh, ow), np.int32)
    _kernels.conv(x.words, x.channels, w.words, sy, sx, py, px, neg == 1, out, nhwc, nt)
    return out


def conv2d_threshold(x: PackedActivations, w: PackedConvWeights, threshold: Any, flip: Any = None,
                     stride: IntPair = 1, padding: IntPair = 0, pad_value: float = 1.0, *,
                     pool: MaxPoolSpec | None = None,
                     n_threads: int | None = None) -> PackedActivations:
    r"""Binary conv fused with a per-output-channel threshold: the next layer's packed input.

    Output channel ``o`` of pixel ``(n, y, x)`` is +1 iff ``d >= threshold[o]`` (or
    ``d <= threshold[o]`` where ``flip[o]``), ``d`` the int conv output of
    :func:`conv2d_packed`; see :func:`matmul_threshold` for folding a BatchNorm + sign.
    ``threshold`` may be a :class:`Thresholds` prepared once with
    ``prepare_thresholds(..., channels=O, k=C_in * k_h * k_w)``.

    With ``pool`` (a :class:`MaxPoolSpec` for ``O`` channels, see
    :func:`prepare_maxpool2d`) the output bits are max-pooled in the same call
    (AND over each window, OR for the spec's flagged channels): exactly
    ``maxpool2d_packed(conv2d_threshold(...), pool)`` without the Python round trip.

    Returns:
        :class:`PackedActivations` ``(N, O, H_o, W_o)`` (pooled sizes with ``pool``), ready
        for the next binary conv.
    """
    nt = _threads(n_threads)
    (sy, sx, py, px, neg), (n, o, oh, ow) = _conv_setup(x, w, stride, padding, pad_value)
    k = x.channels * w.kernel_size[0] * w.kernel_size[1]
    lim, fl = _limits(threshold, flip, o, k)
    if neg == _ZERO_PAD:
        th = threshold if isinstance(threshold, Thresholds) else \
            prepare_thresholds(threshold, flip, channels=o, k=k)
        d = _zero_padded_conv(x, w, sy, sx, py, px, nt)
        t = th.int_threshold[None, :, None, None]
        flb = th.flip[None, :, None, None]
        plus = np.where(flb, d <= t, d >= t)
        bits = pack_nhwc(plus, n_threads=nt)            # bool: True means +1
        return bits if pool is None else maxpool2d_packed(bits, pool, n_threads=nt)
    if pool is None:
        out = np.zeros((n, oh, ow, n_words(o)), np.uint64)
        _kernels.conv_threshold_pack(x.words, x.channels, w.words, sy, sx, py, px, neg == 1, lim, fl,
                                     out, nt)
        return PackedActivations.trusted(out, o)
    ph, pw = _pool_shape(pool, o, oh, ow, "the conv output")
    out = np.empty((n, ph, pw, n_words(o)), np.uint64)
    (qh, qw), (qsh, qsw), (qph, qpw) = pool.kernel_size, pool.stride, pool.padding
    _kernels.conv_threshold_pack_pool(x.words, x.channels, w.words, sy, sx, py, px, neg == 1, lim, fl,
                                      qh, qw, qsh, qsw, qph, qpw, pool.or_words, out, nt)
    return PackedActivations.trusted(out, o)


def conv2d_affine(x: PackedActivations, w: PackedConvWeights, alpha: Any, bias: Any = None, stride: IntPair = 1,
                  padding: IntPair = 0, pad_value: float = 1.0, *, layout: str = "nchw",
                  n_threads: int | None = None) -> np.ndarray:
    r"""Binary conv with a float epilogue: ``out[n, o, y, x] = alpha[o] * d + bias[o]``.

    float32, two roundings, no FMA (as :func:`matmul_affine`).  For the last binary conv.
    """
    nt = _threads(n_threads)
    (sy, sx, py, px, neg), (n, o, oh, ow) = _conv_setup(x, w, stride, padding, pad_value)
    nhwc = _layout(layout)
    al, bi = _affine(alpha, bias, o)
    if neg == _ZERO_PAD:                      # float32(d) * alpha, then + bias: two roundings
        y = _zero_padded_conv(x, w, sy, sx, py, px, nt).astype(np.float32)
        y *= al[None, :, None, None]
        y += bi[None, :, None, None]
        return np.ascontiguousarray(y.transpose(0, 2, 3, 1)) if nhwc else y
    out = np.empty((n, oh, ow, o) if nhwc else (n, o, oh, ow), np.float32)
    _kernels.conv_affine(x.words, x.channels, w.words, sy, sx, py, px, neg == 1, al, bi, out, nhwc, nt)
    return out


def binary_conv2d(x: Any, w: Any, stride: IntPair = 1, padding: IntPair = 0, pad_value: float = 1.0, *,
                  layout: str = "nchw",
                  n_threads: int | None = None) -> np.ndarray:
    r"""``torch.nn.functional.conv2d`` of the signs, padded with ``pad_value``, exactly (int32).

    Equals ``F.conv2d(F.pad(sign(x), (p_w, p_w, p_h, p_h), value=pad_value), sign(w),
    stride=stride)`` with sign(0) = +1.

    Args:
        x: ``(N, C, H, W)`` real array / CPU tensor, or :class:`PackedActivations`.
        w: ``(O, C, k_h, k_w)`` real array / CPU tensor, or :class:`PackedConvWeights`.
        stride, padding, pad_value, layout, n_threads: as :func:`conv2d_packed`.

    Returns:
        int32 ``np.ndarray`` ``(N, O, H_o, W_o)`` (NHWC with ``layout="nhwc"``).

    Examples::

        >>> x = np.ones((1, 3, 4, 4), np.float32); w = -np.ones((2, 3, 3, 3), np.float32)
        >>> binary_conv2d(x, w, padding=1, pad_value=-1.0)[0, 0, 0, 0]  # corner: 4 real taps, 5 pad taps
        np.int32(3)
    """
    nt = _threads(n_threads)
    if not isinstance(x, PackedActivations):
        arr = _as_real(x, "x", 4, "(N, C, H, W)")
        n, c, h, wd = arr.shape
        words = np.empty((n, h, wd, n_words(c)), np.uint64)
        if _kernels.pack_nchw(arr.reshape(n, c, h * wd), words.reshape(n, h * wd, n_words(c)), nt):
            raise _nonfinite_error("x")
        x = PackedActivations.trusted(words, c)
    if not isinstance(w, PackedConvWeights):
        w = pack_conv_weights(w)
    return conv2d_packed(x, w, stride, padding, pad_value, layout=layout, n_threads=nt)


# ----------------------------------------------------------------------------- plans
def _panel_for(plan: Any, rows: np.ndarray) -> tuple[np.ndarray, int]:
    """The weight panel (transposed column groups the blocked kernels read) of ``rows``
    (weights as ``(N, wlen)`` words), built once per instruction-set level and kept on the
    plan: (words, column width)."""
    lvl = _kernels.level()
    cached = plan._panel
    if cached is None or cached[0] != lvl:
        nr = _kernels.panel_nr(lvl)
        n, wlen = rows.shape
        words = np.empty(((n + nr - 1) // nr) * wlen * nr, np.uint64)
        _kernels.make_panel(rows, words, nr, get_num_threads())
        words.flags.writeable = False
        cached = (lvl, words, nr)
        plan._panel = cached
    return cached[1], cached[2]


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _epilogue_mode(threshold: Any, flip: Any, alpha: Any, bias: Any, pool: Any,
                   n: int, k: int) -> tuple[str, Thresholds | None, Affine | None]:
    """Validate the epilogue arguments of a plan: ("int" | "threshold" | "affine", ...)."""
    if threshold is not None:
        if alpha is not None:
            raise ValueError("alpha must be None when threshold is given (one epilogue: "
                             "threshold -> packed bits, alpha/bias -> float32)")
        if bias is not None:
            raise ValueError("bias must be None when threshold is given")
        if isinstance(threshold, Thresholds):
            _limits(threshold, flip, n, k)        # checks channels, k and flip=None
            th = threshold
        else:
            th = prepare_thresholds(threshold, flip, channels=n, k=k)
        return "threshold", th, None
    if flip is not None:
        raise ValueError("flip needs a threshold")
    if pool is not None:
        raise ValueError("pool needs a threshold (the max-pool runs on the packed output bits)")
    if alpha is None:
        if bias is not None:
            raise ValueError("bias needs alpha (pass alpha=1.0 for a bias alone)")
        return "int", None, None
    if isinstance(alpha, Affine):
        _affine(alpha, bias, n)                   # checks channels and bias=None
        return "affine", None, alpha
    al, bi = (_frozen(v.copy()) for v in _affine(alpha, bias, n))
    return "affine", None, Affine(al, bi, n)


class Conv2dPlan:
    r"""A binary conv with its geometry and epilogue validated once: call it on each input.

    Built by :func:`prepare_conv2d`.  ``plan(x)`` equals the one-shot function of its
    epilogue (:func:`conv2d_packed`, :func:`conv2d_threshold` or :func:`conv2d_affine`) on
    the same arguments, bit for bit; the output sizes are worked out once per input shape, so
    a call on :class:`PackedActivations` goes straight to the compiled kernel.

    Attributes:
        weights: :class:`PackedConvWeights`.  stride, padding: int pairs.  pad_value: +1.0,
        -1.0 or 0.0.  epilogue: ``"int"`` (int32 dot products), ``"threshold"`` (packed bits,
        :class:`PackedActivations`) or ``"affine"`` (float32).  thresholds: the
        :class:`Thresholds` (threshold epilogue) or None.  affine: the :class:`Affine`
        (affine epilogue) or None.  pool: :class:`MaxPoolSpec` or None.  layout: "nchw" or
        "nhwc" (int / affine outputs).  strict: real inputs must be ±1.
    """

    __slots__ = ("weights", "stride", "padding", "pad_value", "epilogue", "thresholds",
                 "affine", "post", "post_fma", "pool", "layout", "strict", "_neg", "_nhwc",
                 "_shapes", "_post_id", "_panel")

    def __init__(self, weights: PackedConvWeights, stride: tuple[int, int], padding: tuple[int, int],
                 pad_value: float, epilogue: str, thresholds: Thresholds | None,
                 affine: Affine | None, pool: MaxPoolSpec | None, layout: str, strict: bool,
                 post: Affine | None = None, post_fma: bool = False) -> None:
        self.weights, self.stride, self.padding, self.pad_value = weights, stride, padding, pad_value
        self.epilogue, self.thresholds, self.affine, self.pool = epilogue, thresholds, affine, pool
        self.layout, self.strict, self.post, self.post_fma = layout, strict, post, post_fma
        self._panel: tuple[int, np.ndarray, int] | None = None
        # the identity post-op for a residual without one: v * 1 + (-0.0) == v for every v
        self._post_id = post if post is not None else \
            Affine(_frozen(np.ones(weights.out_channels, np.float32)),
                   _frozen(np.full(weights.out_channels, -0.0, np.float32)), weights.out_channels)
        self._neg = _pad_value(pad_value)
        self._nhwc = layout == "nhwc"
        self._shapes: dict[tuple[int, ...], tuple[int, ...]] = {}

    @property
    def in_channels(self) -> int:
        return self.weights.in_channels

    @property
    def out_channels(self) -> int:
        return self.weights.out_channels

    def __repr__(self) -> str:
        return (f"Conv2dPlan(weights={self.weights!r}, stride={self.stride}, "
                f"padding={self.padding}, pad_value={self.pad_value}, epilogue={self.epilogue!r}"
                f"{', pool' if self.pool is not None else ''})")

    def _out_shape(self, x: PackedActivations) -> tuple[int, ...]:
        """Output array shape for the input words' shape (validated once per shape)."""
        key = x.words.shape
        shape = self._shapes.get(key)
        if shape is None:
            _, (n, o, oh, ow) = _conv_setup(x, self.weights, self.stride, self.padding,
                                            self.pad_value)
            if self.epilogue == "threshold":
                if self.pool is not None:
                    oh, ow = _pool_shape(self.pool, o, oh, ow, "the conv output")
                shape = (n, oh, ow, n_words(o))
            else:
                shape = (n, oh, ow, o) if self._nhwc else (n, o, oh, ow)
            if len(self._shapes) > 64:
                self._shapes.clear()
            self._shapes[key] = shape
        return shape

    def epilogue_values(self, *, post: bool = True) -> tuple[np.ndarray, np.ndarray]:
        r"""Every value the affine epilogue can produce, computed by the kernels' own
        arithmetic: ``(d, v)`` with ``d`` the ``K + 1`` attainable dot products
        (``-K, -K + 2, ..., K``, int32) and ``v[o, i]`` (float32 ``(O, K + 1)``) the output
        for ``d[i]`` in channel ``o``, before the residual; ``post=False`` leaves out the
        post-op.  For proving a fused epilogue equal to another implementation (e.g. torch's
        BatchNorm) on all its inputs."""
        if self.epilogue != "affine":
            raise ValueError(f"epilogue_values needs the affine epilogue, this plan's is "
                             f"{self.epilogue!r}")
        k = self.weights.in_channels * self.weights.kernel_size[0] * self.weights.kernel_size[1]
        d = np.arange(-k, k + 1, 2, dtype=np.int32)
        aff, pa = self.affine, self._post_id
        out = np.empty((self.weights.out_channels, d.shape[0]), np.float32)
        _kernels.affine_values(d, aff.scale, aff.offset, pa.scale, pa.offset,  # type: ignore[union-attr]
                               bool(post and self.post is not None), self.post_fma, out)
        return d, out

    def _residual(self, residual: Any, shape: tuple[int, ...]) -> np.ndarray:
        if self.epilogue != "affine":
            raise ValueError(f"residual needs the affine epilogue (alpha), this plan's is "
                             f"{self.epilogue!r}")
        if self._neg == _ZERO_PAD:
            raise ValueError("residual is not supported with pad_value=0.0 (zero padding); "
                             "use pad_value=+1.0 or -1.0")
        arr = _as_f32_input(residual, "residual", 4, "(N, O, H_o, W_o)")
        if arr.shape != shape:
            raise ValueError(f"residual has shape {arr.shape}, the conv output is {shape}")
        return arr

    def __call__(self, x: Any, *, residual: Any = None, emit_bits: bool = False,
                 n_threads: int | None = None) -> Any:
        """Run the conv on ``x``: :class:`PackedActivations` ``(N, C, H, W)``, or a real
        ``(N, C, H, W)`` array / CPU tensor (packed by sign first, as :func:`pack_nhwc`).
        ``residual`` (affine epilogue only): float32 array / tensor of the output's shape
        and layout, added last: ``out = post(alpha * d + bias) + residual``.
        ``emit_bits`` (with ``residual``, NCHW): also return the output's signs packed, in the
        same pass: ``(out, pack_nhwc(out))`` (ValueError if ``out`` holds NaN or inf, as
        :func:`pack_nhwc`).

        Returns:
            int32 / float32 ``np.ndarray`` (NCHW or NHWC), or :class:`PackedActivations`
            for the threshold epilogue.
        """
        nt = _threads(n_threads)
        if type(x) is not PackedActivations:
            if isinstance(x, PackedActivations):
                pass
            elif isinstance(x, (PackedBits, PackedConvWeights)):
                raise TypeError(f"x must be a PackedActivations or a real (N, C, H, W) array, "
                                f"got {type(x).__name__}")
            else:
                x = pack_nhwc(x, strict=self.strict, n_threads=nt)
        if x.channels != self.weights.in_channels:
            raise ValueError(f"x has {x.channels} channels but the plan's weights expect "
                             f"in_channels={self.weights.in_channels}")
        shape = self._out_shape(x)
        w, (sy, sx), (py, px), neg = self.weights, self.stride, self.padding, self._neg
        if emit_bits and (residual is None or self._nhwc):
            raise ValueError("emit_bits needs a residual and the NCHW layout")
        if residual is not None or self.post is not None:
            res = np.zeros(shape, np.float32) if residual is None else self._residual(residual, shape)
            aff, pa = self.affine, self._post_id
            out = np.empty(shape, np.float32)
            panel, nr = _panel_for(self, w.words.reshape(w.out_channels, -1))
            bits = np.zeros((shape[0], shape[2], shape[3], n_words(shape[1])), np.uint64) \
                if emit_bits else None
            bad = _kernels.conv_affine_res(x.words, x.channels, w.words, sy, sx, py, px, neg == 1,
                                           aff.scale, aff.offset, pa.scale, pa.offset,  # type: ignore[union-attr]
                                           self.post_fma, res, out, self._nhwc, nt, panel, nr, bits)
            if bits is None:
                return out
            if bad:
                raise _nonfinite_error("the conv output")
            return out, PackedActivations.trusted(bits, shape[1])
        if neg == _ZERO_PAD:                                # the corrected (numpy) path
            if self.epilogue == "threshold":
                return conv2d_threshold(x, w, self.thresholds, None, self.stride, self.padding,
                                        0.0, pool=self.pool, n_threads=nt)
            if self.epilogue == "affine":
                return conv2d_affine(x, w, self.affine, None, self.stride, self.padding, 0.0,
                                     layout=self.layout, n_threads=nt)
            return conv2d_packed(x, w, self.stride, self.padding, 0.0, layout=self.layout,
                                 n_threads=nt)
        panel, nr = _panel_for(self, w.words.reshape(w.out_channels, -1))
        if self.epilogue == "threshold":
            th = self.thresholds
            pool = self.pool
            if pool is None:
                out = np.zeros(shape, np.uint64)
                _kernels.conv_threshold_pack(x.words, x.channels, w.words, sy, sx, py, px,
                                             neg == 1, th.lim, th.flipw, out, nt,  # type: ignore[union-attr]
                                             panel, nr)
            else:
                out = np.empty(shape, np.uint64)
                (qh, qw), (qsh, qsw), (qph, qpw) = pool.kernel_size, pool.stride, pool.padding
                _kernels.conv_threshold_pack_pool(
                    x.words, x.channels, w.words, sy, sx, py, px, neg == 1,
                    th.lim, th.flipw, qh, qw, qsh, qsw, qph, qpw,  # type: ignore[union-attr]
                    pool.or_words, out, nt, panel, nr)
            return PackedActivations.trusted(out, w.out_channels)
        if self.epilogue == "affine":
            aff = self.affine
            out = np.empty(shape, np.float32)
            _kernels.conv_affine(x.words, x.channels, w.words, sy, sx, py, px, neg == 1,
                                 aff.scale, aff.offset, out, self._nhwc, nt,  # type: ignore[union-attr]
                                 panel, nr)
            return out
        out = np.empty(shape, np.int32)
        _kernels.conv(x.words, x.channels, w.words, sy, sx, py, px, neg == 1, out, self._nhwc, nt,
                      panel, nr)
        return out


def prepare_conv2d(weights: Any, *, stride: IntPair = 1, padding: IntPair = 0,
                   pad_value: float = 1.0, threshold: Any = None, flip: Any = None,
                   alpha: Any = None, bias: Any = None, post_scale: Any = None,
                   post_offset: Any = None, post_fma: bool = False,
                   pool: MaxPoolSpec | None = None, layout: str = "nchw",
                   strict: bool = False) -> Conv2dPlan:
    r"""Validate a binary convolution and its epilogue once; returns a callable :class:`Conv2dPlan`.

    The epilogue is chosen by the arguments given:

    - none: int32 dot products (:func:`conv2d_packed`);
    - ``threshold`` (and ``flip``, ``pool``): the next layer's packed bits
      (:func:`conv2d_threshold`); ``threshold`` may be a prepared :class:`Thresholds`;
    - ``alpha`` (and ``bias``): float32 ``alpha[o] * d + bias[o]`` (:func:`conv2d_affine`);
      ``alpha`` may be a prepared :class:`Affine`.  With ``post_scale`` / ``post_offset``
      a second per-channel affine map follows, ``v * s + t`` in float32 with two roundings,
      or one (``fmaf``) with ``post_fma=True`` (e.g. an eval BatchNorm computed as torch
      computes it); the plan's call then also takes a ``residual`` added last
      (``conv -> BN -> + shortcut`` in one pass over the output).

    Args:
        weights: :class:`PackedConvWeights`, or real ``(O, C, k_h, k_w)`` weights (packed by
            sign, :func:`pack_conv_weights`).
        stride, padding, pad_value: as :func:`conv2d_packed`.
        threshold, flip: as :func:`conv2d_threshold`.
        alpha, bias: as :func:`conv2d_affine`.
        post_scale, post_offset, post_fma: the post-op (affine epilogue, ``pad_value`` ±1);
            ``post_scale`` may be a prepared :class:`Affine` (then ``post_offset=None``).
        pool: a :class:`MaxPoolSpec` for ``O`` channels (threshold epilogue only).
        layout: ``"nchw"`` or ``"nhwc"`` of int32 / float32 outputs.
        strict: real inputs passed to the plan must hold only ±1.

    Raises:
        TypeError / ValueError naming the argument.

    Examples::

        >>> w = np.ones((2, 3, 3, 3), np.float32)
        >>> plan = prepare_conv2d(w, padding=1, threshold=0.0)
        >>> plan(np.ones((1, 3, 4, 4), np.float32)).shape
        (1, 2, 4, 4)
    """
    if not isinstance(weights, PackedConvWeights):
        if isinstance(weights, (PackedBits, PackedActivations)):
            raise TypeError(f"weights must be a PackedConvWeights or real (O, C, kh, kw) "
                            f"weights, got {type(weights).__name__}")
        weights = _pack_conv_weights(_as_real(weights, "weights", 4, "(O, C, kh, kw)"), "weights")
    sy, sx = _pair(stride, "stride", 1)
    py, px = _pair(padding, "padding", 0)
    neg = _pad_value(pad_value)
    pv = (1.0, -1.0, 0.0)[neg]
    nhwc = _layout(layout)
    if not isinstance(strict, (bool, np.bool_)):
        raise TypeError(f"strict must be a bool, got {type(strict).__name__}")
    o, c, kh, kw = weights.shape
    k = c * kh * kw
    if k > _MAX_K:
        raise ValueError("weights: C_in * kh * kw must be < 2**31")
    mode, th, aff = _epilogue_mode(threshold, flip, alpha, bias, pool, o, k)
    if pool is not None:
        if not isinstance(pool, MaxPoolSpec):
            raise TypeError(f"pool must be a MaxPoolSpec (see prepare_maxpool2d) or None, "
                            f"got {type(pool).__name__}")
        if pool.channels != o:
            raise ValueError(f"pool was prepared for {pool.channels} channels, the conv has "
                             f"{o} output channels")
    if mode == "threshold" and nhwc:
        raise ValueError("layout applies to int32 / float32 outputs; the threshold epilogue "
                         "always emits packed NHWC bits (leave layout='nchw')")
    if not isinstance(post_fma, (bool, np.bool_)):
        raise TypeError(f"post_fma must be a bool, got {type(post_fma).__name__}")
    post: Affine | None = None
    if post_scale is not None:
        if mode != "affine":
            raise ValueError("post_scale needs the affine epilogue (alpha)")
        if neg == _ZERO_PAD:
            raise ValueError("pad_value=0.0 (zero padding) has no post-op / residual epilogue; "
                             "use pad_value=+1.0 or -1.0")
        if isinstance(post_scale, Affine):
            _affine(post_scale, post_offset, o, ("post_scale", "post_offset"))
            post = post_scale
        else:
            ps, po = (_frozen(v.copy()) for v in _affine(post_scale, post_offset, o,
                                                          ("post_scale", "post_offset")))
            post = Affine(ps, po, o)
    elif post_offset is not None:
        raise ValueError("post_offset needs post_scale (pass post_scale=1.0 for an offset alone)")
    elif post_fma:
        raise ValueError("post_fma needs post_scale")
    return Conv2dPlan(weights, (sy, sx), (py, px), pv, mode, th, aff, pool,
                      "nhwc" if nhwc else "nchw", bool(strict), post, bool(post_fma))


class MatmulPlan:
    r"""A binary matmul ``x_b W_b^T`` with its epilogue validated once: call it on each input.

    Built by :func:`prepare_matmul`.  ``plan(a)`` equals the one-shot function of its
    epilogue (:func:`xnor_matmul` / :func:`binary_matmul`, :func:`matmul_threshold` or
    :func:`matmul_affine`) bit for bit.

    Attributes:
        weights: :class:`PackedBits` ``(N, K)``.  epilogue: ``"int"``, ``"threshold"`` or
        ``"affine"``.  thresholds / affine: as :class:`Conv2dPlan`.  strict: real inputs
        must be ±1.
    """

    __slots__ = ("weights", "epilogue", "thresholds", "affine", "strict", "_panel")

    def __init__(self, weights: PackedBits, epilogue: str, thresholds: Thresholds | None,
                 affine: Affine | None, strict: bool) -> None:
        self.weights, self.epilogue, self.thresholds, self.affine, self.strict = \
            weights, epilogue, thresholds, affine, strict
        self._panel: tuple[int, np.ndarray, int] | None = None

    @property
    def in_features(self) -> int:
        return self.weights.k

    @property
    def out_features(self) -> int:
        return self.weights.rows

    def __repr__(self) -> str:
        return f"MatmulPlan(weights={self.weights!r}, epilogue={self.epilogue!r})"

    def __call__(self, a: Any, *, n_threads: int | None = None) -> Any:
        """Run on ``a``: :class:`PackedBits` ``(M, K)`` or a real ``(M, K)`` array / CPU
        tensor (packed by sign first, as :func:`pack_signs`).

        Returns:
            int32 / float32 ``np.ndarray`` ``(M, N)``, or :class:`PackedBits` ``(M, N)`` for
            the threshold epilogue.
        """
        nt = _threads(n_threads)
        if not isinstance(a, PackedBits):
            if isinstance(a, (PackedActivations, PackedConvWeights)):
                raise TypeError(f"a must be a PackedBits or a real (M, K) array, got "
                                f"{type(a).__name__} (see flatten_nhwc)")
            arr = _as_real(a, "a", 2, "(rows, k)")
            if self.strict:
                _check_strict(arr, "a")
            a = _pack_rows(arr, "a", nt)
        b = self.weights
        if a.k != b.k:
            raise ValueError(f"a has k={a.k} columns but the plan's weights have k={b.k}")
        m = a.words.shape[0]
        # the blocked path (more than 8 rows) reads a panel of the weights: kept on the plan
        panel, nr = _panel_for(self, b.words) if m > 8 else (None, 0)
        if self.epilogue == "threshold":
            th = self.thresholds
            out = np.zeros((m, n_words(b.rows)), np.uint64)
            _kernels.gemm_threshold_pack(a.words, b.words, a.k, th.lim, th.flipw, out, nt,  # type: ignore[union-attr]
                                         panel, nr)
            return PackedBits.trusted(out, b.rows)
        if self.epilogue == "affine":
            aff = self.affine
            out = np.empty((m, b.rows), np.float32)
            _kernels.gemm_affine(a.words, b.words, a.k, aff.scale, aff.offset, out, nt,  # type: ignore[union-attr]
                                 panel, nr)
            return out
        out = np.empty((m, b.rows), np.int32)
        _kernels.gemm(a.words, b.words, a.k, out, nt, panel, nr)
        return out


def prepare_matmul(weights: Any, *, threshold: Any = None, flip: Any = None, alpha: Any = None,
                   bias: Any = None, strict: bool = False) -> MatmulPlan:
    r"""Validate a binary matmul and its epilogue once; returns a callable :class:`MatmulPlan`.

    Epilogues as :func:`prepare_conv2d`: none (int32, :func:`xnor_matmul`), ``threshold``
    / ``flip`` (packed bits, :func:`matmul_threshold`) or ``alpha`` / ``bias`` (float32,
    :func:`matmul_affine`).

    Args:
        weights: :class:`PackedBits` ``(N, K)`` (one row per output), or real ``(N, K)``
            weights (packed by sign, :func:`pack_signs`).
        threshold, flip, alpha, bias: the epilogue (see above).
        strict: real inputs passed to the plan must hold only ±1.

    Examples::

        >>> plan = prepare_matmul(np.array([[1.0, -1.0, 1.0]], np.float32), alpha=0.5)
        >>> plan(np.array([[1.0, 1.0, 1.0]], np.float32))
        array([[0.5]], dtype=float32)
    """
    if not isinstance(weights, PackedBits):
        if isinstance(weights, (PackedActivations, PackedConvWeights)):
            raise TypeError(f"weights must be a PackedBits or real (N, K) weights, got "
                            f"{type(weights).__name__}")
        weights = _pack_rows(_as_real(weights, "weights", 2, "(N, K)"), "weights", 1)
    if not isinstance(strict, (bool, np.bool_)):
        raise TypeError(f"strict must be a bool, got {type(strict).__name__}")
    mode, th, aff = _epilogue_mode(threshold, flip, alpha, bias, None, weights.rows, weights.k)
    return MatmulPlan(weights, mode, th, aff, bool(strict))


class PackPlan:
    r"""Sign packing of an NCHW batch into NHWC words, with an optional per-channel affine
    map before the sign and a bit max-pool after it, validated once.

    Built by :func:`prepare_pack_nhwc`; ``plan(x)`` equals :func:`pack_nhwc` (no affine) or
    :func:`pack_nhwc_affine` (with ``pool``) bit for bit.

    Attributes:
        channels: ``C``.  affine: :class:`Affine` or None.  pool: :class:`MaxPoolSpec` or
        None.  strict: (no affine) refuse values other than ±1.
    """

    __slots__ = ("channels", "affine", "pool", "strict", "_shapes")

    def __init__(self, channels: int, affine: Affine | None, pool: MaxPoolSpec | None,
                 strict: bool) -> None:
        self.channels, self.affine, self.pool, self.strict = channels, affine, pool, strict
        self._shapes: dict[tuple[int, ...], tuple[int, ...]] = {}

    def __repr__(self) -> str:
        return (f"PackPlan(channels={self.channels}, affine={self.affine is not None}, "
                f"pool={self.pool is not None})")

    def __call__(self, x: Any, *, n_threads: int | None = None) -> PackedActivations:
        """Pack the real ``(N, C, H, W)`` array / CPU tensor ``x`` (float32 with an affine map)."""
        nt = _threads(n_threads)
        c = self.channels
        if self.affine is None:
            arr = _as_real(x, "x", 4, "(N, C, H, W)")
            if self.strict:
                _check_strict(arr, "x")
        else:
            arr = _as_f32_input(x, "x", 4, "(N, C, H, W)")
        if arr.shape[1] != c:
            raise ValueError(f"x has {arr.shape[1]} channels (dim 1), the plan expects {c}")
        n, _, h, w = arr.shape
        key = arr.shape
        shape = self._shapes.get(key)
        if shape is None:
            oh, ow = (h, w) if self.pool is None else _pool_shape(self.pool, c, h, w, "x")
            shape = (n, oh, ow, n_words(c))
            if len(self._shapes) > 64:
                self._shapes.clear()
            self._shapes[key] = shape
        if self.pool is not None and self.affine is None:
            return maxpool2d_packed(_pack_nchw(arr, nt), self.pool, n_threads=nt)
        out = np.empty(shape, np.uint64)
        if self.pool is not None:
            pool, aff = self.pool, self.affine
            (kh, kw), (sh, sw), (ph, pw) = pool.kernel_size, pool.stride, pool.padding
            bad = _kernels.pack_nchw_affine_pool(arr, aff.scale, aff.offset, kh, kw, sh, sw,  # type: ignore[union-attr]
                                                 ph, pw, pool.or_words, out, nt)
        elif self.affine is not None:
            bad = _kernels.pack_nchw_affine(arr.reshape(n, c, h * w), self.affine.scale,
                                            self.affine.offset, out.reshape(n, h * w, shape[3]), nt)
        else:
            bad = _kernels.pack_nchw(arr.reshape(n, c, h * w), out.reshape(n, h * w, shape[3]), nt)
        if bad:
            raise _nonfinite_error("x")
        return PackedActivations.trusted(out, c)


def prepare_pack_nhwc(channels: int, *, scale: Any = None, offset: Any = None,
                      pool: MaxPoolSpec | None = None, strict: bool = False) -> PackPlan:
    r"""Validate a sign packer for NCHW batches once; returns a callable :class:`PackPlan`.

    Args:
        channels: ``C``, >= 1.
        scale, offset: ``None`` (plain sign, any real dtype), or a per-channel affine map
            applied before the sign as in :func:`pack_nhwc_affine` (float32 inputs);
            ``scale`` may be a prepared :class:`Affine` (then ``offset=None``).
        pool: ``None`` or a :class:`MaxPoolSpec` for ``C`` channels (max-pool on the bits,
            in the same call).
        strict: without an affine map, refuse values other than ±1.
    """
    c = check_int(channels, "channels", min_value=1)
    if not isinstance(strict, (bool, np.bool_)):
        raise TypeError(f"strict must be a bool, got {type(strict).__name__}")
    aff: Affine | None = None
    if scale is not None:
        if strict:
            raise ValueError("strict applies to plain sign packing; leave it False with scale")
        if isinstance(scale, Affine):
            if offset is not None:
                raise ValueError("offset must be None when scale is a prepared Affine")
            if scale.channels != c:
                raise ValueError(f"scale was prepared for {scale.channels} channels, "
                                 f"expected {c}")
            aff = scale
        else:
            aff = prepare_affine(scale, offset, channels=c)
    elif offset is not None:
        raise ValueError("offset needs scale (pass scale=1.0 for an offset alone)")
    if pool is not None:
        if not isinstance(pool, MaxPoolSpec):
            raise TypeError(f"pool must be a MaxPoolSpec (see prepare_maxpool2d) or None, "
                            f"got {type(pool).__name__}")
        if pool.channels != c:
            raise ValueError(f"pool was prepared for {pool.channels} channels, expected {c}")
    return PackPlan(c, aff, pool, bool(strict))


# ----------------------------------------------------------------------------- info / ISA
def kernel_info() -> dict:
    """What the kernels run on, for benchmark reports.

    Returns:
        dict with ``isa`` (level used now: "avx512", "avx2", "popcnt" or "portable"),
        ``isa_detected`` (best the CPU supports), ``avx2_available``, ``avx2_used``,
        ``avx512_vpopcntdq_available``, ``avx512_used``, ``portable_forced``, ``openmp``
        (compiled with OpenMP), ``threading`` ("pool" or "openmp"), ``pool_workers``
        (worker threads started so far), ``pool_stalls`` (times the pool fell back to one
        thread for 100 ms because a worker was descheduled mid-job), ``omp_max_threads``, ``num_threads`` (the default
        ``n_threads``), ``num_threads_source``, ``tiles`` (register-tile shapes) and
        ``panel_kernel`` (the GEMM/conv tile kernel of the level: "hybrid" or "lookup" on
        AVX2, chosen by a one-time calibration, see ext/README.md; "main" elsewhere).
    """
    lvl, det = _kernels.level(), _kernels.detected_level()
    return {
        "isa": _ISA_NAMES[lvl],
        "isa_detected": _ISA_NAMES[det],
        "avx2_available": det >= 2,
        "avx2_used": lvl >= 2,
        "avx512_vpopcntdq_available": det >= 3,
        "avx512_used": lvl >= 3,
        "portable_forced": lvl < det,
        "openmp": _kernels.openmp_enabled(),
        "threading": _BACKENDS[_kernels.backend()],
        "pool_workers": _kernels.pool_size(),
        "pool_stalls": _kernels.pool_stalls(),
        "omp_max_threads": _kernels.openmp_max_threads(),
        "num_threads": get_num_threads(),
        "num_threads_source": "set_num_threads" if _num_threads is not None
        else ("torch" if _torch() is not None else "openmp"),
        "tiles": _kernels.tiles(lvl),
        "panel_kernel": _panel_kernel_name(lvl),
    }


def _set_isa(name: str | None) -> str:
    """PRIVATE (tests, benchmarks): cap the instruction set; ``None``/"auto" = best.

    Returns the level now in use.  Also set at import from the environment variable
    ``BNNLAB_ISA`` (auto, avx512, avx2, popcnt, portable).
    """
    if name is None or name == "auto":
        _kernels.set_level_cap(len(_ISA_NAMES) - 1)
    elif name in _ISA_NAMES:
        _kernels.set_level_cap(_ISA_NAMES.index(name))
    else:
        raise ValueError(f"name must be one of {('auto',) + tuple(_ISA_NAMES)}, got {name!r}")
    return _ISA_NAMES[_kernels.level()]


_PANEL_KERNELS = ("auto", "main", "alt")


def _panel_kernel_name(lvl: int) -> str:
    if not _kernels.has_panel_alt(lvl):
        return "main"
    return ("lookup", "hybrid")[_kernels.panel_variant(lvl)]


def _set_panel_kernel(name: str) -> str:
    """PRIVATE (tests, benchmarks): which panel (GEMM/conv tile) kernel a level with two
    runs: "auto" (default: the faster by a one-time calibration), "main" (AVX2: the vector
    nibble-lookup tile) or "alt" (AVX2: the hybrid vector + scalar-POPCNT tile).  Both give
    identical results.  Returns the previous setting.  Also set at import from
    ``BNNLAB_PANEL_KERNEL``."""
    if name not in _PANEL_KERNELS:
        raise ValueError(f"name must be one of {_PANEL_KERNELS}, got {name!r}")
    return _PANEL_KERNELS[_kernels.set_panel_variant(_PANEL_KERNELS.index(name) - 1) + 1]


def _force_portable(flag: bool = True) -> None:
    """PRIVATE: force the portable C path (True) or go back to the best ISA (False)."""
    _set_isa("portable" if flag else None)


def _available_isas() -> tuple[str, ...]:
    """PRIVATE: every ISA level this CPU can run, lowest first."""
    return _ISA_NAMES[: _kernels.detected_level() + 1]


_BACKENDS = ("pool", "openmp")


def _set_threading(backend: str) -> str:
    """PRIVATE (tests, benchmarks): "pool" (default: bnnlab's work-claiming thread pool)
    or "openmp" (an OpenMP dynamic loop, which shares torch's libgomp threads).  Returns
    the previous backend.  Also set at import from ``BNNLAB_THREADING``."""
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if backend == "openmp" and not _kernels.openmp_enabled():
        raise ValueError("backend 'openmp' is unavailable: the extension was built without OpenMP")
    return _BACKENDS[_kernels.set_backend(_BACKENDS.index(backend))]


def _reset_pool_backoff() -> None:
    """PRIVATE (benchmarks): forget a pending single-thread back-off of the pool, so that a
    2-thread measurement right after a stalled job really uses 2 threads."""
    _kernels.pool_reset_backoff()


def _set_grain_scale(scale: float) -> float:
    """PRIVATE (tests): multiply the minimum work per thread; 0 = always use n_threads
    threads, even on tiny problems, and never back off to one thread (the pool's adaptive
    back-off, ext/README.md).  Returns the previous value."""
    _kernels.set_pool_backoff(scale > 0)
    return _kernels.set_grain_scale(float(scale))


def _apply_env(name: str, setter: Callable[[str], Any], expected: str | None = None) -> None:
    """Apply ``$name`` (stripped, lower-cased) with ``setter``; warn and ignore a bad value."""
    value = os.environ.get(name)
    if not value:
        return
    try:
        setter(value.strip().lower())
    except ValueError as exc:
        why = f"expected one of {expected}" if expected is not None else str(exc)
        warnings.warn(f"ignoring {name}={value!r}: {why}", RuntimeWarning, stacklevel=2)


_apply_env("BNNLAB_ISA", _set_isa, str(("auto",) + tuple(_ISA_NAMES)))
_apply_env("BNNLAB_PANEL_KERNEL", _set_panel_kernel)
_apply_env("BNNLAB_THREADING", _set_threading)
