"""The C back end (bnnlab.packed.c_export): the generated C computes what the PackedModel computes.

Every comparison is against the PackedModel's own outputs in Python for the same inputs, so it
keeps holding when the packed model changes. Proofs on real toolchains (each skipped with the
missing tool named): host gcc (strict flags, then ASan + UBSan) on 2,000 Fashion-MNIST test
images, 32-bit ARM Linux (arm-linux-gnueabihf-gcc + qemu-arm) on 200, a Cortex-M4 build with
arm-none-eabi-size, and the Cortex-M3 board mps2-an385 under qemu-system-arm -semihosting on
20 embedded images; plus a differential fuzzer over >= 100 random accepted models.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bnnlab import data, layers, models, packed, train
from bnnlab import quantizers as Q
from bnnlab.packed import c_export as packed_c

ROOT = Path(__file__).resolve().parent.parent


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt: gcc-arm-none-eabi "
                    "libnewlib-arm-none-eabi gcc-arm-linux-gnueabihf qemu-user qemu-system-arm; "
                    "`make test` installs them)")


def _fashion(n_train: int, n_test: int):
    try:
        return data.load_fashion_mnist(n_train=n_train, n_test=n_test, seed=0)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def _assert_same(pred, logits, want: np.ndarray, tol: float = 1e-4) -> None:
    assert logits.shape == want.shape
    np.testing.assert_array_equal(pred, want.argmax(1))
    np.testing.assert_array_equal(logits.argmax(1), want.argmax(1))
    np.testing.assert_allclose(logits, want, rtol=0, atol=tol * max(1.0, np.abs(want).max()))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small binary CNN (the reference architecture, narrower) trained for a few seconds on
    Fashion-MNIST, exported, written as C; with 2,000 test images and the packed logits."""
    _need("gcc")
    d = _fashion(1000, 2000)
    torch.manual_seed(0)
    net = models.binary_cnn(channels=(8, 32, 32), hidden=64)
    train.fit(net, d, epochs=1, progress=False, num_threads=1, seed=0)
    net.eval()
    pk = packed.export(net, d.test[0][:64])
    x = d.test[0][:2000]
    want = pk(x).numpy()
    out = tmp_path_factory.mktemp("trained")
    res = packed_c.to_c(pk, out, input_shape=(1, 28, 28))
    return pk, res, x, want, d


# ------------------------------------------------------------------------------ the files
@pytest.mark.apt  # Fashion-MNIST (dataset-fashion-mnist) and the cross toolchains
def test_header_constants_and_files(trained):
    pk, res, *_ = trained
    h = res.header.read_text()
    assert "#define BNN_MODEL_INPUT_SIZE 784" in h
    assert "#define BNN_MODEL_OUTPUT_SIZE 10" in h
    assert f"#define BNN_MODEL_ARENA_BYTES {res.arena_bytes}" in h
    assert "void bnn_model_predict(const float *input, float *output);" in h
    assert "int bnn_model_argmax(const float *input);" in h
    src = res.source.read_text()
    includes = sorted({line for line in src.splitlines() if line.startswith("#include")})
    assert includes == ['#include "bnn_model.h"', "#include <stdint.h>", "#include <string.h>"]
    for word in ("malloc", "calloc", "free(", "<math.h>", "<stdlib.h>"):
        assert word not in src
    assert {p.name for p in res.files} == {"bnn_model.h", "bnn_model.c", "example.c", "Makefile",
                                           "README.md"}
    m = res.memory
    assert m["flash_bytes"] == m["weights_bytes"] + m["parameters_bytes"] + \
        m["code_estimate_bytes"]
    assert m["ram_bytes"] == m["arena_bytes"] + m["stack_estimate_bytes"]
    assert m["float32_flash_bytes"] > 10 * m["weights_bytes"]
    # the packed words hold one bit per binary weight (plus padding to 32-bit words)
    n_binary = sum(int(np.prod(layer.weight_shape)) for layer in pk.packed_layers())
    assert n_binary / 8 <= m["weights_bytes"] - 4 * sum(
        int(p.numel()) for s in pk.body for p in s.parameters()) < n_binary / 8 * 1.5


