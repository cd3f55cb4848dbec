"""The pickle-free packed file format: save (encode) and load (decode, validated before allocating).

Part of :mod:`bnnlab.packed` (see its docstring for the rules and the format)."""
from __future__ import annotations

import builtins
import hashlib
import json
import math
import os
import struct
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from bnnlab import kernels
from bnnlab.packed.layers import (
    PackedConv2d,
    PackedFlatten,
    PackedLinear,
    PackedMaxPool2d,
    PackedSign,
    _bits_to_words,
    _contains_packed,
    _np,
    _pair_list,
)

if TYPE_CHECKING:
    from bnnlab.packed.model import PackedModel


FORMAT_VERSION = 1
MAGIC = b"BNNLABPK"
_FORMAT_NAME = "bnnlab.packed"
_DIGEST_BYTES = 32

# =============================================================================== (de)serialise
_FLOAT_KINDS = {
    "flatten": nn.Flatten, "linear": nn.Linear, "conv2d": nn.Conv2d,
    "batchnorm1d": nn.BatchNorm1d, "batchnorm2d": nn.BatchNorm2d, "maxpool2d": nn.MaxPool2d,
    "avgpool2d": nn.AvgPool2d, "adaptiveavgpool2d": nn.AdaptiveAvgPool2d, "relu": nn.ReLU,
    "hardtanh": nn.Hardtanh, "identity": nn.Identity, "dropout": nn.Dropout, "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid, "leakyrelu": nn.LeakyReLU,
}








