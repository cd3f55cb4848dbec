# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# # 05 · Bit packing and XNOR-popcount
#
# **Question.** How do 64 binary values fit in one machine word, and how much faster and smaller does that make a binary layer on an ordinary CPU?
#
# **You will**
# - pack signs into `uint64` words and read the bits;
# - check that XNOR and popcount compute exactly the products of signs;
# - measure packed kernels against torch float32 (speed and memory), then export a trained binary
#   network to packed form and check that it computes the same outputs.
#
# **Needs:** [02 · Binarise a trained float model](02_binarize_a_model.ipynb) · **Next:** [06 · Binary architectures compared](06_binary_architectures.ipynb) · [Index](00_index.ipynb)

# %% slideshow={"slide_type": "fragment"}
FULL_RUN = False  # True: every benchmark case at 1 and 2 threads (a few minutes)
import numpy as np
import torch
from bnnlab import bench, data, functional as BF, kernels, models, packed, plots as P, train
from bnnlab.widgets import bit_packing_explorer
torch.manual_seed(0)
if not FULL_RUN:
    torch.set_num_threads(1)  # small models: one thread is the fastest

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 64 signs in a word
#
# Element $j$ of a row goes to bit $j \bmod 64$ of word $\lfloor j / 64 \rfloor$, least significant
# bit first; a bit is 1 when the value is negative ($-1$) and 0 otherwise, so $\operatorname{sign}(0) = +1$
# (the layout of larq-compute-engine). Five values fill the low bits of one word:

# %% slideshow={"slide_type": "fragment"} tags=["nbval-check-output"]
p = kernels.pack_signs(np.array([[0.5, -2.0, 0.0, -1.0, 3.0]], np.float32))
print(p)
print(f"word: {int(p.words[0, 0])} = 0b{int(p.words[0, 0]):05b} (bits 1 and 3 are set: the two negatives)")

# %% [markdown] slideshow={"slide_type": "fragment"}
# A row of $K$ values takes $\lceil K/64 \rceil$ words: 300 float32 values (1,200 bytes) become 5 words (40 bytes).

# %% slideshow={"slide_type": "fragment"} tags=["nbval-check-output"]
g = torch.Generator().manual_seed(0)
a, b = torch.randn(8, 300, generator=g), torch.randn(16, 300, generator=g)
pa, pb = kernels.pack_signs(a), kernels.pack_signs(b)
P.table([{"matrix": "a (8 × 300)", "float32 bytes": a.numel() * 4, "packed bytes": pa.nbytes},
         {"matrix": "b (16 × 300)", "float32 bytes": b.numel() * 4, "packed bytes": pb.nbytes}])

# %% [markdown] slideshow={"slide_type": "slide"}
# ## See it: signs, bits, words, and a dot product
#
# Each column is one element: its sign, its bit, and (with a second vector $b$) the XOR of the two
# bits, red where the signs differ. Move $K$ past 64 and a second word starts; change the share of
# equal signs and watch the popcount and the dot product follow. The title compares
# $K - 2\,\operatorname{popcount}(a \oplus b)$ with what the packed kernel computed.

# %% slideshow={"slide_type": "fragment"}
bit_packing_explorer()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## A product of signs is an XNOR, a sum of them a popcount
#
# Two signs agree when their bits are equal, so the dot product of two rows of $\pm 1$ is
# $K - 2\,\operatorname{popcount}(a \oplus b)$: one XOR and one popcount per 64 products.
# `xnor_matmul` computes all the dot products of two packed matrices; it equals the float product
# of the signs exactly:

# %% slideshow={"slide_type": "fragment"} tags=["nbval-check-output"]
d = kernels.xnor_matmul(pa, pb)
print(f"{d.dtype} result of shape {d.shape}; equal to the float product of the signs: "
      f"{np.array_equal(d, (BF.sign(a) @ BF.sign(b).T).numpy())}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## How much faster? Measure it
#
# `bench.run` checks each packed result against torch before timing it, then reports medians of
# interleaved runs (torch float32 vs bnnlab): a GEMM, a matrix-vector product and the whole small
# CNN (`models.binary_cnn`, packed vs its float twin), here at one thread (`FULL_RUN` adds the
# convolutions and two threads). The speed-up is torch's time over bnnlab's; the numbers depend on
# this machine and its load.

# %% slideshow={"slide_type": "fragment"}
rows = bench.run(None if FULL_RUN else "gemm1024,gemv1x4096,e2e_cnn",
                 quick=not FULL_RUN, threads=(1, 2) if FULL_RUN else (1,))
timed = [{"case": r["case"], "threads": r["threads"], "torch_us": r["torch"] * 1e6,
          "bnnlab_us": r["bnnlab"] * 1e6, "ratio": r["ratio"], "correct": "yes" if r["correct"] else "NO"}
         for r in rows if r["unit"] == "s" and r["torch"] and r["bnnlab"]]
P.table(timed, {"case": "case", "threads": "threads", "torch_us": "torch float32 (µs)",
                "bnnlab_us": "bnnlab packed (µs)", "ratio": "speed-up (×)", "correct": "same result"},
        formats={"torch_us": ",.1f", "bnnlab_us": ",.1f", "ratio": ".1f"})

# %% slideshow={"slide_type": "fragment"}
P.bars_figure([f"{r['case']} ({r['threads']} thr)" for r in timed], [r["ratio"] for r in timed],
              title="speed-up of the packed kernels over torch float32 (higher is better)",
              yaxis_title="speed-up (×)", fmt=".1f")

# %% [markdown] slideshow={"slide_type": "fragment"}
# Read the speed-up column. On a CPU with a fast popcount (AVX2, AVX-512) the kernels alone are
# typically an order of magnitude faster than float32. The whole CNN gains far less: its float first layer, BatchNorm, pooling and classifier are not binary (Amdahl's law), and
# at batch 1 the fixed costs of each call count.
#
# ## A trained network, packed
#
# Train a binary MLP on the 8×8 digits, export it (`packed.export` folds each BatchNorm and sign
# into one integer threshold per channel, and the BatchNorm after the last binary layer into that
# layer's float output) and compare it with the torch model it came from. The integer parts are
# exact, so the predictions are identical; the folded BatchNorm rounds once where torch rounds
# twice, so the logits agree to float32 rounding:

# %% slideshow={"slide_type": "fragment"}
ds = data.load_digits(flatten=True)
net = models.binary_mlp(64, (256, 256, 256))
train.fit(net, ds, epochs=20 if FULL_RUN else 3, lr=3e-3, progress=False)
fast = packed.export(net, ds.val[0])
print("\n".join(fast.notes))

# %% slideshow={"slide_type": "fragment"} tags=["nbval-check-output"]
x = ds.test[0]
y_fast, y_torch = fast(x), net.eval()(x)
print("same predictions:", torch.equal(y_fast.argmax(1), y_torch.argmax(1)))
print("same logits up to float32 rounding:", torch.allclose(y_fast, y_torch, rtol=1e-5, atol=1e-5))
m = fast.memory()
P.table([{"binary layers": m["binary_layers"], "packed": m["packed_weight_bytes"] / 1024,
          "float": m["float_weight_bytes"] / 1024, "ratio": m["weight_ratio"]}],
        {"binary layers": "binary layers", "packed": "packed weights (KiB)",
         "float": "as float32 (KiB)", "ratio": "smaller by (×)"},
        formats={"packed": ".1f", "float": ".1f", "ratio": ".1f"})

# %% [markdown] slideshow={"slide_type": "fragment"}
# With `fold_float_bn=False` that BatchNorm stays a torch stage and the packed network equals the
# torch network bit for bit (BinaryNet layers: the torch layer's output *is* the integer
# $K - 2\,\operatorname{popcount}$):

# %% slideshow={"slide_type": "fragment"} tags=["nbval-check-output"]
exact = packed.export(net, ds.val[0], fold_float_bn=False)
print("bit for bit equal:", torch.equal(exact(x), y_torch))

# %% slideshow={"slide_type": "fragment"}
one, sizes = x[:1], fast.sizes()
P.table([{"name": "torch (simulated binary)", "latency_us": bench.latency(net, one) * 1e6,
          "file_kib": sizes["float_state_dict_bytes"] / 1024},
         {"name": "packed", "latency_us": bench.latency(fast, one) * 1e6,
          "file_kib": sizes["packed_file_bytes"] / 1024}],
        {"name": "model", "latency_us": "latency per image (µs)", "file_kib": "file size (KiB)"},
        formats={"latency_us": ",.0f", "file_kib": ",.1f"})

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Summary
#
# - 64 signs fit one `uint64`; a dot product of signs is $K - 2\,\operatorname{popcount}(a \oplus b)$, exactly.
# - Packed binary kernels beat float32 by a large factor on the binary layers; whole-network gains
#   are bounded by the layers that stay float.
# - The packed export reproduces the trained torch network's predictions exactly (its logits bit
#   for bit with `fold_float_bn=False`, BinaryNet layers) and stores its binary weights in 1/32 of
#   the space.
#
# ## Try this
#
# 1. Pack a vector of 65 values: how many words, and which bits of the second word are used?
# 2. Run `bench.run("gemm", quick=True, threads=(1, 2))`: does a second thread help on this machine?
# 3. Export `convert.binarize(..., layer="abc")` of a float MLP: read the error message, and explain it.
