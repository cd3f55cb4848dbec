# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# # 01 · Sign, and why it needs a fake gradient
#
# **Question.** How can a network learn through $\operatorname{sign}(x)$, whose derivative is 0 almost everywhere?
#
# **You will**
# - see that bnnlab's sign maps 0 to $+1$ and that autograd's gradient of a sign is zero;
# - compare the straight-through estimator (STE) with the ApproxSign and SwishSign surrogates, and
#   with the derivative of a noise-smoothed sign, in an interactive explorer;
# - train the same binary network with and without a surrogate gradient.
#
# **Needs:** nothing, start here · **Next:** [02 · Binarise a trained float model](02_binarize_a_model.ipynb) · [Index](00_index.ipynb)

# %% slideshow={"slide_type": "fragment"}
FULL_RUN = False  # True: more epochs (a minute instead of seconds)
import torch

from bnnlab import analysis as A
from bnnlab import functional as BF
from bnnlab import lessons as L
from bnnlab import plots as P
from bnnlab.widgets import quantizer_explorer

torch.manual_seed(0)
if not FULL_RUN:
    torch.set_num_threads(1)  # networks this small train fastest on one thread

# %% [markdown] slideshow={"slide_type": "slide"}
# ## The forward: a sign with no zero
#
# A binary layer keeps float *latent* values $x$ and uses $x_b = \operatorname{sign}(x) \in \{-1, +1\}$
# in its forward pass, with $\operatorname{sign}(0) = +1$. `torch.sign` maps 0 to 0, which is not binary:

# %% slideshow={"slide_type": "fragment"} tags=["nbval-check-output"]
x = torch.tensor([-1.5, -0.2, 0.0, 0.7])
BF.sign(x), torch.sign(x)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## The backward: zero, or a useful lie
#
# The true derivative of the sign is 0 everywhere except at 0, so autograd passes back nothing.
# The straight-through estimator (Bengio et al. 2013; Hubara, Courbariaux et al. 2016) pretends the
# sign was the identity inside $[-c, c]$: $\partial q / \partial x \approx \mathbb{1}\{|x| \le c\}$, with $c = 1$.

# %% slideshow={"slide_type": "fragment"} tags=["nbval-check-output"]
x = torch.tensor([-1.5, -0.2, 0.0, 0.7], requires_grad=True)
torch.sign(x).sum().backward()
x.grad  # autograd's true derivative: no signal at all

# %% slideshow={"slide_type": "fragment"} tags=["nbval-check-output"]
x.grad = None
BF.ste_sign(x, clip_value=1.0).sum().backward()
x.grad  # the STE: 1 inside |x| <= 1, 0 outside

# %% [markdown] slideshow={"slide_type": "fragment"}
# Other surrogates keep the same forward and change only the backward:
# ApproxSign (Bi-Real Net, Liu et al. 2018) $(2 - 2|x|)\,\mathbb{1}\{|x| \le 1\}$ and
# SwishSign (BNN+, Darabi et al. 2018) $\beta(2 - \beta x \tanh(\beta x / 2)) / (1 + \cosh \beta x)$ with $\beta = 5$.
# Their gradients at five points:

# %% slideshow={"slide_type": "fragment"} tags=["nbval-check-output"]
grid = torch.tensor([-1.5, -0.5, 0.0, 0.5, 1.5])
cols = {f"x = {x:g}": x for x in grid.tolist()}
L.Table([{"surrogate": name, **dict(zip(cols, A.surrogate_curves(name, grid)[1].tolist(), strict=True))}
         for name in ("ste_sign", "approx_sign", "swish_sign")],
        formats=dict.fromkeys(cols, ".3f"), title="surrogate gradient ∂q/∂x at five points")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Explore the surrogates
#
# Pick a quantizer and move `clip_value` (STE) or `beta` (SwishSign). The dashed curve is the
# derivative of the *smoothed* sign $\frac{d}{dx}\mathbb{E}[\operatorname{sign}(x + s\varepsilon)]$ for the chosen
# `noise` and `scale` $s$: the gradient that a stochastic binary network really has on average.
# The title gives the L1 distance between the surrogate and that curve. Look for the setting where
# it is 0: the STE with $c = 1$ and uniform noise of scale 1 (BinaryNet's stochastic binarisation).

# %% slideshow={"slide_type": "fragment"}
quantizer_explorer()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Does the surrogate matter in training?
#
# A clip value $c = 0$ gives the true gradient of the sign: zero. The same binary MLP on the 8×8
# digits (64-128-128-128-128-10, three binary layers in a row), trained with $c = 0$ and with the
# STE's $c = 1$ (same seed, same data). `bnnlab.lessons.ste_vs_no_gradient` is the whole experiment;
# the test suite runs it under five seeds.

# %% slideshow={"slide_type": "fragment"}
run = L.ste_vs_no_gradient(seed=0, epochs=20 if FULL_RUN else 5)
P.history_figure(run.figure_series(), "val_acc", title="validation accuracy, binary MLP on digits")

# %% slideshow={"slide_type": "fragment"}
L.Table([{"c": f"clip c = {c:g}", "acc": acc} for c, acc in run.accuracy.items()],
        {"c": "surrogate", "acc": "validation accuracy (%)"}, {"acc": lambda v: f"{100 * v:.1f}"})

# %% [markdown] slideshow={"slide_type": "fragment"}
# With $c = 0$ no gradient crosses a sign: the binary layers and the float layer before them never
# change, and only the float classifier on top learns, from fixed random binary features that three
# random binary layers in a row have made poor. With the STE every layer learns.
#
# ## Summary
#
# - bnnlab's sign is binary: $\operatorname{sign}(0) = +1$; `torch.sign` is not.
# - The true gradient of a sign is zero; a surrogate (STE, ApproxSign, SwishSign) replaces it in
#   the backward pass only. Without one ($c = 0$) the binary MLP above stays more than 15 points
#   below the STE (about 27 points on average; `tests/test_lessons.py` checks five seeds).
# - The STE with $c = 1$ is exactly the average gradient of a sign under uniform noise on $[-1, 1]$;
#   other surrogates match other noises more or less well.
#
# ## Try this
#
# 1. In the explorer, set `noise` to `normal`: which quantizer, and which `scale`, gives the smallest mismatch?
# 2. Choose `ste_heaviside` ({0, 1} output): why is the dashed curve half as high as for the sign?
# 3. Run `L.ste_vs_no_gradient(hidden=(128, 128))` (one binary layer instead of three): why does
#    $c = 0$ come so much closer to the STE?
