r"""Packed inference: trained binary layers and networks running on the packed-bit kernels.

Training layers (:mod:`bnnlab.layers`) keep real latent weights and surrogate gradients; the
modules here hold the *packed* signs (64 per ``uint64`` word, :mod:`bnnlab.kernels`) and are
inference-only (no autograd, always in eval mode).

Two ways in:

* **Module replacement** works for any model, residual ones included (Bi-Real, ReActNet):
  every binary layer becomes a :class:`PackedLinear` / :class:`PackedConv2d` that takes a float
  tensor, packs the sign of its (quantised) input, runs the XNOR-popcount kernel and returns
  the float output :math:`\alpha \odot d + b`, with :math:`d = \langle x_b, W_b\rangle` the
  integer dot product.
* **Fused chains** in flat :class:`torch.nn.Sequential` models (the reference
  ``models.binary_mlp`` / ``models.binary_cnn``): for
  ``BinaryLayer -> [BatchNorm / monotone activations] -> [MaxPool2d] -> [Flatten] -> BinaryLayer``
  the scale, bias, BatchNorm and activations are folded into one integer threshold per output
  channel (with a *flip* where the chain is decreasing, e.g. a negative BN scale), so the kernel
  emits the next layer's packed input directly; a max-pool runs on the packed bits (AND, or OR
  for flipped channels) and a flatten re-lays the bits for the next dense layer. Activations
  are never unpacked to float between two binary layers. In front of the first binary layer
  of a chain, ``[MaxPool2d] / BatchNorm / monotone activations -> sign`` on the float output
  of the first layer becomes one exact per-channel float comparison (:class:`PackedSign`,
  thresholds found by bisection over float32 with the torch modules) plus a max-pool on bits.
  The last binary layer has a float epilogue; float first/last layers and the modules after
  the last binary layer stay torch, except that an eval BatchNorm directly after that layer
  is folded into its epilogue (``export(..., fold_float_bn=True)``, the default; see
  *Exactness*). ``PackedModel.notes`` says what was fused or folded and why not.
* **Fused Bi-Real units** (``fuse=True``, module replacement included): a
  :class:`~bnnlab.blocks.BiRealBlock` ``BN(conv(sign x)) + shortcut(x)`` becomes a
  :class:`~bnnlab.packed.residual.PackedResidualConv` whose conv epilogue applies the
  BatchNorm (as torch computes it, proved on every attainable dot product at export, else
  not fused) and adds the shortcut on the integer accumulators; consecutive units form a
  :class:`~bnnlab.packed.residual.PackedResidualChain` in which each epilogue also packs the
  next unit's input signs. Only the shortcut's own float layers (AvgPool → 1×1 conv → BN)
  stay float, computed as torch computes them with less overhead
  (:mod:`bnnlab.packed.fastops`: the AvgPool as strided numpy adds in torch's arithmetic,
  the conv as a direct ``torch.conv2d``, the BatchNorm as one ``addcmul`` proved equal to
  ``torch.batch_norm`` on probes); a chain keeps each unit's output as the kernel's array.
  Bit-exact with sign weights.
* **Float stages** of flat exports run through :func:`~bnnlab.packed.fastops.fast_call`
  (direct torch calls, same bits; ``AdaptiveAvgPool2d(1) -> Flatten`` as one mean).

All packed layers run on :mod:`bnnlab.kernels`' public plans (:func:`~bnnlab.kernels.
prepare_conv2d`, :func:`~bnnlab.kernels.prepare_matmul`, :func:`~bnnlab.kernels.
prepare_pack_nhwc`): validated once, they keep the weight panel the blocked kernels read.

Exactness
---------
The integer parts are bit-exact (:math:`d` is an exact integer). Integer thresholds are found by
evaluating *the torch modules themselves* (in eval mode, float32) on every value :math:`d` can
take (:math:`-K, -K+2, \dots, K`) for every channel, so a fused sign reproduces torch's float32
``sign(BN(...))`` including exact ties (sign(0) = +1) and rounding near ties; no threshold is
computed by a separate float formula. For BinaryNet layers (sign weights, no α) the torch layer
output *is* the integer :math:`d`, so the packed model equals the torch model exactly
(``torch.equal`` in the tests; torch may add a conv/linear *bias* inside its accumulation, a
float32 rounding difference). With a per-channel weight scale α (``MagnitudeAwareSign``,
``ScaledSign``) the torch layer sums :math:`\pm\alpha` terms in float32 with its own rounding
while the packed layer computes ``float32(d) * α`` once: outputs agree to float rounding
(``allclose``), not bit for bit.

The default ``fold_float_bn=True`` of :func:`export` (with ``fuse=True``) also folds the eval
BatchNorm that follows the last binary layer of a chain into its float epilogue (one
per-channel ``scale * d + offset``, computed in float64 and rounded once to float32; layer
attribute ``folded_bn``, noted in ``PackedModel.notes``). The integer parts stay bit-exact; the
float outputs then agree with torch to float rounding (``allclose``, predictions identical on
the reference models) rather than bit for bit. ``export(..., fold_float_bn=False)`` keeps the
BatchNorm as a torch stage and the bit-exact behaviour described above.

Export rules (``export`` raises :class:`ValueError` naming the layer, never changes the math):

* input quantizer: ``SteSign``, ``ApproxSign``, ``SwishSign`` (forward = sign), ``StochasticSign``
  (deterministic in eval; refused with ``stochastic_eval=True``), ``RSign`` (sign(x - τ_c), τ
  applied in float32 as torch does), ``ScaledSign`` (s ≠ 0, folded into the output scale; with
  ``pad_value = ±1`` padding only if ``|s| = 1``, since torch pads ``s·sign(x)`` with ±1, not ±s), or
  ``None`` only where the input is the output of a ±1 quantizer module (as in ReActNet; checked
  with ``torch.fx``; the packed layer also refuses non-±1 inputs at run time). Anything else
  (``SteHeaviside``'s {0, 1}, ``MagnitudeAwareSign`` on inputs, custom modules) is refused.
* weight quantizer: anything deterministic in eval mode whose output has rows
  :math:`\pm\alpha_o` (sign, magnitude-aware, scaled, stochastic in eval); ``None`` (real
  weights), ``StochasticSign(stochastic_eval=True)``, any quantizer whose two calls differ, or
  other outputs are refused.
* convolutions: ``groups == 1``, ``dilation == 1``, symmetric padding; ``pad_value`` ±1 or 0.
  Torch's zero padding (``pad_value = 0``, the default of converted models) is reproduced
  exactly: the kernel pads with +1 and subtracts the input-independent contribution of the
  padded taps (:func:`bnnlab.kernels.zero_padding_correction`, per output position and
  channel); fused thresholds are then evaluated on every integer ``d``, both parities.
* XNOR-Net: α (per output channel) is applied in float; β (dense, per sample) and the K-map
  (conv) are computed in float alongside from the real input, exactly as
  :class:`~bnnlab.layers.XnorLinear` / :class:`~bnnlab.layers.XnorConv2d` do; such layers take a
  float input, so they are not fused. XNOR-Net++ Γ (any mode) is applied in float.
* ABC-Net layers, ``BinaryConv1d`` and any other binary layer: refused.
* a model whose parameters are not float32 is refused.

File format (``PackedModel.save``; never pickled)
-------------------------------------------------
A little-endian binary file::

    offset 0        8 bytes   magic b"BNNLABPK"
    offset 8        uint32    format version (FORMAT_VERSION = 1)
    offset 12       uint32    H, length of the compressed header
    offset 16       uint64    Z, length of the compressed payload
    offset 24       H bytes   zlib(UTF-8 JSON header): {"format": "bnnlab.packed", "version": 1,
                              "payload_bytes": P, "source_state_dict_bytes": int | null,
                              "stages": [{"kind", "name", "cfg", "arrays": {name: [dtype,
                              shape, offset]}}]}
    offset 24 + H   Z bytes   zlib(payload): P bytes of arrays, C order, little-endian, each
                              at an 8-byte aligned offset
    end - 32        32 bytes  SHA-256 of every preceding byte

Stage kinds: ``packed_linear``, ``packed_conv2d`` (words ``uint64``, α/bias/τ ``float32``,
fused ``threshold`` ``float32`` (integers or ±inf) and ``flip`` bits; optional cfg
``folded_bn: true`` when a BatchNorm was folded into α/bias, only on unfused layers; files
without it load as before), ``packed_maxpool2d``
(``or_channels`` bits), ``packed_flatten``, ``packed_sign`` (``threshold`` ``float32``,
``negate`` bits), and the float modules ``linear``, ``conv2d``, ``batchnorm1d/2d``,
``maxpool2d``, ``avgpool2d``, ``adaptiveavgpool2d``, ``flatten``, ``relu``, ``hardtanh``,
``leakyrelu``, ``tanh``, ``sigmoid``, ``identity``, ``dropout`` (float32 parameters).
:func:`load` checks the magic, version, lengths and checksum, then every stage kind, its
configuration and each array's dtype and shape against what the kind needs (``ValueError``
otherwise); decompression is bounded by the declared sizes. Only flat-sequential exports
(the reference models) can be saved.

References:
    Courbariaux et al., *Binarized Neural Networks*, 2016 (BN folded into a sign);
    Rastegari et al., *XNOR-Net*, ECCV 2016; Bannink et al., *Larq Compute Engine*, MLSys 2021
    (bit layout, one-padding, fused output thresholds); Umuroglu et al., *FINN*, FPGA 2017
    (BN + sign as an integer threshold).
"""
from bnnlab.packed.cli import main
from bnnlab.packed.export import export
from bnnlab.packed.fileformat import FORMAT_VERSION, MAGIC, load
from bnnlab.packed.layers import PackedConv2d, PackedFlatten, PackedLinear, PackedMaxPool2d, PackedSign
from bnnlab.packed.model import PackedModel
from bnnlab.packed.residual import PackedResidualChain, PackedResidualConv

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "PackedLinear",
    "PackedConv2d",
    "PackedMaxPool2d",
    "PackedFlatten",
    "PackedSign",
    "PackedModel",
    "PackedResidualConv",
    "PackedResidualChain",
    "export",
    "load",
    "main",
]
