"""Bad arguments to bnnlab.kernels raise ValueError/TypeError naming the argument -- never a crash.

The whole corpus runs in ONE subprocess, which prints one JSON line per case as it goes; a
segfault or abort therefore fails the run (and names the case it died on) instead of
killing pytest.  Each case is then checked as its own test.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

# (id, expression, expected exception, substring the message must contain)
CASES = [
    # pack_signs: types, ranks, emptiness, values, threads
    ("pack-list", "bk.pack_signs([[1.0, -1.0]])", "TypeError", "x"),
    ("pack-int64", "bk.pack_signs(np.ones((2, 3), np.int64))", "TypeError", "x"),
    ("pack-float16", "bk.pack_signs(np.ones((2, 3), np.float16))", "TypeError", "x"),
    ("pack-complex", "bk.pack_signs(np.ones((2, 3), np.complex64))", "TypeError", "x"),
    ("pack-object", "bk.pack_signs(np.array([[None, 1]], dtype=object))", "TypeError", "x"),
    ("pack-1d", "bk.pack_signs(np.ones(5, np.float32))", "ValueError", "2-D"),
    ("pack-3d", "bk.pack_signs(np.ones((2, 2, 2), np.float32))", "ValueError", "2-D"),
    ("pack-0d", "bk.pack_signs(np.ones((), np.float32))", "ValueError", "2-D"),
    ("pack-scalar", "bk.pack_signs(np.float32(1.0))", "TypeError", "x"),
    ("pack-no-rows", "bk.pack_signs(np.ones((0, 5), np.float32))", "ValueError", "empty"),
    ("pack-no-cols", "bk.pack_signs(np.ones((3, 0), np.float32))", "ValueError", "empty"),
    ("pack-nan", "bk.pack_signs(np.array([[1.0, np.nan]], np.float32))", "ValueError", "NaN"),
    ("pack-nan-long", "bk.pack_signs(np.where(np.arange(300) == 299, np.nan, 1.0).astype(np.float32)[None])",
     "ValueError", "NaN"),
    ("pack-inf64", "bk.pack_signs(np.array([[1.0, -np.inf]]))", "ValueError", "inf"),
    ("pack-strict-half", "bk.pack_signs(np.array([[1.0, 0.5]]), strict=True)", "ValueError", "strict"),
    ("pack-strict-zero", "bk.pack_signs(np.zeros((1, 70), np.int8), strict=True)", "ValueError", "strict"),
    ("pack-strict-nan", "bk.pack_signs(np.array([[np.nan]]), strict=True)", "ValueError", "x"),
    ("pack-threads-0", "bk.pack_signs(np.ones((2, 3)), n_threads=0)", "ValueError", "n_threads"),
    ("pack-threads-neg", "bk.pack_signs(np.ones((2, 3)), n_threads=-2)", "ValueError", "n_threads"),
    ("pack-threads-float", "bk.pack_signs(np.ones((2, 3)), n_threads=1.5)", "TypeError", "n_threads"),
    ("pack-threads-bool", "bk.pack_signs(np.ones((2, 3)), n_threads=True)", "TypeError", "n_threads"),
    ("pack-threads-str", "bk.pack_signs(np.ones((2, 3)), n_threads='2')", "TypeError", "n_threads"),
    ("pack-threads-huge", "bk.pack_signs(np.ones((2, 3)), n_threads=10**6)", "ValueError", "n_threads"),
    ("pack-torch-half", "bk.pack_signs(torch.ones(2, 3, dtype=torch.float16))", "TypeError", "x"),
    ("pack-torch-int32", "bk.pack_signs(torch.ones(2, 3, dtype=torch.int32))", "TypeError", "x"),
    ("pack-torch-meta", "bk.pack_signs(torch.ones(2, 3, device='meta'))", "ValueError", "CPU"),
    ("pack-torch-sparse", "bk.pack_signs(torch.eye(3).to_sparse())", "TypeError", "x"),
    ("pack-torch-nan", "bk.pack_signs(torch.tensor([[0.0, float('nan')]]))", "ValueError", "NaN"),
    ("pack-packed", "bk.pack_signs(bk.pack_signs(np.ones((1, 3))))", "TypeError", "x"),
    # PackedBits construction
    ("bits-float-words", "bk.PackedBits(np.zeros((2, 1)), 3)", "TypeError", "words"),
    ("bits-list-words", "bk.PackedBits([[0]], 3)", "TypeError", "words"),
    ("bits-1d", "bk.PackedBits(np.zeros(2, np.uint64), 3)", "ValueError", "words"),
    ("bits-noncontig", "bk.PackedBits(np.zeros((2, 4), np.uint64)[:, ::2], 65)", "ValueError", "C-contiguous"),
    ("bits-empty", "bk.PackedBits(np.zeros((0, 1), np.uint64), 3)", "ValueError", "words"),
    ("bits-k0", "bk.PackedBits(np.zeros((2, 1), np.uint64), 0)", "ValueError", "k"),
    ("bits-k-float", "bk.PackedBits(np.zeros((2, 1), np.uint64), 3.0)", "TypeError", "k"),
    ("bits-k-bool", "bk.PackedBits(np.zeros((2, 1), np.uint64), True)", "TypeError", "k"),
    ("bits-k-mismatch", "bk.PackedBits(np.zeros((2, 1), np.uint64), 65)", "ValueError", "k=65"),
    ("bits-k-huge", "bk.PackedBits(np.zeros((1, 1), np.uint64), 2**40)", "ValueError", "k"),
    ("bits-padding-set", "bk.PackedBits(np.full((2, 1), 2**63, np.uint64), 3)", "ValueError", "padding"),
    # unpack
    ("unpack-array", "bk.unpack_signs(np.zeros((2, 1), np.uint64))", "TypeError", "p"),
    ("unpack-dtype", "bk.unpack_signs(P3, dtype=np.int32)", "TypeError", "dtype"),
    ("unpack-dtype-junk", "bk.unpack_signs(P3, dtype='nonsense')", "TypeError", "dtype"),
    ("unpack-nhwc-bits", "bk.unpack_nhwc(P3)", "TypeError", "p"),
    ("unpack-w-bits", "bk.unpack_conv_weights(P3)", "TypeError", "w"),
    ("flatten-bits", "bk.flatten_nhwc(P3)", "TypeError", "p"),
    # xnor_matmul / binary_matmul
    ("xnor-a-array", "bk.xnor_matmul(np.zeros((2, 1), np.uint64), P3)", "TypeError", "a"),
    ("xnor-b-array", "bk.xnor_matmul(P3, np.ones((2, 3)))", "TypeError", "b"),
    ("xnor-k-mismatch", "bk.xnor_matmul(P3, P70)", "ValueError", "a.k"),
    ("xnor-threads-0", "bk.xnor_matmul(P3, P3, n_threads=0)", "ValueError", "n_threads"),
    ("xnor-threads-none-str", "bk.xnor_matmul(P3, P3, n_threads='all')", "TypeError", "n_threads"),
    ("bmm-k-mismatch", "bk.binary_matmul(np.ones((2, 3)), np.ones((4, 5)))", "ValueError", "a.k"),
    ("bmm-a-nan", "bk.binary_matmul(np.full((2, 3), np.nan), np.ones((4, 3)))", "ValueError", "a contains"),
    ("bmm-b-inf", "bk.binary_matmul(np.ones((2, 3)), np.full((4, 3), np.inf, np.float32))", "ValueError", "b contains"),
    ("bmm-b-1d", "bk.binary_matmul(np.ones((2, 3)), np.ones(3))", "ValueError", "b must"),
    ("bmm-a-empty", "bk.binary_matmul(np.ones((0, 3)), np.ones((2, 3)))", "ValueError", "a is empty"),
    ("bmm-a-str", "bk.binary_matmul('abc', np.ones((2, 3)))", "TypeError", "a must"),
    # fused epilogues
    ("thr-nan", "bk.matmul_threshold(P3, P3, np.array([np.nan, 0.0]))", "ValueError", "threshold"),
    ("thr-length", "bk.matmul_threshold(P3, P3, np.zeros(5))", "ValueError", "threshold"),
    ("thr-2d", "bk.matmul_threshold(P3, P3, np.zeros((2, 1)))", "ValueError", "threshold"),
    ("thr-str", "bk.matmul_threshold(P3, P3, 'zero')", "TypeError", "threshold"),
    ("thr-bool", "bk.matmul_threshold(P3, P3, True)", "TypeError", "threshold"),
    ("thr-torch-bool", "bk.matmul_threshold(P3, P3, torch.tensor([True, False]))", "TypeError", "threshold"),
    ("thr-torch-complex", "bk.matmul_threshold(P3, P3, torch.zeros(2, dtype=torch.complex64))",
     "TypeError", "threshold"),
    ("thr-b-real", "bk.matmul_threshold(P3, np.ones((2, 3)), 0.0)", "TypeError", "b"),
    ("flip-length", "bk.matmul_threshold(P3, P3, 0.0, flip=[True, False, True])", "ValueError", "flip"),
    ("flip-float", "bk.matmul_threshold(P3, P3, 0.0, flip=np.array([0.5, 1.0]))", "TypeError", "flip"),
    ("flip-int2", "bk.matmul_threshold(P3, P3, 0.0, flip=np.array([0, 2]))", "ValueError", "flip"),
    ("prep-k0", "bk.prepare_thresholds(0.0, channels=2, k=0)", "ValueError", "k"),
    ("prep-channels-str", "bk.prepare_thresholds(0.0, channels='2', k=3)", "TypeError", "channels"),
    ("prep-wrong-layer", "bk.matmul_threshold(P3, P3, bk.prepare_thresholds(0.0, channels=2, k=4))",
     "ValueError", "k=4"),
    ("prep-with-flip", "bk.matmul_threshold(P3, P3, bk.prepare_thresholds(0.0, channels=2, k=3), flip=True)",
     "ValueError", "flip"),
    ("alpha-inf", "bk.matmul_affine(P3, P3, np.array([np.inf, 1.0]))", "ValueError", "alpha"),
    ("alpha-f32-overflow", "bk.matmul_affine(P3, P3, 1e39)", "ValueError", "alpha"),
    ("alpha-length", "bk.matmul_affine(P3, P3, np.ones(3))", "ValueError", "alpha"),
    ("bias-length", "bk.matmul_affine(P3, P3, 1.0, bias=np.ones(4))", "ValueError", "bias"),
    ("bias-nan", "bk.matmul_affine(P3, P3, 1.0, bias=np.array([0.0, np.nan]))", "ValueError", "bias"),
    ("alpha-complex", "bk.matmul_affine(P3, P3, np.array([1j, 1j]))", "TypeError", "alpha"),
    # conv packing
    ("nhwc-3d", "bk.pack_nhwc(np.ones((2, 3, 4), np.float32))", "ValueError", "4-D"),
    ("nhwc-empty", "bk.pack_nhwc(np.ones((1, 0, 4, 4), np.float32))", "ValueError", "empty"),
    ("nhwc-nan", "bk.pack_nhwc(np.full((1, 2, 2, 2), np.nan))", "ValueError", "NaN"),
    ("nhwc-int16", "bk.pack_nhwc(np.ones((1, 2, 2, 2), np.int16))", "TypeError", "x"),
    ("nhwc-strict", "bk.pack_nhwc(np.full((1, 2, 2, 2), 0.3), strict=True)", "ValueError", "strict"),
    ("wts-3d", "bk.pack_conv_weights(np.ones((2, 3, 3)))", "ValueError", "w must"),
    ("wts-inf", "bk.pack_conv_weights(np.full((2, 3, 1, 1), np.inf))", "ValueError", "w contains"),
    ("wts-strict", "bk.pack_conv_weights(np.full((2, 3, 1, 1), 2.0), strict=True)", "ValueError", "strict"),
    ("act-channels-mismatch", "bk.PackedActivations(np.zeros((1, 2, 2, 1), np.uint64), 65)", "ValueError", "channels"),
    ("act-padding-set", "bk.PackedActivations(np.full((1, 2, 2, 1), 8, np.uint64), 3)", "ValueError", "padding"),
    ("act-3d", "bk.PackedActivations(np.zeros((1, 2, 1), np.uint64), 3)", "ValueError", "words"),
    ("wpk-channels-0", "bk.PackedConvWeights(np.zeros((1, 3, 3, 1), np.uint64), 0)", "ValueError", "in_channels"),
    # conv arguments
    ("conv-x-real", "bk.conv2d_packed(np.ones((1, 3, 5, 5)), W3)", "TypeError", "x"),
    ("conv-w-real", "bk.conv2d_packed(X3, np.ones((2, 3, 3, 3)))", "TypeError", "w"),
    ("conv-stride-0", "bk.conv2d_packed(X3, W3, stride=0)", "ValueError", "stride"),
    ("conv-stride-neg", "bk.conv2d_packed(X3, W3, stride=-1)", "ValueError", "stride"),
    ("conv-stride-float", "bk.conv2d_packed(X3, W3, stride=1.5)", "TypeError", "stride"),
    ("conv-stride-triple", "bk.conv2d_packed(X3, W3, stride=(1, 1, 1))", "ValueError", "stride"),
    ("conv-stride-none", "bk.conv2d_packed(X3, W3, stride=None)", "TypeError", "stride"),
    ("conv-padding-neg", "bk.conv2d_packed(X3, W3, padding=-1)", "ValueError", "padding"),
    ("conv-padding-same", "bk.conv2d_packed(X3, W3, padding='same')", "TypeError", "padding"),
    ("conv-pad-huge", "bk.conv2d_packed(X3, W3, padding=10**6)", "ValueError", "padding"),
    ("conv-pad-half", "bk.conv2d_packed(X3, W3, padding=1, pad_value=0.5)", "ValueError", "pad_value"),
    ("conv-pad-nan", "bk.conv2d_packed(X3, W3, padding=1, pad_value=float('nan'))", "ValueError", "pad_value"),
    ("conv-pad-str", "bk.conv2d_packed(X3, W3, padding=1, pad_value='1')", "TypeError", "pad_value"),
    ("conv-pad-bool", "bk.conv2d_packed(X3, W3, padding=1, pad_value=True)", "TypeError", "pad_value"),
    ("conv-channels", "bk.conv2d_packed(X3, bk.pack_conv_weights(np.ones((2, 4, 3, 3))))", "ValueError", "channels"),
    ("conv-kernel-too-big", "bk.conv2d_packed(X3, bk.pack_conv_weights(np.ones((2, 3, 7, 7))))",
     "ValueError", "kernel"),
    ("conv-layout", "bk.conv2d_packed(X3, W3, layout='NCHW')", "ValueError", "layout"),
    ("conv-threads", "bk.conv2d_packed(X3, W3, n_threads=0)", "ValueError", "n_threads"),
    ("conv-thr-length", "bk.conv2d_threshold(X3, W3, np.zeros(3))", "ValueError", "threshold"),
    ("conv-thr-nan", "bk.conv2d_threshold(X3, W3, float('nan'))", "ValueError", "threshold"),
    ("conv-flip-length", "bk.conv2d_threshold(X3, W3, 0.0, flip=[True])", "ValueError", "flip"),
    ("conv-alpha-nan", "bk.conv2d_affine(X3, W3, np.array([1.0, np.nan]))", "ValueError", "alpha"),
    ("conv-affine-layout", "bk.conv2d_affine(X3, W3, 1.0, layout='chw')", "ValueError", "layout"),
    # plans: validated once, messages name the argument
    ("pc-weights-list", "bk.prepare_conv2d([[1.0]])", "TypeError", "weights"),
    ("pc-weights-3d", "bk.prepare_conv2d(np.ones((2, 3, 3)))", "ValueError", "weights"),
    ("pc-weights-nan", "bk.prepare_conv2d(np.full((2, 3, 1, 1), np.nan))", "ValueError", "weights"),
    ("pc-weights-bits", "bk.prepare_conv2d(P3)", "TypeError", "weights"),
    ("pc-stride-0", "bk.prepare_conv2d(W3, stride=0)", "ValueError", "stride"),
    ("pc-padding-neg", "bk.prepare_conv2d(W3, padding=-1)", "ValueError", "padding"),
    ("pc-pad-half", "bk.prepare_conv2d(W3, pad_value=0.5)", "ValueError", "pad_value"),
    ("pc-layout", "bk.prepare_conv2d(W3, layout='NCHW')", "ValueError", "layout"),
    ("pc-thr-layout", "bk.prepare_conv2d(W3, threshold=0.0, layout='nhwc')", "ValueError", "layout"),
    ("pc-thr-length", "bk.prepare_conv2d(W3, threshold=np.zeros(3))", "ValueError", "threshold"),
    ("pc-thr-nan", "bk.prepare_conv2d(W3, threshold=float('nan'))", "ValueError", "threshold"),
    ("pc-thr-prepared-k", "bk.prepare_conv2d(W3, threshold=bk.prepare_thresholds(0.0, channels=2, k=3))",
     "ValueError", "threshold"),
    ("pc-thr-alpha", "bk.prepare_conv2d(W3, threshold=0.0, alpha=1.0)", "ValueError", "alpha"),
    ("pc-flip-alone", "bk.prepare_conv2d(W3, flip=True)", "ValueError", "flip"),
    ("pc-bias-alone", "bk.prepare_conv2d(W3, bias=1.0)", "ValueError", "bias"),
    ("pc-alpha-nan", "bk.prepare_conv2d(W3, alpha=np.array([1.0, np.nan]))", "ValueError", "alpha"),
    ("pc-alpha-prepared", "bk.prepare_conv2d(W3, alpha=bk.prepare_affine(1.0, channels=3))",
     "ValueError", "alpha"),
    ("pc-pool-alone", "bk.prepare_conv2d(W3, pool=bk.prepare_maxpool2d(2, 2))", "ValueError", "pool"),
    ("pc-pool-type", "bk.prepare_conv2d(W3, threshold=0.0, pool=(2, 2))", "TypeError", "pool"),
    ("pc-pool-channels", "bk.prepare_conv2d(W3, threshold=0.0, pool=bk.prepare_maxpool2d(3, 2))",
     "ValueError", "pool"),
    ("pc-strict-str", "bk.prepare_conv2d(W3, strict='yes')", "TypeError", "strict"),
    ("pc-call-channels", "bk.prepare_conv2d(W3)(bk.pack_nhwc(np.ones((1, 4, 5, 5))))", "ValueError", "channels"),
    ("pc-call-bits", "bk.prepare_conv2d(W3)(P3)", "TypeError", "x"),
    ("pc-call-3d", "bk.prepare_conv2d(W3)(np.ones((3, 5, 5)))", "ValueError", "x must"),
    ("pc-call-nan", "bk.prepare_conv2d(W3)(np.full((1, 3, 5, 5), np.nan))", "ValueError", "NaN"),
    ("pc-call-small", "bk.prepare_conv2d(W3)(bk.pack_nhwc(np.ones((1, 3, 2, 2))))", "ValueError", "kernel size"),
    ("pc-call-strict", "bk.prepare_conv2d(W3, strict=True)(np.full((1, 3, 5, 5), 0.5))", "ValueError", "strict"),
    ("pc-call-threads", "bk.prepare_conv2d(W3)(X3, n_threads=0)", "ValueError", "n_threads"),
    ("pc-call-pool-small", "bk.prepare_conv2d(W3, threshold=0.0, pool=bk.prepare_maxpool2d(2, 5))(X3)",
     "ValueError", "pool"),
    ("pc-post-no-alpha", "bk.prepare_conv2d(W3, post_scale=1.0)", "ValueError", "post_scale"),
    ("pc-post-threshold", "bk.prepare_conv2d(W3, threshold=0.0, post_scale=1.0)", "ValueError", "post_scale"),
    ("pc-post-offset-alone", "bk.prepare_conv2d(W3, alpha=1.0, post_offset=1.0)", "ValueError", "post_offset"),
    ("pc-post-fma-alone", "bk.prepare_conv2d(W3, alpha=1.0, post_fma=True)", "ValueError", "post_fma"),
    ("pc-post-fma-int", "bk.prepare_conv2d(W3, alpha=1.0, post_scale=1.0, post_fma=1)", "TypeError", "post_fma"),
    ("pc-post-nan", "bk.prepare_conv2d(W3, alpha=1.0, post_scale=np.nan)", "ValueError", "post_scale"),
    ("pc-post-zero-pad", "bk.prepare_conv2d(W3, padding=1, pad_value=0.0, alpha=1.0, post_scale=1.0)",
     "ValueError", "pad_value"),
    ("pc-res-threshold", "bk.prepare_conv2d(W3, threshold=0.0)(X3, residual=np.zeros((1, 2, 3, 3), np.float32))",
     "ValueError", "residual"),
    ("pc-res-shape", "bk.prepare_conv2d(W3, alpha=1.0)(X3, residual=np.zeros((1, 2, 5, 5), np.float32))",
     "ValueError", "residual"),
    ("pc-res-f64", "bk.prepare_conv2d(W3, alpha=1.0)(X3, residual=np.zeros((1, 2, 3, 3)))",
     "TypeError", "residual"),
    ("pc-res-zero-pad", "bk.prepare_conv2d(W3, padding=1, pad_value=0.0, alpha=1.0)(X3, "
     "residual=np.zeros((1, 2, 5, 5), np.float32))", "ValueError", "residual"),
    ("pc-bits-no-res", "bk.prepare_conv2d(W3, alpha=1.0)(X3, emit_bits=True)", "ValueError", "emit_bits"),
    ("pc-bits-nhwc", "bk.prepare_conv2d(W3, alpha=1.0, layout='nhwc')(X3, "
     "residual=np.zeros((1, 3, 3, 2), np.float32), emit_bits=True)", "ValueError", "emit_bits"),
    ("pc-bits-inf", "bk.prepare_conv2d(W3, alpha=1.0)(X3, residual=np.full((1, 2, 3, 3), np.inf, np.float32), "
     "emit_bits=True)", "ValueError", "NaN or inf"),
    ("pc-values-int", "bk.prepare_conv2d(W3).epilogue_values()", "ValueError", "affine"),
    ("panel-wrong-width", "_kernels.gemm(P70.words, P70.words, 70, np.empty((2, 2), np.int32), 1, "
     "np.zeros(64, np.uint64), 3)", "ValueError", "panel"),
    ("panel-wrong-size", "_kernels.conv(X3.words, 3, W3.words, 1, 1, 0, 0, False, np.empty((1, 2, 3, 3), np.int32), "
     "False, 1, np.zeros(5, np.uint64), _kernels.panel_nr(_kernels.level()))", "ValueError", "panel"),
    ("pm-weights-3d", "bk.prepare_matmul(np.ones((2, 3, 3)))", "ValueError", "weights"),
    ("pm-weights-str", "bk.prepare_matmul('w')", "TypeError", "weights"),
    ("pm-weights-conv", "bk.prepare_matmul(W3)", "TypeError", "weights"),
    ("pm-thr-length", "bk.prepare_matmul(P3, threshold=np.zeros(3))", "ValueError", "threshold"),
    ("pm-alpha-inf", "bk.prepare_matmul(P3, alpha=np.inf)", "ValueError", "alpha"),
    ("pm-bias-alone", "bk.prepare_matmul(P3, bias=0.0)", "ValueError", "bias"),
    ("pm-pool", "bk.prepare_matmul(P3, pool=1)", "TypeError", "pool"),
    ("pm-call-k", "bk.prepare_matmul(P3)(P70)", "ValueError", "k="),
    ("pm-call-acts", "bk.prepare_matmul(P3)(X3)", "TypeError", "a"),
    ("pm-call-1d", "bk.prepare_matmul(P3)(np.ones(3))", "ValueError", "a must"),
    ("pm-call-strict", "bk.prepare_matmul(P3, strict=True)(np.full((1, 3), 2.0))", "ValueError", "strict"),
    ("pp-channels-0", "bk.prepare_pack_nhwc(0)", "ValueError", "channels"),
    ("pp-scale-nan", "bk.prepare_pack_nhwc(3, scale=np.nan)", "ValueError", "scale"),
    ("pp-offset-alone", "bk.prepare_pack_nhwc(3, offset=1.0)", "ValueError", "offset"),
    ("pp-strict-scale", "bk.prepare_pack_nhwc(3, scale=1.0, strict=True)", "ValueError", "strict"),
    ("pp-pool-channels", "bk.prepare_pack_nhwc(3, pool=bk.prepare_maxpool2d(2, 2))", "ValueError", "pool"),
    ("pp-call-channels", "bk.prepare_pack_nhwc(3)(np.ones((1, 2, 4, 4)))", "ValueError", "channels"),
    ("pp-call-f64-affine", "bk.prepare_pack_nhwc(3, scale=1.0)(np.ones((1, 3, 4, 4)))", "TypeError", "float32"),
    ("pp-call-inf", "bk.prepare_pack_nhwc(3, scale=1.0)(np.full((1, 3, 4, 4), np.inf, np.float32))",
     "ValueError", "inf"),
    ("bconv-x-3d", "bk.binary_conv2d(np.ones((3, 5, 5)), np.ones((2, 3, 3, 3)))", "ValueError", "x must"),
    ("bconv-w-5d", "bk.binary_conv2d(np.ones((1, 3, 5, 5)), np.ones((2, 3, 3, 3, 1)))", "ValueError", "w must"),
    ("bconv-x-nan", "bk.binary_conv2d(np.full((1, 3, 5, 5), np.nan), np.ones((2, 3, 3, 3)))",
     "ValueError", "x contains"),
    ("bconv-w-nan", "bk.binary_conv2d(np.ones((1, 3, 5, 5)), np.full((2, 3, 3, 3), np.nan))",
     "ValueError", "w contains"),
    ("bconv-w-torch-half", "bk.binary_conv2d(np.ones((1, 3, 5, 5)), torch.ones(2, 3, 3, 3).half())", "TypeError", "w"),
    ("bconv-pad", "bk.binary_conv2d(np.ones((1, 3, 5, 5)), np.ones((2, 3, 3, 3)), padding=1, pad_value=2)",
     "ValueError", "pad_value"),
    # global settings and private switches
    ("threads-set-0", "bk.set_num_threads(0)", "ValueError", "n"),
    ("threads-set-str", "bk.set_num_threads('4')", "TypeError", "n"),
    ("threads-set-float", "bk.set_num_threads(2.0)", "TypeError", "n"),
    ("isa-unknown", "bk._set_isa('sse9')", "ValueError", "name"),
    ("threading-unknown", "bk._set_threading('tbb')", "ValueError", "backend"),
    # the compiled module refuses inconsistent buffers on its own (defence in depth)
    ("raw-gemm-shapes", "_kernels.gemm(P3.words, P70.words, 3, np.empty((2, 2), np.int32), 1)", "ValueError", "gemm"),
    ("raw-gemm-out", "_kernels.gemm(P3.words, P3.words, 3, np.empty((1, 1), np.int32), 1)", "ValueError", "gemm"),
    ("raw-gemm-dtype", "_kernels.gemm(P3.words, P3.words, 3, np.empty((2, 2), np.int64), 1)", "ValueError", "dtype"),
    ("raw-conv-out", "_kernels.conv(X3.words, 3, W3.words, 1, 1, 0, 0, 0, np.empty((1, 2, 5, 5), np.int32), 0, 1)",
     "ValueError", "conv"),
    ("raw-conv-stride", "_kernels.conv(X3.words, 3, W3.words, 0, 1, 0, 0, 0, np.empty((1, 2, 3, 3), np.int32), 0, 1)",
     "ValueError", "conv"),
    ("raw-pack-out", "_kernels.pack_rows(np.ones((2, 65), np.float32), np.empty((2, 1), np.uint64), 1)",
     "ValueError", "pack_rows"),
    ("raw-threads", "_kernels.gemm(P3.words, P3.words, 3, np.empty((2, 2), np.int32), 0)", "ValueError", "gemm"),
    # affine packers
    ("aff-rows-f64", "bk.pack_rows_affine(np.ones((2, 3)), 1.0, 0.0)", "TypeError", "x"),
    ("aff-rows-int8", "bk.pack_rows_affine(np.ones((2, 3), np.int8), 1.0, 0.0)", "TypeError", "x"),
    ("aff-rows-bool", "bk.pack_rows_affine(np.ones((2, 3), bool), 1.0, 0.0)", "TypeError", "x"),
    ("aff-rows-1d", "bk.pack_rows_affine(np.ones(3, np.float32), 1.0, 0.0)", "ValueError", "x"),
    ("aff-rows-empty", "bk.pack_rows_affine(np.ones((0, 3), np.float32), 1.0, 0.0)", "ValueError", "x"),
    ("aff-rows-nan", "bk.pack_rows_affine(np.array([[1.0, np.nan]], np.float32), 1.0, 0.0)", "ValueError", "NaN"),
    ("aff-rows-inf", "bk.pack_rows_affine(np.full((1, 70), np.inf, np.float32), 0.0, 1.0)", "ValueError", "inf"),
    ("aff-rows-scale-shape", "bk.pack_rows_affine(np.ones((2, 3), np.float32), np.ones(4), 0.0)",
     "ValueError", "scale"),
    ("aff-rows-offset-shape", "bk.pack_rows_affine(np.ones((2, 3), np.float32), 1.0, np.ones(2))",
     "ValueError", "offset"),
    ("aff-rows-scale-nan", "bk.pack_rows_affine(np.ones((2, 3), np.float32), np.nan, 0.0)", "ValueError", "scale"),
    ("aff-rows-offset-inf", "bk.pack_rows_affine(np.ones((2, 3), np.float32), 1.0, np.inf)", "ValueError", "offset"),
    ("aff-rows-scale-f32-overflow", "bk.pack_rows_affine(np.ones((2, 3), np.float32), 1e300, 0.0)",
     "ValueError", "scale"),
    ("aff-rows-scale-str", "bk.pack_rows_affine(np.ones((2, 3), np.float32), 'a', 0.0)", "TypeError", "scale"),
    ("aff-rows-scale-bool", "bk.pack_rows_affine(np.ones((2, 3), np.float32), True, 0.0)", "TypeError", "scale"),
    ("aff-rows-prepared-and-offset", "bk.pack_rows_affine(np.ones((2, 3), np.float32), "
     "bk.prepare_affine(1.0, channels=3), 0.0)", "ValueError", "offset"),
    ("aff-rows-prepared-channels", "bk.pack_rows_affine(np.ones((2, 3), np.float32), "
     "bk.prepare_affine(1.0, channels=4))", "ValueError", "scale"),
    ("aff-nhwc-3d", "bk.pack_nhwc_affine(np.ones((2, 3, 4), np.float32), 1.0, 0.0)", "ValueError", "x"),
    ("aff-nhwc-f64", "bk.pack_nhwc_affine(torch.ones(1, 2, 3, 3, dtype=torch.float64), 1.0, 0.0)", "TypeError", "x"),
    ("aff-nhwc-list", "bk.pack_nhwc_affine([[[[1.0]]]], 1.0, 0.0)", "TypeError", "x"),
    ("aff-nhwc-nan", "bk.pack_nhwc_affine(torch.full((1, 65, 2, 2), float('nan')), 1.0, 0.0)", "ValueError", "NaN"),
    ("aff-nhwc-nan-pool", "bk.pack_nhwc_affine(torch.full((1, 2, 2, 2), float('nan')), 1.0, 0.0, "
     "pool=bk.prepare_maxpool2d(2, 2))", "ValueError", "NaN"),
    ("aff-nhwc-scale-shape", "bk.pack_nhwc_affine(np.ones((1, 3, 2, 2), np.float32), np.ones(2), 0.0)",
     "ValueError", "scale"),
    ("aff-nhwc-pool-type", "bk.pack_nhwc_affine(np.ones((1, 3, 2, 2), np.float32), 1.0, 0.0, pool=2)",
     "TypeError", "pool"),
    ("aff-nhwc-pool-channels", "bk.pack_nhwc_affine(np.ones((1, 3, 2, 2), np.float32), 1.0, 0.0, "
     "pool=bk.prepare_maxpool2d(4, 2))", "ValueError", "pool"),
    ("aff-nhwc-pool-too-big", "bk.pack_nhwc_affine(np.ones((1, 3, 2, 2), np.float32), 1.0, 0.0, "
     "pool=bk.prepare_maxpool2d(3, 3))", "ValueError", "x"),
    ("affine-channels-0", "bk.prepare_affine(1.0, channels=0)", "ValueError", "channels"),
    # max-pool on bits
    ("pool-channels-0", "bk.prepare_maxpool2d(0, 2)", "ValueError", "channels"),
    ("pool-kernel-0", "bk.prepare_maxpool2d(3, 0)", "ValueError", "kernel_size"),
    ("pool-kernel-float", "bk.prepare_maxpool2d(3, 2.0)", "TypeError", "kernel_size"),
    ("pool-kernel-triple", "bk.prepare_maxpool2d(3, (2, 2, 2))", "ValueError", "kernel_size"),
    ("pool-stride-0", "bk.prepare_maxpool2d(3, 2, 0)", "ValueError", "stride"),
    ("pool-padding-neg", "bk.prepare_maxpool2d(3, 2, 2, -1)", "ValueError", "padding"),
    ("pool-padding-half", "bk.prepare_maxpool2d(3, 2, 2, 2)", "ValueError", "padding"),
    ("pool-or-shape", "bk.prepare_maxpool2d(3, 2, or_channels=[True, False])", "ValueError", "or_channels"),
    ("pool-or-float", "bk.prepare_maxpool2d(3, 2, or_channels=np.ones(3))", "TypeError", "or_channels"),
    ("pool-x-type", "bk.maxpool2d_packed(np.zeros((1, 2, 2, 1), np.uint64), bk.prepare_maxpool2d(3, 2))",
     "TypeError", "x"),
    ("pool-spec-type", "bk.maxpool2d_packed(X3, (2, 2))", "TypeError", "pool"),
    ("pool-spec-channels", "bk.maxpool2d_packed(X3, bk.prepare_maxpool2d(4, 2))", "ValueError", "pool"),
    ("pool-too-small", "bk.maxpool2d_packed(X3, bk.prepare_maxpool2d(3, 9))", "ValueError", "x"),
    ("conv-pool-type", "bk.conv2d_threshold(X3, W3, 0.0, pool='max')", "TypeError", "pool"),
    ("conv-pool-channels", "bk.conv2d_threshold(X3, W3, 0.0, pool=bk.prepare_maxpool2d(3, 2))",
     "ValueError", "pool"),
    ("conv-pool-too-small", "bk.conv2d_threshold(X3, W3, 0.0, pool=bk.prepare_maxpool2d(2, 9))",
     "ValueError", "conv output"),
    ("raw-maxpool-padding", "_kernels.maxpool_bits(X3.words, 3, 2, 2, 1, 1, 2, 0, np.zeros(1, np.uint64), "
     "np.empty((1, 8, 6, 1), np.uint64), 1)", "ValueError", "maxpool"),
    ("raw-aff-scale", "_kernels.pack_rows_affine(np.ones((2, 3), np.float32), np.ones(2, np.float32), "
     "np.ones(3, np.float32), np.empty((2, 1), np.uint64), 1)", "ValueError", "pack_rows_affine"),
]

CHILD = r"""
import json, sys
import numpy as np
import torch
from bnnlab import kernels as bk
from bnnlab import _kernels