# ------------------------------------------------------------------------------ host proofs
@pytest.mark.apt  # Fashion-MNIST (dataset-fashion-mnist) and the cross toolchains
def test_host_gcc_strict_2000_images(trained):
    pk, res, x, want, _ = trained
    assert x.shape[0] >= 2000
    pred, logits = packed_c.run_host(res, x.numpy())
    _assert_same(pred, logits, want)


@pytest.mark.apt  # Fashion-MNIST (dataset-fashion-mnist) and the cross toolchains
def test_host_gcc_sanitizers_2000_images(trained):
    pk, res, x, want, _ = trained
    pred, logits = packed_c.run_host(
        res, x.numpy(), extra=("-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                               "-g"))
    _assert_same(pred, logits, want)


@pytest.mark.apt  # Fashion-MNIST (dataset-fashion-mnist) and the cross toolchains
def test_word_bits_64_and_prefix(trained, tmp_path):
    pk, _, x, want, _ = trained
    res = packed_c.to_c(pk, tmp_path, input_shape=(1, 28, 28), word_bits=64, prefix="fmnist")
    assert "#define FMNIST_INPUT_SIZE 784" in res.header.read_text()
    pred, logits = packed_c.run_host(res, x[:300].numpy())
    _assert_same(pred, logits, want[:300])


@pytest.mark.apt  # Fashion-MNIST (dataset-fashion-mnist) and the cross toolchains
def test_popcount_instruction_path(trained):
    """The default build uses the inline SWAR popcount; -mpopcnt switches to the builtin."""
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("-mpopcnt is an x86 flag")
    pk, res, x, want, _ = trained
    assert "BNN_HAVE_POPCOUNT" in res.source.read_text()
    pred, logits = packed_c.run_host(res, x[:300].numpy(), extra=("-mpopcnt",))
    _assert_same(pred, logits, want[:300])


# ------------------------------------------------------------------------------ ARM proofs
@pytest.mark.apt  # Fashion-MNIST (dataset-fashion-mnist) and the cross toolchains
def test_arm_linux_qemu_200_images(trained):
    _need("arm-linux-gnueabihf-gcc", "qemu-arm")
    pk, res, x, want, _ = trained
    pred, logits = packed_c.run_host(res, x[:200].numpy(), cc="arm-linux-gnueabihf-gcc",
                                     extra=("-static",), emulator=("qemu-arm",))
    _assert_same(pred, logits, want[:200])


@pytest.mark.apt  # Fashion-MNIST (dataset-fashion-mnist) and the cross toolchains
def test_cortex_m4_build_and_size(trained):
    _need("arm-none-eabi-gcc", "arm-none-eabi-size")
    pk, res, *_ = trained
    size = packed_c.cortex_m_size(res)
    m = res.memory
    # static RAM is exactly the arena; flash is the words, the parameters and the code
    assert size["ram"] == m["arena_bytes"]
    assert m["weights_bytes"] + m["parameters_bytes"] < size["flash"]
    assert 0.5 < size["flash"] / m["flash_bytes"] < 1.5


@pytest.mark.apt  # Fashion-MNIST (dataset-fashion-mnist) and the cross toolchains
def test_mps2_an385_semihosting_20_images(trained):
    _need("arm-none-eabi-gcc", "qemu-system-arm")
    pk, res, x, want, _ = trained
    pred, logits = packed_c.run_mps2(res, x[:20].numpy())
    _assert_same(pred, logits, want[:20])


# ------------------------------------------------------------------------------ CLI
@pytest.mark.apt  # Fashion-MNIST (dataset-fashion-mnist) and the cross toolchains
def test_cli_export_c(trained, tmp_path, capsys):
    pk, _, x, want, _ = trained
    f = tmp_path / "model.bnn"
    pk.save(f)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "bnnlab", "export-c", str(f), str(tmp_path / "c"),
                           "--prefix", "cli_net", "--word-bits", "64", "--input-shape", "1,28,28"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "flash:" in proc.stdout and "RAM:" in proc.stdout
    assert "#define CLI_NET_OUTPUT_SIZE 10" in (tmp_path / "c" / "cli_net.h").read_text()
    # without --input-shape the square size is ambiguous (pooling rounds down): a clear error
    assert packed_c.main([str(f), str(tmp_path / "d")]) == 2
    assert "--input-shape" in capsys.readouterr().err
    # the generated Makefile builds the example
    subprocess.run(["make", "-s", "-C", str(tmp_path / "c")], check=True, timeout=120)


# ------------------------------------------------------------------------------ stage kinds
def test_float_pools_and_unfused_binary_conv(tmp_path):
    """AvgPool2d / AdaptiveAvgPool2d / LeakyReLU around an unfused binary conv."""
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.AvgPool2d(2), nn.ReLU(),
                        layers.BinaryConv2d(4, 40, 2, stride=2), nn.AdaptiveAvgPool2d(3),
                        nn.LeakyReLU(0.2), nn.MaxPool2d(2, 1), nn.Flatten(), nn.Linear(160, 3))
    pk = packed.export(net.eval())
    x = torch.randn(16, 1, 10, 10)
    res = packed_c.to_c(pk, tmp_path, input_shape=(1, 10, 10))
    pred, logits = packed_c.run_host(res, x.numpy())
    _assert_same(pred, logits, pk(x).numpy())


# ------------------------------------------------------------------------------ refusals
def _mlp(*mid: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Linear(12, 16), nn.BatchNorm1d(16),
                         layers.BinaryLinear(16, 16, bias=False), *mid, nn.Linear(16, 3))


@pytest.mark.parametrize(("model", "where", "why"), [
    (_mlp(nn.Tanh()), "Tanh", "math.h"),
    (_mlp(nn.Sigmoid()), "Sigmoid", "math.h"),
    (nn.Sequential(layers.XnorLinear(12, 8), nn.Linear(8, 3)), "PackedLinear", "beta"),
    (_mlp(nn.Softsign()), "Softsign", "no C code"),
])
def test_refuses_what_c_cannot_reproduce(model, where, why, tmp_path):
    model.eval()
    pk = packed.export(model)
    with pytest.raises(ValueError, match=where) as err:
        packed_c.to_c(pk, tmp_path, input_shape=(12,))
    assert why in str(err.value) and "stage" in str(err.value)


def test_refuses_packed_attributes_it_does_not_know(tmp_path):
    """A packed layer from a newer packed.py (an attribute with a meaning the C code lacks)."""
    pk = packed.export(_mlp().eval())
    layer = pk.packed_layers()[0]
    layer.input_offset = 0.5
    with pytest.raises(ValueError, match="input_offset") as err:
        packed_c.to_c(pk, tmp_path, input_shape=(12,))
    assert "stage 2 (PackedLinear" in str(err.value)
    layer.input_offset = None                    # a default value is harmless
    packed_c.to_c(pk, tmp_path, input_shape=(12,))


def test_refuses_module_replacement_and_bad_arguments(tmp_path):
    from bnnlab.blocks import BiRealBlock

    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), BiRealBlock(4, 4), nn.Flatten(),
                        nn.Linear(4 * 6 * 6, 2))

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)

    pk = packed.export(Wrap().eval())
    with pytest.raises(ValueError, match="sequential"):
        packed_c.to_c(pk, tmp_path, input_shape=(1, 6, 6))
    good = packed.export(_mlp().eval())
    with pytest.raises(ValueError, match="word_bits"):
        packed_c.to_c(good, tmp_path, input_shape=(12,), word_bits=16)
    with pytest.raises(ValueError, match="prefix"):
        packed_c.to_c(good, tmp_path, input_shape=(12,), prefix="1bad-name")
    with pytest.raises(ValueError, match="input_shape"):
        packed_c.to_c(good, tmp_path, input_shape=(0,))
    with pytest.raises(TypeError, match="PackedModel"):
        packed_c.to_c(_mlp(), tmp_path, input_shape=(12,))
    assert packed_c.infer_input_shape(good) == (12,)