def _encode_stage(m: Any, where: str) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    if isinstance(m, (PackedLinear, PackedConv2d)):
        cfg: dict[str, Any] = {"input": m.input_mode, "beta": m.beta,
                               "d_offset": int(m.d_offset), "fused": m.fused}
        if m.folded_bn:                       # absent in files without a folded BatchNorm
            cfg["folded_bn"] = True
        arrays = {"weight": m.weight.words}
        for key in ("tau", "alpha_q", "alpha_x", "gamma", "bias"):
            t = getattr(m, key)
            if t is not None:
                arrays[key] = _np(t)
        if m.threshold is not None and m.flip is not None:       # fused
            arrays["threshold"] = m.threshold.astype(np.float32)
            if m.flip.any():
                arrays["flip"] = _bits_to_words(m.flip).view(np.uint8)
        if isinstance(m, PackedLinear):
            cfg.update(in_features=m.in_features, out_features=m.out_features,
                       nhwc=list(m.nhwc) if m.nhwc else None)
            return "packed_linear", cfg, arrays
        cfg.update(in_channels=m.in_channels, out_channels=m.out_channels,
                   kernel_size=list(m.kernel_size), stride=list(m.stride),
                   padding=list(m.padding), pad_value=m.pad_value)
        return "packed_conv2d", cfg, arrays
    if isinstance(m, PackedMaxPool2d):
        cfg = {"channels": m.channels, "kernel_size": list(m.kernel_size),
               "stride": list(m.stride), "padding": list(m.padding)}
        arrays = {"or_channels": _bits_to_words(m.or_channels).view(np.uint8)} \
            if m.or_channels.any() else {}
        return "packed_maxpool2d", cfg, arrays
    if isinstance(m, PackedFlatten):
        return "packed_flatten", {"channels": m.channels, "hw": m.hw}, {}
    if isinstance(m, PackedSign):
        arrays = {"threshold": m.threshold.reshape(-1).numpy().astype(np.float32)}
        if m.negate.any():
            arrays["negate"] = _bits_to_words(m.negate).view(np.uint8)
        return "packed_sign", {"channels": m.channels, "ndim": m.ndim}, arrays
    t = type(m)
    if t is nn.Flatten:
        return "flatten", {"start_dim": m.start_dim, "end_dim": m.end_dim}, {}
    if t is nn.Linear:
        arrays = {"weight": _np(m.weight)}
        if m.bias is not None:
            arrays["bias"] = _np(m.bias)
        return "linear", {"in_features": m.in_features, "out_features": m.out_features}, arrays
    if t is nn.Conv2d:
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise ValueError(f"cannot save stage {where} (Conv2d): padding {m.padding!r} / "
                             f"{m.padding_mode!r} is not supported by the file format")
        arrays = {"weight": _np(m.weight)}
        if m.bias is not None:
            arrays["bias"] = _np(m.bias)
        cfg = {"in_channels": m.in_channels, "out_channels": m.out_channels,
               "kernel_size": list(m.kernel_size), "stride": list(m.stride),
               "padding": list(m.padding), "dilation": list(m.dilation), "groups": m.groups}
        return "conv2d", cfg, arrays
    if t in (nn.BatchNorm1d, nn.BatchNorm2d):
        if not m.track_running_stats or m.running_mean is None:
            raise ValueError(f"cannot save stage {where} ({t.__name__}): no running statistics")
        arrays = {"running_mean": _np(m.running_mean), "running_var": _np(m.running_var)}
        if m.affine:
            arrays["weight"], arrays["bias"] = _np(m.weight), _np(m.bias)
        return t.__name__.lower(), {"num_features": m.num_features, "eps": float(m.eps),
                                    "affine": bool(m.affine)}, arrays
    if t in (nn.MaxPool2d, nn.AvgPool2d):
        stride = m.stride if m.stride is not None else m.kernel_size
        cfg = {"kernel_size": _pair_list(m.kernel_size), "stride": _pair_list(stride),
               "padding": _pair_list(m.padding), "ceil_mode": bool(m.ceil_mode)}
        if t is nn.MaxPool2d:
            if m.return_indices:
                raise ValueError(f"cannot save stage {where} (MaxPool2d): return_indices=True")
            cfg["dilation"] = _pair_list(m.dilation)
        else:
            if m.divisor_override is not None:
                raise ValueError(f"cannot save stage {where} (AvgPool2d): divisor_override")
            cfg["count_include_pad"] = bool(m.count_include_pad)
        return t.__name__.lower(), cfg, {}
    if t is nn.AdaptiveAvgPool2d:
        size = m.output_size
        if not isinstance(size, (tuple, list)):
            size = (size, size)
        if any(s is None for s in size):
            raise ValueError(f"cannot save stage {where} (AdaptiveAvgPool2d): None output size")
        return "adaptiveavgpool2d", {"output_size": [int(s) for s in size]}, {}
    if t is nn.Hardtanh:
        return "hardtanh", {"min_val": float(m.min_val), "max_val": float(m.max_val)}, {}
    if t is nn.LeakyReLU:
        return "leakyrelu", {"negative_slope": float(m.negative_slope)}, {}
    if t is nn.Dropout:
        return "dropout", {"p": float(m.p)}, {}
    for kind in ("relu", "identity", "tanh", "sigmoid"):
        if t is _FLOAT_KINDS[kind]:
            return kind, {}, {}
    if _contains_packed(m):
        raise ValueError(f"cannot save stage {where} ({t.__name__}): it holds packed layers inside "
                         "a block (module replacement); only flat nn.Sequential exports can be "
                         "saved")
    raise ValueError(f"cannot save stage {where} ({t.__name__}): not supported by the packed file "
                     f"format (supported float modules: {', '.join(sorted(_FLOAT_KINDS))})")