ns = {"np": np, "torch": torch, "bk": bk, "_kernels": _kernels}
ns["P3"] = bk.pack_signs(np.array([[1.0, -1.0, 1.0], [-1.0, -1.0, 1.0]]))
ns["P70"] = bk.pack_signs(np.ones((2, 70)))
ns["X3"] = bk.pack_nhwc(np.ones((1, 3, 5, 5)))
ns["W3"] = bk.pack_conv_weights(np.ones((2, 3, 3, 3)))
for case_id, expr in json.load(sys.stdin):
    try:
        eval(expr, ns)
        result = {"id": case_id, "exc": None, "msg": ""}
    except Exception as exc:  # the outcome is what we record
        result = {"id": case_id, "exc": type(exc).__name__, "msg": str(exc)}
    print(json.dumps(result), flush=True)
print(json.dumps({"id": "__done__"}), flush=True)
"""


@pytest.fixture(scope="module")
def outcomes():
    payload = json.dumps([(cid, expr) for cid, expr, _, _ in CASES])
    proc = subprocess.run([sys.executable, "-c", CHILD], input=payload, capture_output=True,
                          text=True, timeout=300)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    got = {rec["id"]: rec for rec in lines}
    last = lines[-1]["id"] if lines else None
    assert proc.returncode == 0 and "__done__" in got, (
        f"corpus subprocess died (returncode {proc.returncode}) after case {last!r}:\n{proc.stderr[-3000:]}"
    )
    return got


def test_case_ids_are_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case_id, expr, exc, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_a_clear_error(outcomes, case_id, expr, exc, needle):
    rec = outcomes[case_id]
    assert rec["exc"] == exc, f"{expr} -> {rec['exc']}: {rec['msg']}"
    assert needle in rec["msg"], f"message of {expr!r} does not mention {needle!r}: {rec['msg']}"