# ------------------------------------------------------------------------------ fuzzer
_CH = (1, 3, 8, 31, 32, 33, 40, 64, 65)


def _quant(rng) -> dict:
    return {"input_quantizer": str(rng.choice(["ste_sign", "approx_sign", "swish_sign"])),
            "weight_quantizer": str(rng.choice(["ste_sign", "ste_sign", "magnitude_aware_sign"]))}


def _binary(rng, c: int, o: int, conv: bool, **kw) -> nn.Module:
    """A random binary layer: BinaryNet with sign-like or RSign inputs, XNOR-Net (α only) or
    XNOR-Net++ (scalar, per-channel or, for convs, factorised Γ)."""
    k = int(rng.integers(0, 6))
    bias = bool(rng.random() < 0.3)
    if k <= 2:
        q = _quant(rng)
        if k == 2:
            q["input_quantizer"] = Q.RSign(c)
            with torch.no_grad():
                q["input_quantizer"].threshold.normal_(0, 0.3)
        cls = layers.BinaryConv2d if conv else layers.BinaryLinear
        return cls(c, o, bias=bias, **q, **kw)
    if k == 3:
        cls = layers.XnorConv2d if conv else layers.XnorLinear
        return cls(c, o, bias=bias, input_scaling=False, **kw)
    modes = ["scalar", "channel"] + (["factorised"] if conv and k == 5 else [])
    cls = layers.XnorPlusConv2d if conv else layers.XnorPlusLinear
    return cls(c, o, bias=bias, gamma_mode=str(rng.choice(modes)), **kw)