class _Reader:
    """Typed access to one stage record, raising ValueError that names the stage."""

    def __init__(self, rec: dict, index: int, payload: memoryview, used: list) -> None:
        self.where = f"stage {index}"
        if not isinstance(rec, dict):
            raise self.err("record is not an object")
        self.rec = rec
        cfg, table = rec.get("cfg"), rec.get("arrays")
        if not isinstance(cfg, dict) or not isinstance(table, dict):
            raise self.err("missing cfg or arrays")
        self.cfg: dict[str, Any] = cfg
        self.table: dict[str, Any] = table
        self.payload = payload
        self.used = used
        self.taken: set = set()
        self.prev: nn.Module | None = None     # the stage decoded before this one

    def err(self, msg: str) -> ValueError:
        return ValueError(f"{self.where}: {msg}")

    def int(self, key: str, minimum: builtins.int = 0) -> builtins.int:
        v = self.cfg.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise self.err(f"cfg {key!r} must be an int >= {minimum}, got {v!r}")
        return v

    def ints(self, key: str, n: builtins.int, minimum: builtins.int = 0) -> Any:
        """``n`` ints >= ``minimum`` as a tuple (a pair for ``n = 2``)."""
        v = self.cfg.get(key)
        if not isinstance(v, list) or len(v) != n or any(
                isinstance(e, bool) or not isinstance(e, int) or e < minimum for e in v):
            raise self.err(f"cfg {key!r} must be {n} ints >= {minimum}, got {v!r}")
        return tuple(v)

    def float(self, key: str) -> builtins.float:
        v = self.cfg.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.err(f"cfg {key!r} must be a finite number, got {v!r}")
        return float(v)

    def bool(self, key: str) -> builtins.bool:
        v = self.cfg.get(key)
        if not isinstance(v, bool):
            raise self.err(f"cfg {key!r} must be a bool, got {v!r}")
        return v

    def choice(self, key: str, options: tuple) -> Any:
        v = self.cfg.get(key)
        if v not in options:
            raise self.err(f"cfg {key!r} must be one of {options}, got {v!r}")
        return v

    def array(self, name: str, dtype: str, shape: tuple[Any, ...],
              optional: builtins.bool = False) -> Any:
        if name not in self.table:
            if optional:
                return None
            raise self.err(f"array {name!r} is missing")
        self.taken.add(name)
        entry = self.table[name]
        if (not isinstance(entry, list) or len(entry) != 3 or not isinstance(entry[0], str)
                or not isinstance(entry[1], list) or isinstance(entry[2], bool)
                or not isinstance(entry[2], int)):
            raise self.err(f"array {name!r}: malformed entry {entry!r}")
        dt, shp, off = entry
        if dt != np.dtype(dtype).str:
            raise self.err(f"array {name!r} has dtype {dt}, expected {np.dtype(dtype).str}")
        if tuple(shp) != tuple(shape):
            raise self.err(f"array {name!r} has shape {tuple(shp)}, expected {tuple(shape)}")
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize      # Python ints: no overflow
        if off < 0 or off % 8 or off + nbytes > len(self.payload):
            raise self.err(f"array {name!r}: offset {off} + {nbytes} bytes is outside the payload")
        self.used.append((off, off + nbytes, f"{self.where}/{name}"))
        dt = np.dtype(dtype)
        arr = np.frombuffer(self.payload, dtype=dt, count=nbytes // dt.itemsize,
                            offset=off).reshape(shape)
        return arr.astype(np.dtype(dtype).newbyteorder("="), copy=True)

    def tensor(self, name: str, shape: tuple[Any, ...], optional: builtins.bool = False) -> Any:
        """The float32 array ``name`` as a tensor (``None`` only when ``optional`` and absent)."""
        arr = self.array(name, "<f4", shape, optional)
        if arr is None:
            return None
        if not np.isfinite(arr).all():
            raise self.err(f"array {name!r} contains NaN or inf")
        return torch.from_numpy(arr)

    def finish(self, known_cfg: set) -> None:
        extra = set(self.table) - self.taken
        if extra:
            raise self.err(f"unexpected arrays {sorted(extra)}")
        extra_cfg = set(self.cfg) - known_cfg
        if extra_cfg:
            raise self.err(f"unexpected cfg keys {sorted(extra_cfg)}")


_LAYER_CFG = {"input", "beta", "d_offset", "fused", "folded_bn"}


