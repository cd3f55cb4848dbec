# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# # 03 · Sign distributions and flip ratio
#
# **Question.** While a binary network trains, do its binary weights still change sign, and where do the latent weights sit?
#
# **You will**
# - record histograms of latent weights and pre-activations per epoch with the `SignStats` callback;
# - measure the flip ratio (share of binary weights that changed sign) at every step with `FlipRatio`;
# - browse layers and epochs in the sign-distribution explorer.
#
# **Needs:** [02 · Binarise a trained float model](02_binarize_a_model.ipynb) · **Next:** [04 · How wrong is the fake gradient?](04_gradient_mismatch.ipynb) · [Index](00_index.ipynb)

# %% slideshow={"slide_type": "fragment"}
FULL_RUN = False  # True: more epochs
import torch
from bnnlab import analysis as A, data, models, plots as P, train
from bnnlab.widgets import sign_distribution_explorer
torch.manual_seed(0)
if not FULL_RUN:
    torch.set_num_threads(1)  # small models: one thread is the fastest

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Two numbers
#
# Only the sign of a latent weight $W$ reaches the forward pass, $W_b = \operatorname{sign}(W)$. The
# **share of +1** of a layer tells whether its signs are balanced; the **flip ratio** between two
# moments is the share of binary weights whose sign changed (Helwegen et al. 2019; larq's
# `flip_ratio` metric). Zero counts as $+1$:

# %% slideshow={"slide_type": "fragment"} tags=["nbval-check-output"]
before, after = torch.tensor([1.0, -2.0, 0.0, 3.0]), torch.tensor([0.5, 1.0, -1.0, 3.0])
print(f"share of +1 before: {A.fraction_positive(before):.0%}; "
      f"flip ratio before → after: {A.flip_ratio(before, after):.0%}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Record them during training
#
# A binary MLP with three binary layers on the 8×8 digits. `SignStats` takes a snapshot before
# training and after every epoch (with a probe batch, it records the layers' inputs too);
# `FlipRatio` compares the signs after every optimiser step.

# %% slideshow={"slide_type": "fragment"}
ds = data.load_digits(flatten=True)
EPOCHS = 30 if FULL_RUN else 5
net = models.binary_mlp(64, (128, 128, 128, 128))
stats, flips = A.SignStats(probe=ds.val[0]), A.FlipRatio(every="step")
train.fit(net, ds, epochs=EPOCHS, lr=3e-3, callbacks=[stats, flips], progress=False)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Browse the distributions
#
# Choose a layer, weights or inputs, and an epoch. The latent weights sit in a narrow band around
# 0 (the scale of their initialisation), so a few optimiser steps are enough to flip a sign, and
# their share of $+1$ (right panel) stays close to one half. The inputs, BatchNorm outputs, spread
# much wider; those beyond the STE's clip at $\pm 1$ pass no gradient (values beyond $\pm 1.5$ are
# counted in the end bins).

# %% slideshow={"slide_type": "fragment"}
sign_distribution_explorer(stats)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Flip ratio per step
#
# Early in training one or two percent of the binary weights flip at every step; the ratio then
# decays as training settles. A binary network has converged when its signs stop flipping, not
# when its latent weights stop moving.

# %% slideshow={"slide_type": "fragment"}
P.flip_ratio_figure(flips.steps, flips.history, every="step",
                    title="share of binary weights that changed sign at each step")

# %% [markdown] slideshow={"slide_type": "fragment"}
# After training, per layer: the share of $+1$ signs, and the share of latent weights so close to
# 0 ($|W| < 0.01$) that one more step could flip them:

# %% slideshow={"slide_type": "fragment"}
P.table({f"layer {name}": {"share": st.fraction_positive, "near": st.near_flip}
         for name, st in A.sign_stats(net).items()},
        {"name": "layer", "share": "share of +1", "near": "near a flip (|W| < 0.01)"},
        formats={"share": ".1%", "near": ".1%"})

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Summary
#
# - Only signs matter in the forward pass; the flip ratio measures how much the *binary* network
#   still changes.
# - Flips are frequent at first and become rare; the learning rate sets how many there are.
# - Latent weights live close to 0 (the clip at $\pm 1$ bounds them in long runs): their size says
#   little, the flip ratio says how much the binary network still changes.
#
# ## Try this
#
# 1. Retrain with `lr=3e-2`: how does the flip ratio curve change, and the accuracy?
# 2. Train with `lr=3e-2` and `weight_clip=None` for 30 epochs: where do the latent weights go?
# 3. Use `A.FlipRatio(every="epoch")`: why is it not the sum of the per-step ratios?