def _mids(rng, c: int, conv: bool) -> list[nn.Module]:
    """Random element-wise modules between two binary layers (BN with either sign of scale)."""
    out: list[nn.Module] = []
    for _ in range(int(rng.integers(0, 3))):
        k = int(rng.integers(0, 5))
        if k <= 1:
            bn = nn.BatchNorm2d(c) if conv else nn.BatchNorm1d(c)
            with torch.no_grad():
                bn.weight.copy_(torch.from_numpy(rng.normal(0, 1, c).astype(np.float32)))
                bn.bias.copy_(torch.from_numpy(rng.normal(0, 0.5, c).astype(np.float32)))
            out.append(bn)
        elif k == 2:
            out.append(nn.ReLU())
        elif k == 3:
            out.append(nn.Hardtanh())
        else:
            out.append(nn.LeakyReLU(0.1))
    return out


def _random_model(rng) -> tuple[nn.Sequential, tuple[int, ...]]:
    mods: list[nn.Module] = []
    if rng.random() < 0.5:                           # dense
        f = int(rng.choice(_CH + (70, 100)))
        shape: tuple[int, ...] = (f,)
        c = f
        if rng.random() < 0.6:
            h = int(rng.choice(_CH))
            mods += [nn.Linear(c, h, bias=bool(rng.random() < 0.5))] + _mids(rng, h, False)
            c = h
        for _ in range(int(rng.integers(1, 4))):
            h = int(rng.choice(_CH))
            mods.append(_binary(rng, c, h, False))
            mods += _mids(rng, h, False)
            c = h
    else:                                            # conv
        c = int(rng.choice((1, 2, 3, 8, 33)))
        s = int(rng.integers(4, 9))
        shape = (c, s, s)
        if rng.random() < 0.6:
            o = int(rng.choice(_CH))
            mods += [nn.Conv2d(c, o, 3, padding=int(rng.integers(0, 2)),
                               bias=bool(rng.random() < 0.5))]
            s = s + 2 * mods[-1].padding[0] - 2
            mods += _mids(rng, o, True)
            c = o
        for _ in range(int(rng.integers(1, 3))):
            o = int(rng.choice(_CH))
            k = int(rng.choice((1, 2, 3)))
            p = int(rng.integers(0, 2)) if k > 1 else 0
            st = int(rng.choice((1, 1, 2)))
            if s + 2 * p < k:
                break
            mods.append(_binary(rng, c, o, True, kernel_size=k, stride=st, padding=p,
                                pad_value=float(rng.choice((1.0, -1.0)))))
            s = (s + 2 * p - k) // st + 1
            c = o
            mods += _mids(rng, o, True)
            if s >= 2 and rng.random() < 0.5:
                pk_, pp = int(rng.choice((2, 3))), int(rng.integers(0, 2))
                pk_ = min(pk_, s + 2 * pp)
                pp = min(pp, pk_ // 2)
                mods.append(nn.MaxPool2d(pk_, stride=int(rng.choice((1, 2))), padding=pp))
                s = (s + 2 * pp - pk_) // mods[-1].stride + 1
                mods += _mids(rng, o, True)
        mods.append(nn.Flatten())
        c = c * s * s
        if rng.random() < 0.6:
            h = int(rng.choice(_CH))
            mods.append(_binary(rng, c, h, False))
            mods += _mids(rng, h, False)
            c = h
    mods.append(nn.Linear(c, int(rng.integers(2, 6))))
    return nn.Sequential(*mods), shape


def _fuzz(n_models: int, tmp_path: Path, seed: int, sanitize: bool = False) -> int:
    rng = np.random.default_rng(seed)
    cases = []
    tried = 0
    while len(cases) < n_models:
        tried += 1
        assert tried < 20 * n_models, "the generator makes too few accepted models"
        net, shape = _random_model(rng)
        with torch.no_grad():                      # BN statistics from random data
            net.train()
            net(torch.randn(8, *shape))
        net.eval()
        x = torch.from_numpy(rng.normal(0, 1.5, (6, *shape)).astype(np.float32))
        try:
            pk = packed.export(net, fold_float_bn=bool(rng.random() < 0.7))
            want = pk(x).numpy()
        except ValueError:
            continue                               # refused by the packed export: not ours
        i = len(cases)
        res = packed_c.to_c(pk, tmp_path / f"m{i}", input_shape=shape, prefix=f"fz{i}",
                            word_bits=int(rng.choice((32, 64))))
        x.numpy().astype("<f4").tofile(tmp_path / f"in{i}.f32")
        cases.append((res, want))
    # one program runs every model on its inputs
    lines = ["#include <stdio.h>"]
    lines += [f'#include "m{i}/fz{i}.h"' for i in range(n_models)]
    lines.append("static float x[4096], y[64];")
    lines.append("static void run(FILE *f, int m, int n_in, int n_out, "
                 "void (*predict)(const float *, float *)) {")
    lines.append("  int n = 0, i; while (fread(x, sizeof(float), (size_t)n_in, f) == "
                 "(size_t)n_in) { predict(x, y); printf(\"%d %d\", m, n++);")
    lines.append("  for (i = 0; i < n_out; i++) { printf(\" %.9g\", (double)y[i]); }")
    lines.append("  printf(\"\\n\"); }")
    lines.append("  fclose(f); }")
    lines.append("int main(void) { FILE *f;")
    for i, (res, _) in enumerate(cases):
        assert res.input_size <= 4096 and res.output_size <= 64
        up = f"FZ{i}"
        lines.append(f'  f = fopen("{tmp_path}/in{i}.f32", "rb"); if (!f) return 1; '
                     f"run(f, {i}, {up}_INPUT_SIZE, {up}_OUTPUT_SIZE, fz{i}_predict);")
    lines.append("  return 0; }")
    (tmp_path / "main.c").write_text("\n".join(lines) + "\n")
    exe = tmp_path / "fuzz"
    san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"] if sanitize else []
    srcs = [str(res.source) for res, _ in cases]
    proc = subprocess.run(["gcc", *packed_c.STRICT_CFLAGS[:1], "-O0",
                           *packed_c.STRICT_CFLAGS[2:], *san, "-o", str(exe),
                           str(tmp_path / "main.c"), *srcs], timeout=600, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True, timeout=300)
    got: dict[int, list] = {}
    for line in out.stdout.splitlines():
        v = line.split()
        got.setdefault(int(v[0]), []).append([float(t) for t in v[2:]])
    for i, (res, want) in enumerate(cases):
        logits = np.array(got[i], np.float32)
        try:
            np.testing.assert_allclose(logits, want, rtol=0,
                                       atol=1e-4 * max(1.0, np.abs(want).max()))
            np.testing.assert_array_equal(logits.argmax(1), want.argmax(1))
        except AssertionError as exc:
            raise AssertionError(f"fuzz model {i} (seed {seed}) differs: "
                                 f"{res.source}\n{exc}") from None
    return len(cases)


def test_fuzz_c_equals_packed_model_100_models(tmp_path, one_thread):
    _need("gcc")
    assert _fuzz(100, tmp_path, seed=0) == 100


@pytest.mark.slow
@pytest.mark.long
def test_fuzz_c_equals_packed_model_more_seeds(tmp_path, one_thread):
    """300 more models, built with AddressSanitizer and UndefinedBehaviorSanitizer."""
    _need("gcc")
    for seed in (1, 2, 3):
        assert _fuzz(100, tmp_path / str(seed), seed=seed, sanitize=True) == 100
