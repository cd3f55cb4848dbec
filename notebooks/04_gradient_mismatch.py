# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# # 04 · How wrong is the fake gradient?
#
# **Question.** How far is the STE's gradient from a gradient that the binary network actually has?
#
# **You will**
# - measure, for one function, the L1 distance between each surrogate and the derivative of a noise-smoothed sign;
# - compare, layer by layer and during training, the STE gradient with two references: the exact
#   gradient of a $\tanh(\beta x)$-relaxed twin and a Monte-Carlo gradient of the smoothed network;
# - browse the agreement in the gradient-mismatch explorer.
#
# **Needs:** [01 · Sign and the STE](01_sign_and_ste.ipynb), [03 · Sign distributions](03_sign_distributions.ipynb) · **Next:** [05 · Bit packing and XNOR-popcount](05_bit_packing.ipynb) · [Index](00_index.ipynb)

# %% slideshow={"slide_type": "fragment"}
FULL_RUN = False  # True: more epochs and Monte-Carlo samples
import torch
from bnnlab import analysis as A, data, models, plots as P, train
from bnnlab.widgets import gradient_mismatch_explorer
torch.manual_seed(0)
if not FULL_RUN:
    torch.set_num_threads(1)  # small models: one thread is the fastest

# %% [markdown] slideshow={"slide_type": "slide"}
# ## One function
#
# If noise $s\varepsilon$ is added before the sign, the expected output
# $\bar q_s(x) = \mathbb{E}[\operatorname{sign}(x + s\varepsilon)]$ is smooth, with derivative $2p_{s\varepsilon}(x)$.
# The mismatch $\int |\tilde q'(x) - \bar q_s'(x)|\,dx$ says how far a surrogate $\tilde q'$ is from it
# (Yin et al. 2019 study this "coarse gradient"). With scale 1:

# %% slideshow={"slide_type": "fragment"} tags=["nbval-check-output"]
NOISES = ("uniform", "normal", "logistic")
P.table({q: {noise: A.surrogate_mismatch(q, noise, 1.0) for noise in NOISES}
         for q in ("ste_sign", "approx_sign", "swish_sign")},
        {"name": "surrogate", **{n: f"{n} noise" for n in NOISES}},
        formats=dict.fromkeys(NOISES, ".3f"), caption="L1 mismatch, noise scale 1")

# %% [markdown] slideshow={"slide_type": "fragment"}
# The STE is the *exact* gradient for uniform noise; no surrogate fits every noise.
#
# ## A whole network
#
# In a network the question becomes: how well does the STE gradient $\partial L / \partial W$ of each
# binary layer point in the direction of a trustworthy gradient? `GradientMismatch` measures it on a
# fixed probe batch before training and after each epoch, against
# - `tanh β=…`: the exact gradient of the network with every sign replaced by $\tanh(\beta x)$;
# - `mc σ=…`: an unbiased Monte-Carlo estimate of the gradient of $\mathbb{E}[L(W + \sigma\varepsilon)]$ (noisy).
#
# Three binary MLPs that differ only in the surrogate of their activations:

# %% slideshow={"slide_type": "fragment"}
ds = data.load_digits(flatten=True)
EPOCHS, MC = (20, 256) if FULL_RUN else (3, 16)
probe, results = (ds.val[0][:128], ds.val[1][:128]), {}
for q in ("ste_sign", "approx_sign", "swish_sign"):
    torch.manual_seed(0)
    net = models.binary_mlp(64, (64, 64, 64), input_quantizer=q)
    results[q] = A.GradientMismatch(*probe, betas=(1, 5), mc_samples=MC, seed=0)
    train.fit(net, ds, epochs=EPOCHS, lr=3e-3, callbacks=[results[q]], progress=False)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Browse the agreement
#
# Cosine 1 means the STE points exactly along the reference; 0 means it is no better than a random
# direction. Choose a layer (or the mean over layers), a reference and a metric.

# %% slideshow={"slide_type": "fragment"}
gradient_mismatch_explorer(results)

# %% [markdown] slideshow={"slide_type": "fragment"}
# The last measurement, layer by layer, for the last network (cosine with each reference):

# %% slideshow={"slide_type": "fragment"}
last = results["swish_sign"].results[-1]
layers = list(next(iter(last.values())))
P.table({ref: {layer: v["cosine"] for layer, v in per_layer.items()} for ref, per_layer in last.items()},
        {"name": "reference", **{layer: f"layer {layer}" for layer in layers}},
        formats=dict.fromkeys(layers, ".2f"), caption="cosine(STE gradient, reference)")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Summary
#
# - A surrogate is the exact gradient of the sign averaged over one particular noise; the
#   mismatch measures how far it is from another.
# - In a network the STE gradient correlates with, but is not, the gradient of a smooth or
#   smoothed twin; the agreement varies by layer and over training.
# - Monte-Carlo references are unbiased but noisy: read them with their sample count in mind.
#
# ## Try this
#
# 1. In [01](01_sign_and_ste.ipynb)'s explorer, find the noise scale for which `approx_sign` has the smallest mismatch.
# 2. Set `MC = 512` and compare the `mc σ=0.1` curves with `MC = 16`: which part of the gap was noise?
# 3. Add `betas=(1, 5, 20)`: does a sharper relaxation agree better or worse with the STE?