def _decode_layer(r: _Reader, kind: str) -> nn.Module:
    mode = r.choice("input", ("sign", "rsign", "binary"))
    if kind == "packed_linear":
        m: Any = PackedLinear()
        m.in_features, m.out_features = r.int("in_features", 1), r.int("out_features", 1)
        o, cin = m.out_features, m.in_features
        nhwc = r.cfg.get("nhwc")
        if nhwc is not None:
            if (not isinstance(nhwc, list) or len(nhwc) != 2 or any(
                    isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in nhwc)
                    or nhwc[0] * nhwc[1] != cin):
                raise r.err(f"cfg 'nhwc' must be [C, HW] with C*HW = in_features, got {nhwc!r}")
            m.nhwc = (nhwc[0], nhwc[1])
            k = nhwc[1] * kernels.n_words(nhwc[0]) * 64
        else:
            k = cin
        words = r.array("weight", "<u8", (o, kernels.n_words(k)))
        try:
            m.weight = kernels.PackedBits(words, k)
        except ValueError as exc:
            raise r.err(f"weight: {exc}") from exc
        beta_options = (None, "dense")
        known = _LAYER_CFG | {"in_features", "out_features", "nhwc"}
        view_c = cin
    else:
        m = PackedConv2d()
        m.in_channels, m.out_channels = r.int("in_channels", 1), r.int("out_channels", 1)
        m.kernel_size = r.ints("kernel_size", 2, 1)
        m.stride = r.ints("stride", 2, 1)
        m.padding = r.ints("padding", 2, 0)
        m.pad_value = r.float("pad_value")
        if m.pad_value not in (1.0, -1.0, 0.0):
            raise r.err(f"cfg 'pad_value' must be 1.0, -1.0 or 0.0, got {m.pad_value}")
        m.pad_value += 0.0                    # -0.0 -> 0.0
        o = m.out_channels
        words = r.array("weight", "<u8", (o, *m.kernel_size, kernels.n_words(m.in_channels)))
        try:
            m.weight = kernels.PackedConvWeights(words, m.in_channels)
        except ValueError as exc:
            raise r.err(f"weight: {exc}") from exc
        beta_options = (None, "kmap")
        known = _LAYER_CFG | {"in_channels", "out_channels", "kernel_size", "stride", "padding",
                              "pad_value"}
        view_c = m.in_channels
    m.name = str(r.rec.get("name", ""))
    m.input_mode = mode
    m.folded_bn = r.bool("folded_bn") if "folded_bn" in r.cfg else False
    m.beta = r.choice("beta", beta_options)
    m.d_offset = r.int("d_offset", 0)
    nhwc = getattr(m, "nhwc", None)
    want = 0 if nhwc is None else nhwc[1] * (kernels.n_words(nhwc[0]) * 64 - nhwc[0])
    if m.d_offset != want:
        raise r.err(f"cfg 'd_offset' is {m.d_offset}, the layout needs {want}")
    m.tau = r.tensor("tau", (view_c,), optional=mode != "rsign")
    if (m.tau is None) == (mode == "rsign"):
        raise r.err("array 'tau' must be present exactly for input 'rsign'")
    m.alpha_q = r.tensor("alpha_q", (o,), optional=True)
    m.alpha_x = r.tensor("alpha_x", (o,), optional=True)
    m.bias = r.tensor("bias", (o,), optional=True)
    if "gamma" in r.table:
        entry = r.table["gamma"]
        shp = tuple(entry[1]) if isinstance(entry, list) and len(entry) == 3 and \
            isinstance(entry[1], list) else None
        allowed: list[tuple[Any, ...] | None] = [(1,), (o,)] if kind == "packed_linear" else \
            [(1, 1, 1), (o, 1, 1)]
        if kind == "packed_conv2d" and shp is not None and len(shp) == 3 and shp[0] == o \
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shp):
            allowed.append(shp)
        if shp is None or shp not in allowed:
            raise r.err(f"array 'gamma' has shape {shp}, expected one of {allowed}")
        m.gamma = r.tensor("gamma", shp)
    if r.bool("fused"):
        if m.folded_bn:
            raise r.err("cfg 'folded_bn' is only valid for a layer with a float epilogue "
                        "(fused is true)")
        thr = r.array("threshold", "<f4", (o,)).astype(np.float64)
        if np.isnan(thr).any():
            raise r.err("threshold contains NaN")
        fl = r.array("flip", "|u1", (kernels.n_words(o) * 8,), optional=True)
        flip = np.zeros(o, bool) if fl is None else \
            np.unpackbits(fl, bitorder="little")[:o].astype(bool)
        m._set_threshold(thr, flip)
    r.finish(known)
    return m


