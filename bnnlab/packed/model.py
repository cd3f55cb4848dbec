"""PackedModel: the exported network, callable like its source.

Part of :mod:`bnnlab.packed` (see its docstring for the rules and the format)."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import struct
import zlib
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bnnlab import kernels
from bnnlab.packed.fastops import fast_call, global_mean_flatten, mean_hw
from bnnlab.packed.fileformat import _FORMAT_NAME, FORMAT_VERSION, MAGIC, _decode, _encode_stage, load
from bnnlab.packed.layers import PackedConv2d, PackedMaxPool2d, PackedSign, _PackedLayer


# =============================================================================== the model
def _bound_plan(m: Any, pool: Any = None) -> Any:
    """A step running a fused packed layer's kernel plan directly on packed input (batch-1
    latency: skips ``forward``'s checks and the plan lookup). The plan is re-checked at every
    call against what it was built from (the prepared thresholds, the weight and the
    geometry, by identity / value); any other input or state goes through the layer's own
    path, which also refreshes the bound plan."""
    conv = isinstance(m, PackedConv2d)
    in_type = kernels.PackedActivations if conv else kernels.PackedBits
    slow = functools.partial(m._fast_pooled, pool=pool) if pool is not None else m.forward
    bound: list[Any] = [None, None, None, None]          # prepared, weight, geometry, plan

    def step(x: Any) -> Any:
        if type(x) is in_type and m.threshold is not None:
            b = bound
            if m._prepared is b[0] and b[0] is not None and m.weight is b[1] \
                    and m._geometry() == b[2]:
                return b[3](x)
            y = slow(x)
            if isinstance(m._prepared, kernels.Thresholds):
                bound[:] = [m._prepared, m.weight, m._geometry(),
                            m._kernel_plan(pool) if conv else m._kernel_plan()]
            return y
        return slow(x)
    return step


class PackedModel(nn.Module):
    r"""A network exported by :func:`export`: packed binary layers plus float torch modules.

    Callable like the source model (float tensor in, float tensor out); inference-only (always
    in eval mode, no gradient).

    Attributes:
        body: the module that runs (an ``nn.Sequential`` of stages for flat exports).
        kind: ``"sequential"`` (flat export, may be fused; can be saved) or ``"modules"``
            (module replacement inside any architecture; cannot be saved).
        notes: one line per binary layer: fused or not, and why; and one per BatchNorm folded
            into a float epilogue (``export(..., fold_float_bn=True)``).
        source_state_dict_bytes: size of ``torch.save(source.state_dict())`` (float32).
    """

    def __init__(self, body: nn.Module, *, kind: str = "sequential",
                 source_state_dict_bytes: int | None = None,
                 notes: list[str] | None = None) -> None:
        super().__init__()
        if kind not in ("sequential", "modules"):
            raise ValueError(f"kind must be 'sequential' or 'modules', got {kind!r}")
        self.body = body
        self.kind = kind
        self.source_state_dict_bytes = source_state_dict_bytes
        self.notes = list(notes or [])
        self.train(False)

    def train(self, mode: bool = True) -> Any:
        """Inference-only: the body always stays in eval mode."""
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(x, Tensor) and x.dim() >= 2 and x.shape[0] == 0:
            # an empty batch: the kernels need >= 1 row; run one zero sample for the output's
            # shape and return none of its rows
            return self.forward(x.new_zeros((1, *x.shape[1:])))[:0]
        # no_grad only where needed (entering it costs microseconds at batch 1)
        with torch.no_grad() if torch.is_grad_enabled() else contextlib.nullcontext():
            if self.kind == "sequential" and isinstance(self.body, nn.Sequential):
                y = x
                for f in self._steps():      # stage.forward: skips nn.Module.__call__ overhead
                    y = f(y)
            else:
                y = self.body(x)
        if not isinstance(y, Tensor):
            raise RuntimeError("the packed model ended on packed bits; the last layer must be "
                               "float")
        return y

    def _steps(self) -> list:
        """The stages' forwards (:func:`~bnnlab.packed.fastops.fast_call`), with
        ``PackedSign`` (4-D) / fused ``PackedConv2d`` followed by a ``PackedMaxPool2d`` merged
        into one kernel call, and ``AdaptiveAvgPool2d(1) -> Flatten`` into one mean (same
        bits, one stage fewer)."""
        mods = tuple(self.body._modules.values())
        cache = self.__dict__.get("_step_cache")
        # modules define no __eq__: the tuple comparison is by identity (a replaced stage,
        # e.g. body[3] = ..., rebuilds the steps)
        if cache is None or cache[0] != mods:
            steps: list[Any] = []
            i = 0
            while i < len(mods):
                m = mods[i]
                nxt = mods[i + 1] if i + 1 < len(mods) else None
                if isinstance(nxt, PackedMaxPool2d) and (
                        (isinstance(m, PackedSign) and m.ndim == 4 and m.channels == nxt.channels)
                        or (isinstance(m, PackedConv2d) and m.fused
                            and m.out_channels == nxt.channels)):
                    steps.append(_bound_plan(m, nxt.spec) if isinstance(m, PackedConv2d)
                                 else functools.partial(m._fast_pooled, pool=nxt.spec))
                    i += 2
                    continue
                if isinstance(m, _PackedLayer) and m.fused:
                    steps.append(_bound_plan(m))
                    i += 1
                    continue
                if nxt is not None and global_mean_flatten(m, nxt):
                    steps.append(mean_hw)
                    i += 2
                    continue
                prev = mods[i - 1] if i else None
                steps.append(fast_call(m, fresh=isinstance(prev, _PackedLayer)
                                        and not prev.fused))
                i += 1
            cache = (mods, steps)
            self.__dict__["_step_cache"] = cache
        return cache[1]

    # ---------------------------------------------------------------- inspection
    def packed_layers(self) -> list[_PackedLayer]:
        """Every packed binary layer, in module order."""
        return [m for m in self.modules() if isinstance(m, _PackedLayer)]

    def memory(self) -> dict:
        """Bytes of the binary weights: packed (held now) and as float32 (the source's)."""
        layers = self.packed_layers()
        packed = sum(m.packed_weight_bytes() for m in layers)
        flt = sum(m.float_weight_bytes() for m in layers)
        return {"packed_weight_bytes": packed, "float_weight_bytes": flt,
                "weight_ratio": flt / packed if packed else float("nan"),
                "binary_layers": len(layers)}

    def sizes(self) -> dict:
        """File size of :meth:`save` vs the float32 ``state_dict`` of the source model.

        Returns:
            dict with ``packed_file_bytes``, ``float_state_dict_bytes`` (``torch.save`` of the
            source model's float32 state_dict, measured at export), ``ratio`` (float / packed),
            and the :meth:`memory` figures.
        """
        packed = len(self.to_bytes())
        flt = self.source_state_dict_bytes
        out = {"packed_file_bytes": packed, "float_state_dict_bytes": flt,
               "ratio": (flt / packed) if flt else float("nan")}
        out.update(self.memory())
        return out

    def check_against(self, model: nn.Module, x: Tensor, *, rtol: float = 1e-4,
                      atol: float = 1e-4) -> dict:
        """Compare with ``model`` (put in eval mode) on ``x``; ValueError if they disagree."""
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                want = model(x)
        finally:
            model.train(was)
        got = self(x)
        if got.shape != want.shape:
            raise ValueError(f"export check failed: packed output shape {tuple(got.shape)} != "
                             f"{tuple(want.shape)}")
        diff = (got - want).abs().max().item() if got.numel() else 0.0
        scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
        close = torch.allclose(got, want, rtol=rtol, atol=atol * scale)
        same_pred = True
        if want.dim() == 2 and want.shape[1] > 1:
            same_pred = torch.equal(got.argmax(1), want.argmax(1))
        if not (close and same_pred):
            raise ValueError(f"export check failed: max |packed - torch| = {diff:.3g} "
                             f"(allclose: {close}, same predictions: {same_pred})")
        return {"max_abs_diff": diff, "exact": bool(torch.equal(got, want))}

    # ---------------------------------------------------------------- files
    def to_bytes(self) -> bytes:
        """The saved file's bytes (see the module docstring for the format)."""
        if self.kind != "sequential":
            raise ValueError("only models exported from a flat nn.Sequential can be saved; this "
                             "PackedModel was made by module replacement")
        stages, blobs = [], []
        offset = 0
        for i, m in enumerate(self.body.children()):
            kind, cfg, arrays = _encode_stage(m, str(i))
            table = {}
            for aname, arr in arrays.items():
                arr = np.ascontiguousarray(arr)
                dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
                arr = arr.astype(dt, copy=False)
                table[aname] = [arr.dtype.str, list(arr.shape), offset]
                data = arr.tobytes()
                pad = (-len(data)) % 8
                blobs.append(data + b"\0" * pad)
                offset += len(data) + pad
            stages.append({"kind": kind, "name": getattr(m, "name", "") or str(i), "cfg": cfg,
                           "arrays": table})
        header = {"format": _FORMAT_NAME, "version": FORMAT_VERSION, "payload_bytes": offset,
                  "source_state_dict_bytes": self.source_state_dict_bytes, "stages": stages}
        hz = zlib.compress(json.dumps(header, separators=(",", ":")).encode("utf-8"), 9)
        pz = zlib.compress(b"".join(blobs), 9)
        body = MAGIC + struct.pack("<IIQ", FORMAT_VERSION, len(hz), len(pz)) + hz + pz
        return body + hashlib.sha256(body).digest()

    def save(self, path: str | os.PathLike) -> int:
        """Write the pickle-free packed file; returns its size in bytes."""
        data = self.to_bytes()
        with open(os.fspath(path), "wb") as fh:
            fh.write(data)
        return len(data)

    def to_c(self, outdir: str | os.PathLike, *, input_shape: Any = None, prefix: str = "bnn_model",
             word_bits: int = 32) -> Any:
        """Write this model as self-contained C99 (``NAME.h``, ``NAME.c``, an example, a Makefile)
        into ``outdir``: :func:`bnnlab.packed.c_export.to_c`, which documents the arguments and
        returns a :class:`~bnnlab.packed.c_export.CExport` with the memory report."""
        from bnnlab.packed.c_export import to_c

        return to_c(self, outdir, input_shape=input_shape, prefix=prefix, word_bits=word_bits)

    @staticmethod
    def load(path: str | os.PathLike) -> PackedModel:
        """Same as :func:`load`."""
        return load(path)

    @staticmethod
    def from_bytes(data: bytes) -> PackedModel:
        """Parse and validate the bytes of a saved file (see :func:`load`)."""
        return _decode(data)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"
