# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# # 08 · A 15-minute classroom demonstration: binary networks on Fashion-MNIST
#
# **Question.** Can a network whose weights and activations are only $\pm 1$ recognise clothing, and what do we gain by it?
#
# **You will** (about two minutes per section)
# - look at the data: real 28×28 photos of clothing;
# - see the one idea that makes training possible: the straight-through estimator;
# - train a float CNN and its binary twin, then compare accuracy, memory and speed.
#
# **Needs:** nothing (it recaps [01](01_sign_and_ste.ipynb)–[07](07_live_dashboard.ipynb)) · **Next:** back to the [Index](00_index.ipynb)

# %% slideshow={"slide_type": "fragment"}
FULL_RUN = False  # True: 55,000 training images, 5 epochs, a wider CNN (several minutes)
import torch
from bnnlab import data, functional as BF, models, packed, plots as P
from bnnlab.summary import summary
from bnnlab.widgets import classroom_trainer, load_or_offer_download
torch.manual_seed(0)
if not FULL_RUN:
    torch.set_num_threads(1)  # small models: one thread is the fastest

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 1. The data (2 min)
#
# Fashion-MNIST: 70,000 grey images of 10 kinds of clothing (Zalando, 2017), read from Debian's
# `dataset-fashion-mnist` package (where it is missing, the next cell says how to install it or
# offers to download it). Harder than handwritten digits, small enough for a laptop.

# %% slideshow={"slide_type": "fragment"}
N_TRAIN, EPOCHS, WIDTHS = (None, 5, (32, 64, 64)) if FULL_RUN else (1200, 2, (16, 32, 32))
ds = load_or_offer_download(data.load_fashion_mnist, n_train=N_TRAIN, val_size=500, n_test=500)
P.image_grid_figure(ds.train[0][:10], [ds.classes[int(y)] for y in ds.train[1][:10]],
                    title="ten training images and their labels")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 2. The idea (3 min)
#
# A binary network replaces every weight and every activation of its inner layers by its sign,
# $\pm 1$. A product of two signs is an XNOR, a sum of 64 of them one popcount: cheap. But the sign has
# no useful derivative, so training uses a fake one, the straight-through estimator: gradient 1
# where $|x| \le 1$, else 0.

# %% slideshow={"slide_type": "fragment"} tags=["nbval-check-output"]
x = torch.tensor([-1.5, -0.2, 0.0, 0.7], requires_grad=True)
BF.ste_sign(x).sum().backward()
P.table([{"x": f"{v:g}", "sign": f"{s:+g}", "STE gradient": f"{g:g}"}
         for v, s, g in zip(x.tolist(), BF.sign(x.detach()).tolist(), x.grad.tolist(), strict=True)])

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 3. Two networks, one architecture (4 min)
#
# The same small CNN twice: float, and binary (first convolution and classifier float, the rest
# binary, as in most papers). Same data, same seed, same optimiser. **Train** trains both (the
# curves grow epoch by epoch), then shows the test images the binary network gets wrong and a
# scoreboard: test accuracy, memory of the weights, measured time per image, and *how* each model
# ran — in torch, or packed into 64-bit words and computed with XNOR and popcount.

# %% slideshow={"slide_type": "fragment"}
trainer = classroom_trainer({"float CNN": lambda: models.binary_cnn(channels=WIDTHS, binary=False),
                             "binary CNN": lambda: models.binary_cnn(channels=WIDTHS)},
                            ds, epochs=EPOCHS)
trainer

# %% slideshow={"slide_type": "fragment"}
scores = trainer.run()  # what the Train button does

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 4. Memory (3 min)
#
# Every binary weight takes 1 bit instead of 32. Per layer, the binary CNN:

# %% slideshow={"slide_type": "fragment"}
float_cnn, binary_cnn = trainer.models["float CNN"], trainer.models["binary CNN"]
s_float, s_bin = summary(float_cnn, ds.input_shape), summary(binary_cnn, ds.input_shape)
P.summary_figure(s_bin)

# %% slideshow={"slide_type": "fragment"} tags=["nbval-check-output"]
P.table([{"name": "float CNN", "memory_kib": s_float.memory_bytes / 1024, "binary_macs": s_float.binary_mac_ratio},
         {"name": "binary CNN", "memory_kib": s_bin.memory_bytes / 1024, "binary_macs": s_bin.binary_mac_ratio}])

# %% [markdown] slideshow={"slide_type": "slide"}
# ## 5. Speed (3 min)
#
# The scoreboard's packed row is the trained binary network exported into 64-bit words (64 weights
# per word; products become XNOR and popcount). It makes exactly the same predictions (its scores
# agree to float32 rounding):

# %% slideshow={"slide_type": "fragment"} tags=["nbval-check-output"]
fast = packed.export(binary_cnn, ds.val[0][:100])
y_fast, y_torch = fast(ds.test[0]), binary_cnn.eval()(ds.test[0])
print("same predictions:", torch.equal(y_fast.argmax(1), y_torch.argmax(1)))
print("same scores up to float32 rounding:", torch.allclose(y_fast, y_torch, rtol=1e-5, atol=1e-5))

# %% [markdown] slideshow={"slide_type": "fragment"}
# The packed binary layers are much faster than their float versions ([05](05_bit_packing.ipynb)
# measures them); the whole network gains less, because its first layer, BatchNorm, pooling and
# classifier stay float. Training in torch only *simulates* the binary network, which is why it is
# the slowest row of the scoreboard.
#
# ## Summary
#
# - A network with $\pm 1$ weights and activations in its inner layers still learns to recognise clothing,
#   a few points below its float twin.
# - It needs a fake gradient (the STE) to train, and it needs an order of magnitude less memory.
# - Packed into 64-bit words, its binary layers run as XNOR and popcount, much faster than float
#   products; in a network this small, the float layers around them set the pace.
#
# ## Try this
#
# 1. Set `FULL_RUN = True` and rerun: how much of the accuracy gap closes?
# 2. Show the images the *float* network gets wrong:
#    `P.misclassified_figure(ds.test[0], ds.test[1], float_cnn(ds.test[0]).argmax(1), ds.classes)`.
#    Are they the same kinds of clothing?
# 3. Open [07 · The live dashboard](07_live_dashboard.ipynb) and add the float twin of a wider CNN.