def _from_arrays(m: Any, params: dict[str, Tensor | None],
                 buffers: dict[str, Tensor] | None = None) -> nn.Module:
    """Give a module built on the meta device (no memory) its loaded arrays."""
    for key, value in params.items():
        if value is not None:
            setattr(m, key, nn.Parameter(value, requires_grad=False))
    for key, value in (buffers or {}).items():
        setattr(m, key, value)
    return m


def _decode_float(r: _Reader, kind: str) -> nn.Module:
    cls = _FLOAT_KINDS[kind]
    if kind == "flatten":
        m: nn.Module = nn.Flatten(r.cfg.get("start_dim", 1), r.cfg.get("end_dim", -1))
        for key in ("start_dim", "end_dim"):
            v = r.cfg.get(key)
            if isinstance(v, bool) or not isinstance(v, int):
                raise r.err(f"cfg {key!r} must be an int")
        r.finish({"start_dim", "end_dim"})
        return m
    if kind == "linear":
        i, o = r.int("in_features", 1), r.int("out_features", 1)
        weight = r.tensor("weight", (o, i))              # sizes checked against the payload
        bias = r.tensor("bias", (o,), optional=True)
        r.finish({"in_features", "out_features"})
        return _from_arrays(nn.Linear(i, o, bias=bias is not None, device="meta"),
                            {"weight": weight, "bias": bias})
    if kind == "conv2d":
        ci, co, g = r.int("in_channels", 1), r.int("out_channels", 1), r.int("groups", 1)
        ks = r.ints("kernel_size", 2, 1)
        if ci % g or co % g:
            raise r.err("groups must divide the channels")
        weight = r.tensor("weight", (co, ci // g, *ks))
        bias = r.tensor("bias", (co,), optional=True)
        m = nn.Conv2d(ci, co, ks, r.ints("stride", 2, 1), r.ints("padding", 2, 0),
                      r.ints("dilation", 2, 1), g, bias=bias is not None, device="meta")
        r.finish({"in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                  "groups"})
        return _from_arrays(m, {"weight": weight, "bias": bias})
    if kind in ("batchnorm1d", "batchnorm2d"):
        n = r.int("num_features", 1)
        eps = r.float("eps")
        if eps < 0:
            raise r.err("eps must be >= 0")
        affine = r.bool("affine")
        mean = r.tensor("running_mean", (n,))
        var = r.tensor("running_var", (n,))
        if (var < 0).any():
            raise r.err("running_var must be >= 0")
        weight = r.tensor("weight", (n,)) if affine else None
        bias = r.tensor("bias", (n,)) if affine else None
        r.finish({"num_features", "eps", "affine"})
        return _from_arrays(cls(n, eps=eps, affine=affine, device="meta"),
                            {"weight": weight, "bias": bias},
                            {"running_mean": mean, "running_var": var,
                             "num_batches_tracked": torch.tensor(0, dtype=torch.long)})
    if kind in ("maxpool2d", "avgpool2d"):
        k, s, p = r.ints("kernel_size", 2, 1), r.ints("stride", 2, 1), r.ints("padding", 2, 0)
        if p[0] * 2 > k[0] or p[1] * 2 > k[1]:
            raise r.err("padding must be at most half the kernel size")
        if kind == "maxpool2d":
            m = nn.MaxPool2d(k, s, p, r.ints("dilation", 2, 1), ceil_mode=r.bool("ceil_mode"))
            r.finish({"kernel_size", "stride", "padding", "dilation", "ceil_mode"})
        else:
            m = nn.AvgPool2d(k, s, p, ceil_mode=r.bool("ceil_mode"),
                             count_include_pad=r.bool("count_include_pad"))
            r.finish({"kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"})
        return m
    if kind == "adaptiveavgpool2d":
        m = nn.AdaptiveAvgPool2d(r.ints("output_size", 2, 1))
        r.finish({"output_size"})
        return m
    if kind == "hardtanh":
        lo, hi = r.float("min_val"), r.float("max_val")
        if not lo < hi:
            raise r.err(f"min_val must be < max_val, got {lo} and {hi}")
        r.finish({"min_val", "max_val"})
        return nn.Hardtanh(lo, hi)
    if kind == "leakyrelu":
        m = nn.LeakyReLU(r.float("negative_slope"))
        r.finish({"negative_slope"})
        return m
    if kind == "dropout":
        prob = r.float("p")
        if not 0 <= prob <= 1:
            raise r.err("p must be in [0, 1]")
        r.finish({"p"})
        return nn.Dropout(prob)
    r.finish(set())
    return cls()


def _packed_channels(m: Any | None) -> int | None:
    """Channels of the PackedActivations that stage ``m`` emits (None: it emits none)."""
    if isinstance(m, PackedSign) and m.ndim == 4:
        return m.channels
    if isinstance(m, PackedConv2d) and m.fused:
        return m.out_channels
    if isinstance(m, PackedMaxPool2d):
        return m.channels
    return None


def _decode_stage(r: _Reader) -> nn.Module:
    kind = r.rec.get("kind")
    if kind in ("packed_linear", "packed_conv2d"):
        return _decode_layer(r, kind)
    if kind in ("packed_maxpool2d", "packed_flatten"):
        c = r.int("channels", 1)
        if c != _packed_channels(r.prev):
            raise r.err(f"cfg 'channels' is {c}, but the previous stage does not emit packed "
                        f"activations with {c} channels")
    if kind == "packed_maxpool2d":
        fl = r.array("or_channels", "|u1", (kernels.n_words(c) * 8,), optional=True)
        flags = None if fl is None else np.unpackbits(fl, bitorder="little")[:c].astype(bool)
        pool = PackedMaxPool2d(c, r.ints("kernel_size", 2, 1), r.ints("stride", 2, 1),
                               r.ints("padding", 2, 0), flags)
        r.finish({"channels", "kernel_size", "stride", "padding"})
        return pool
    if kind == "packed_flatten":
        m = PackedFlatten(r.int("channels", 1), r.int("hw", 1))
        r.finish({"channels", "hw"})
        return m
    if kind == "packed_sign":
        c = r.int("channels", 1)
        ndim = r.choice("ndim", (2, 4))
        thr = r.array("threshold", "<f4", (c,))
        if np.isnan(thr).any():
            raise r.err("threshold contains NaN")
        fl = r.array("negate", "|u1", (kernels.n_words(c) * 8,), optional=True)
        negate = np.zeros(c, bool) if fl is None else \
            np.unpackbits(fl, bitorder="little")[:c].astype(bool)
        r.finish({"channels", "ndim"})
        return PackedSign(thr, negate, ndim)
    if kind in _FLOAT_KINDS:
        return _decode_float(r, kind)
    raise r.err(f"unknown stage kind {kind!r}")


_MAX_HEADER = 1 << 20      # decompressed JSON header bytes (a stage takes ~200)
_MAX_DEFLATE_RATIO = 1032  # deflate expands at most ~1032:1 (zlib's technical details)


def _inflate(blob: bytes, limit: int) -> bytes:
    """zlib-decompress at most ``limit`` bytes; ValueError if the stream is longer or broken."""
    d = zlib.decompressobj()
    out = d.decompress(blob, limit + 1)
    if len(out) > limit or d.unconsumed_tail:
        raise ValueError(f"decompresses to more than the declared {limit} bytes")
    if not d.eof or d.unused_data:
        raise ValueError("compressed stream is incomplete or has trailing data")
    return out


def _decode(data: bytes, where: str = "<bytes>") -> PackedModel:
    from bnnlab.packed.model import PackedModel  # (model imports this module)

    def bad(msg: str) -> ValueError:
        return ValueError(f"{where}: {msg}")

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 8 or data[:8] != MAGIC:
        raise bad("not a bnnlab packed model file (bad magic; expected a file written by "
                  "PackedModel.save)")
    if len(data) < 24:
        raise bad(f"file is truncated ({len(data)} bytes)")
    version, hlen, zlen = struct.unpack("<IIQ", data[8:24])
    if version != FORMAT_VERSION:
        raise bad(f"unsupported format version {version} (this bnnlab reads {FORMAT_VERSION})")
    expected = 24 + hlen + zlen + _DIGEST_BYTES
    if len(data) < expected:
        raise bad(f"file is truncated ({len(data)} bytes, expected {expected})")
    if len(data) > expected:
        raise bad(f"file has {len(data) - expected} trailing bytes (expected {expected} bytes)")
    body, digest = data[:-_DIGEST_BYTES], data[-_DIGEST_BYTES:]
    if hashlib.sha256(body).digest() != digest:
        raise bad("checksum mismatch: the file is corrupted or was modified")
    try:
        header = json.loads(_inflate(data[24:24 + hlen], _MAX_HEADER).decode("utf-8"))
    except (ValueError, zlib.error, UnicodeDecodeError, RecursionError) as exc:
        raise bad(f"invalid header ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict) or header.get("format") != _FORMAT_NAME:
        raise bad("not a bnnlab packed model file (header format tag missing)")
    payload_bytes = header.get("payload_bytes")
    if isinstance(payload_bytes, bool) or not isinstance(payload_bytes, int) or payload_bytes < 0:
        raise bad("invalid header: payload_bytes")
    if payload_bytes > _MAX_DEFLATE_RATIO * zlen + 64:
        raise bad(f"invalid header: payload_bytes={payload_bytes} cannot come from {zlen} "
                  "compressed bytes")
    try:
        raw = _inflate(data[24 + hlen:24 + hlen + zlen], payload_bytes)
    except (ValueError, zlib.error) as exc:
        raise bad(f"invalid payload ({exc})") from None
    if len(raw) != payload_bytes:
        raise bad(f"payload has {len(raw)} bytes, the header declares {payload_bytes}")
    if header.get("version") != FORMAT_VERSION:
        raise bad(f"header version {header.get('version')!r} != {FORMAT_VERSION}")
    src = header.get("source_state_dict_bytes")
    if src is not None and (isinstance(src, bool) or not isinstance(src, int) or src < 0):
        raise bad("invalid header: source_state_dict_bytes")
    records = header.get("stages")
    if not isinstance(records, list) or not records:
        raise bad("invalid header: no stages")
    payload = memoryview(raw)
    used: list = []
    stages: list[nn.Module] = []
    for i, rec in enumerate(records):
        try:
            reader = _Reader(rec, i, payload, used)
            reader.prev = stages[-1] if stages else None
            stages.append(_decode_stage(reader))
        except (ValueError, TypeError, RuntimeError, OverflowError) as exc:
            msg = str(exc)
            if not msg.startswith(f"stage {i}:"):
                msg = f"stage {i}: {msg}"
            raise bad(f"invalid packed model file: {msg}") from None
    used.sort()
    for (_, e0, n0), (b1, _, n1) in zip(used, used[1:], strict=False):
        if b1 < e0:
            raise bad(f"invalid packed model file: arrays {n0} and {n1} overlap")
    model = PackedModel(nn.Sequential(*stages), kind="sequential", source_state_dict_bytes=src,
                        notes=["loaded from file"])
    return model



def load(path: str | os.PathLike) -> PackedModel:
    """Load a file written by :meth:`PackedModel.save` (never unpickles).

    Raises:
        ValueError: not a bnnlab packed file, unsupported version, truncated, corrupted
            (checksum), or a stage whose configuration, dtypes or shapes are invalid.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    with open(os.fspath(path), "rb") as fh:
        data = fh.read()
    return _decode(data, where=os.fspath(path))
