"""Build, execute and strip bnnlab's notebooks. The cell sources live in this file.

The notebooks in ``notebooks/`` are build products of the sources below (one percent-format
string per notebook, as jupytext would write them): edit the sources here, then run

    python tools/notebooks.py                 # build + execute + strip every notebook, print times
    python tools/notebooks.py run 01 05       # the same for some notebooks (by number or name)
    python tools/notebooks.py build           # write the .ipynb files without executing them
    python tools/notebooks.py strip           # strip outputs of notebooks/*.ipynb in place
    python tools/notebooks.py check           # exit 1 if a notebook is out of sync with its source

Source format: a line ``# %% [markdown]`` starts a markdown cell, a line ``# %%`` a code cell;
markdown is written as plain text (not commented). A cell header may carry jupytext's tags,
``# %% tags=["nbval-check-output"]``: such a cell's output is kept in git and compared by
``pytest --nbval-lax`` (nbval reads the tag; students see no marker); every other output is
stripped. A first line ``# NBVAL_CHECK_OUTPUT`` (the older marker) is turned into that tag and
removed from the cell. Every cell also gets RISE / JupyterLab slide metadata: a markdown cell
that starts with a heading opens a slide, the other cells appear one by one (fragments).

``run`` executes with ``jupyter nbconvert --to notebook --execute --inplace
--ExecutePreprocessor.store_widget_state=False`` (kernel ``python3``, working directory
``notebooks/``), then strips outputs (except guarded cells), execution counts, per-cell
execution metadata and any widget state. ``00_index.ipynb`` is generated from the first-cell
titles and questions of the other notebooks.
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import resource
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NB_DIR = ROOT / "notebooks"
CHECK_MARKER = "# NBVAL_CHECK_OUTPUT"
CHECK_TAG = "nbval-check-output"
BUDGET_S = 30.0
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}

# =============================================================================================
# Sources
# =============================================================================================
SOURCES: dict[str, str] = {}

SOURCES["01_sign_and_ste"] = r'''
# %% [markdown]
# 01 · Sign, and why it needs a fake gradient

**Question.** How can a network learn through $\operatorname{sign}(x)$, whose derivative is 0 almost everywhere?

**You will**
- see that bnnlab's sign maps 0 to $+1$ and that autograd's gradient of a sign is zero;
- compare the straight-through estimator (STE) with the ApproxSign and SwishSign surrogates, and
  with the derivative of a noise-smoothed sign, in an interactive explorer;
- train the same binary network with and without a surrogate gradient.

**Needs:** nothing, start here · **Next:** [02 · Binarise a trained float model](02_binarize_a_model.ipynb) · [Index](00_index.ipynb)

# %%
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

# %% [markdown]
## The forward: a sign with no zero

A binary layer keeps float *latent* values $x$ and uses $x_b = \operatorname{sign}(x) \in \{-1, +1\}$
in its forward pass, with $\operatorname{sign}(0) = +1$. `torch.sign` maps 0 to 0, which is not binary:

# %%
# NBVAL_CHECK_OUTPUT
x = torch.tensor([-1.5, -0.2, 0.0, 0.7])
BF.sign(x), torch.sign(x)

# %% [markdown]
## The backward: zero, or a useful lie

The true derivative of the sign is 0 everywhere except at 0, so autograd passes back nothing.
The straight-through estimator (Bengio et al. 2013; Hubara, Courbariaux et al. 2016) pretends the
sign was the identity inside $[-c, c]$: $\partial q / \partial x \approx \mathbb{1}\{|x| \le c\}$, with $c = 1$.

# %%
# NBVAL_CHECK_OUTPUT
x = torch.tensor([-1.5, -0.2, 0.0, 0.7], requires_grad=True)
torch.sign(x).sum().backward()
x.grad  # autograd's true derivative: no signal at all

# %%
# NBVAL_CHECK_OUTPUT
x.grad = None
BF.ste_sign(x, clip_value=1.0).sum().backward()
x.grad  # the STE: 1 inside |x| <= 1, 0 outside

# %% [markdown]
Other surrogates keep the same forward and change only the backward:
ApproxSign (Bi-Real Net, Liu et al. 2018) $(2 - 2|x|)\,\mathbb{1}\{|x| \le 1\}$ and
SwishSign (BNN+, Darabi et al. 2018) $\beta(2 - \beta x \tanh(\beta x / 2)) / (1 + \cosh \beta x)$ with $\beta = 5$.
Their gradients at five points:

# %%
# NBVAL_CHECK_OUTPUT
grid = torch.tensor([-1.5, -0.5, 0.0, 0.5, 1.5])
cols = {f"x = {x:g}": x for x in grid.tolist()}
L.Table([{"surrogate": name, **dict(zip(cols, A.surrogate_curves(name, grid)[1].tolist(), strict=True))}
         for name in ("ste_sign", "approx_sign", "swish_sign")],
        formats=dict.fromkeys(cols, ".3f"), title="surrogate gradient ∂q/∂x at five points")

# %% [markdown]
## Explore the surrogates

Pick a quantizer and move `clip_value` (STE) or `beta` (SwishSign). The dashed curve is the
derivative of the *smoothed* sign $\frac{d}{dx}\mathbb{E}[\operatorname{sign}(x + s\varepsilon)]$ for the chosen
`noise` and `scale` $s$: the gradient that a stochastic binary network really has on average.
The title gives the L1 distance between the surrogate and that curve. Look for the setting where
it is 0: the STE with $c = 1$ and uniform noise of scale 1 (BinaryNet's stochastic binarisation).

# %%
quantizer_explorer()

# %% [markdown]
## Does the surrogate matter in training?

A clip value $c = 0$ gives the true gradient of the sign: zero. The same binary MLP on the 8×8
digits (64-128-128-128-128-10, three binary layers in a row), trained with $c = 0$ and with the
STE's $c = 1$ (same seed, same data). `bnnlab.lessons.ste_vs_no_gradient` is the whole experiment;
the test suite runs it under five seeds.

# %%
run = L.ste_vs_no_gradient(seed=0, epochs=20 if FULL_RUN else 5)
P.history_figure(run.figure_series(), "val_acc", title="validation accuracy, binary MLP on digits")

# %%
L.Table([{"c": f"clip c = {c:g}", "acc": acc} for c, acc in run.accuracy.items()],
        {"c": "surrogate", "acc": "validation accuracy (%)"}, {"acc": lambda v: f"{100 * v:.1f}"})

# %% [markdown]
With $c = 0$ no gradient crosses a sign: the binary layers and the float layer before them never
change, and only the float classifier on top learns, from fixed random binary features that three
random binary layers in a row have made poor. With the STE every layer learns.

## Summary

- bnnlab's sign is binary: $\operatorname{sign}(0) = +1$; `torch.sign` is not.
- The true gradient of a sign is zero; a surrogate (STE, ApproxSign, SwishSign) replaces it in
  the backward pass only. Without one ($c = 0$) the binary MLP above stays more than 15 points
  below the STE (about 27 points on average; `tests/test_lessons.py` checks five seeds).
- The STE with $c = 1$ is exactly the average gradient of a sign under uniform noise on $[-1, 1]$;
  other surrogates match other noises more or less well.

## Try this

1. In the explorer, set `noise` to `normal`: which quantizer, and which `scale`, gives the smallest mismatch?
2. Choose `ste_heaviside` ({0, 1} output): why is the dashed curve half as high as for the sign?
3. Run `L.ste_vs_no_gradient(hidden=(128, 128))` (one binary layer instead of three): why does
   $c = 0$ come so much closer to the STE?
'''

SOURCES["02_binarize_a_model"] = r'''
# %% [markdown]
# 02 · Binarise a trained float model

**Question.** What changes (memory, operations, accuracy) when the layers of a trained float network become binary?

**You will**
- convert a float MLP with `binarize_with_report` and read what was replaced and why;
- count bits, memory and multiply-accumulates (MACs) with `summary`;
- measure the accuracy before and after a short fine-tune;
- pick the layers to binarise in an explorer and fine-tune.

**Needs:** [01 · Sign and the STE](01_sign_and_ste.ipynb) · **Next:** [03 · Sign distributions and flip ratio](03_sign_distributions.ipynb) · [Index](00_index.ipynb)

# %%
FULL_RUN = False  # True: more training images and epochs
import copy

import torch

from bnnlab import convert
from bnnlab import functional as BF
from bnnlab import lessons as L
from bnnlab.summary import summary
from bnnlab.widgets import binarize_explorer

torch.manual_seed(0)
if not FULL_RUN:
    torch.set_num_threads(1)  # networks this small train fastest on one thread

# %% [markdown]
## A float network to start from

Fashion-MNIST (real 28×28 photos of clothing, 10 classes), flattened to 784 inputs: 3,000
training and 1,000 validation images. The float twin of bnnlab's reference MLP (784-256-256-10)
uses `hardtanh` where the binary network will take signs. Why not ReLU? Because
$\operatorname{sign}(\operatorname{ReLU}(x))$ is always $+1$:

# %%
# NBVAL_CHECK_OUTPUT
x = torch.tensor([-2.0, -0.5, 0.0, 0.5])
L.Table([{"x": v, "sign(ReLU(x))": a, "sign(hardtanh(x))": b} for v, a, b in
         zip(x.tolist(), BF.sign(torch.relu(x)).tolist(), BF.sign(torch.nn.functional.hardtanh(x)).tolist(), strict=True)],
        formats={"x": "+.1f", "sign(ReLU(x))": "+.0f", "sign(hardtanh(x))": "+.0f"})

# %% [markdown]
The whole experiment of this notebook is one function, `bnnlab.lessons.binarize_and_finetune`
(the test suite runs it under five seeds): train the float MLP (Adam, 5 epochs, cosine decay),
binarise a copy with `convert.binarize_with_report`, measure it, fine-tune it (3 epochs at a
ten times smaller learning rate), measure again. We run it once and look at each part.

# %%
run = L.binarize_and_finetune(seed=0, **({"n_train": 20000, "epochs": 10} if FULL_RUN else {}))
float_net, bin_net, ds = run.float_model, run.binary_model, run.data

# %% [markdown]
## Binarise it

`binarize_with_report` returns a binarised *copy* and a report. By default the first layer (it
sees the real pixels) and the last one (it produces the logits) stay float, as in most BNN papers:

# %%
# NBVAL_CHECK_OUTPUT
_, report = convert.binarize_with_report(float_net)
L.report_table(report)

# %% [markdown]
## What did we gain?

`summary` counts, per layer, the weights by bit width, the memory with 1 bit per binary weight
(32 bits per other parameter), and MACs split into 1-bit and 32-bit ones:

# %%
L.summary_table(summary(bin_net, ds.input_shape))

# %%
# NBVAL_CHECK_OUTPUT
L.memory_table({"float": summary(float_net, ds.input_shape), "binarised": summary(bin_net, ds.input_shape)})

# %% [markdown]
The binarised middle layer shrank 32×, but the whole network only by the factor above: the float
first layer (784 × 256 weights) holds almost all of what is left.

## And what did it cost?

The copy computes a different function (signs instead of values in the middle layer). Its
validation accuracy straight after the conversion, and after the short fine-tune:

# %%
run.table()

# %% [markdown]
## Choose the layers yourself

Tick the layers to binarise and pick a family (BinaryNet `binary`, XNOR-Net `xnor`, XNOR-Net++
`xnor++`, ABC-Net `abc`): the memory and MAC bars update at once. **Fine-tune** starts from the
float weights, trains as above and adds a bar to the accuracy chart (Stop interrupts it).

# %%
explorer = binarize_explorer(lambda: copy.deepcopy(float_net), ds, epochs=3, lr=3e-4,
                             fit_kw={"schedule": "cosine", "seed": 0})
explorer

# %%
explorer.run()  # what the Fine-tune button does, for a top-to-bottom run
L.Table(explorer.results, {"name": "configuration", "accuracy": "validation accuracy (%)", "memory_kib": "memory (KiB)"},
        {"accuracy": lambda v: f"{100 * v:.1f}", "memory_kib": ".1f"})

# %% [markdown]
## Summary

- `binarize` replaces `nn.Linear`/`nn.Conv*d` layers by binary ones, copying the latent weights;
  the report says which layers changed and why the others did not.
- Memory shrinks 32× per binarised layer; the float first and last layers and the BatchNorm
  parameters soon dominate what is left.
- A binarised copy computes a different function: it loses accuracy straight after the
  conversion, and a short fine-tune at a small learning rate wins most of it back (tested over
  five seeds). That holds for a float network trained with `hardtanh`; one trained with ReLU
  feeds its binary layer a constant $+1$ and falls to chance.

## Try this

1. In the explorer, binarise the first layer too: the pixels lie in $[0, 1]$, so what is their
   sign, and what happens to accuracy?
2. Run `L.binarize_and_finetune(activation="relu")`: read the warning, compare `.converted_acc`
   and `.finetuned_acc` with the hardtanh run, and explain them.
3. Run `L.binarize_and_finetune(finetune_lr=3e-3)`: why does a large fine-tuning step hurt at first?
4. Compare the families at equal memory: which one is worth its extra scales?
'''

SOURCES["03_sign_distributions"] = r'''
# %% [markdown]
# 03 · Sign distributions and flip ratio

**Question.** While a binary network trains, do its binary weights still change sign, and where do the latent weights sit?

**You will**
- record histograms of latent weights and pre-activations per epoch with the `SignStats` callback;
- measure the flip ratio (share of binary weights that changed sign) at every step with `FlipRatio`;
- browse layers and epochs in the sign-distribution explorer.

**Needs:** [02 · Binarise a trained float model](02_binarize_a_model.ipynb) · **Next:** [04 · How wrong is the fake gradient?](04_gradient_mismatch.ipynb) · [Index](00_index.ipynb)

# %%
FULL_RUN = False  # True: more epochs
import torch
from bnnlab import analysis as A, data, models, plots as P, train
from bnnlab.widgets import sign_distribution_explorer
torch.manual_seed(0)
if not FULL_RUN:
    torch.set_num_threads(1)  # small models: one thread is the fastest

# %% [markdown]
## Two numbers

Only the sign of a latent weight $W$ reaches the forward pass, $W_b = \operatorname{sign}(W)$. The
**share of +1** of a layer tells whether its signs are balanced; the **flip ratio** between two
moments is the share of binary weights whose sign changed (Helwegen et al. 2019; larq's
`flip_ratio` metric). Zero counts as $+1$:

# %% tags=["nbval-check-output"]
before, after = torch.tensor([1.0, -2.0, 0.0, 3.0]), torch.tensor([0.5, 1.0, -1.0, 3.0])
print(f"share of +1 before: {A.fraction_positive(before):.0%}; "
      f"flip ratio before → after: {A.flip_ratio(before, after):.0%}")

# %% [markdown]
## Record them during training

A binary MLP with three binary layers on the 8×8 digits. `SignStats` takes a snapshot before
training and after every epoch (with a probe batch, it records the layers' inputs too);
`FlipRatio` compares the signs after every optimiser step.

# %%
ds = data.load_digits(flatten=True)
EPOCHS = 30 if FULL_RUN else 5
net = models.binary_mlp(64, (128, 128, 128, 128))
stats, flips = A.SignStats(probe=ds.val[0]), A.FlipRatio(every="step")
train.fit(net, ds, epochs=EPOCHS, lr=3e-3, callbacks=[stats, flips], progress=False)

# %% [markdown]
## Browse the distributions

Choose a layer, weights or inputs, and an epoch. The latent weights sit in a narrow band around
0 (the scale of their initialisation), so a few optimiser steps are enough to flip a sign, and
their share of $+1$ (right panel) stays close to one half. The inputs, BatchNorm outputs, spread
much wider; those beyond the STE's clip at $\pm 1$ pass no gradient (values beyond $\pm 1.5$ are
counted in the end bins).

# %%
sign_distribution_explorer(stats)

# %% [markdown]
## Flip ratio per step

Early in training one or two percent of the binary weights flip at every step; the ratio then
decays as training settles. A binary network has converged when its signs stop flipping, not
when its latent weights stop moving.

# %%
P.flip_ratio_figure(flips.steps, flips.history, every="step",
                    title="share of binary weights that changed sign at each step")

# %% [markdown]
After training, per layer: the share of $+1$ signs, and the share of latent weights so close to
0 ($|W| < 0.01$) that one more step could flip them:

# %%
P.table({f"layer {name}": {"share": st.fraction_positive, "near": st.near_flip}
         for name, st in A.sign_stats(net).items()},
        {"name": "layer", "share": "share of +1", "near": "near a flip (|W| < 0.01)"},
        formats={"share": ".1%", "near": ".1%"})

# %% [markdown]
## Summary

- Only signs matter in the forward pass; the flip ratio measures how much the *binary* network
  still changes.
- Flips are frequent at first and become rare; the learning rate sets how many there are.
- Latent weights live close to 0 (the clip at $\pm 1$ bounds them in long runs): their size says
  little, the flip ratio says how much the binary network still changes.

## Try this

1. Retrain with `lr=3e-2`: how does the flip ratio curve change, and the accuracy?
2. Train with `lr=3e-2` and `weight_clip=None` for 30 epochs: where do the latent weights go?
3. Use `A.FlipRatio(every="epoch")`: why is it not the sum of the per-step ratios?
'''

SOURCES["04_gradient_mismatch"] = r'''
# %% [markdown]
# 04 · How wrong is the fake gradient?

**Question.** How far is the STE's gradient from a gradient that the binary network actually has?

**You will**
- measure, for one function, the L1 distance between each surrogate and the derivative of a noise-smoothed sign;
- compare, layer by layer and during training, the STE gradient with two references: the exact
  gradient of a $\tanh(\beta x)$-relaxed twin and a Monte-Carlo gradient of the smoothed network;
- browse the agreement in the gradient-mismatch explorer.

**Needs:** [01 · Sign and the STE](01_sign_and_ste.ipynb), [03 · Sign distributions](03_sign_distributions.ipynb) · **Next:** [05 · Bit packing and XNOR-popcount](05_bit_packing.ipynb) · [Index](00_index.ipynb)

# %%
FULL_RUN = False  # True: more epochs and Monte-Carlo samples
import torch
from bnnlab import analysis as A, data, models, plots as P, train
from bnnlab.widgets import gradient_mismatch_explorer
torch.manual_seed(0)
if not FULL_RUN:
    torch.set_num_threads(1)  # small models: one thread is the fastest

# %% [markdown]
## One function

If noise $s\varepsilon$ is added before the sign, the expected output
$\bar q_s(x) = \mathbb{E}[\operatorname{sign}(x + s\varepsilon)]$ is smooth, with derivative $2p_{s\varepsilon}(x)$.
The mismatch $\int |\tilde q'(x) - \bar q_s'(x)|\,dx$ says how far a surrogate $\tilde q'$ is from it
(Yin et al. 2019 study this "coarse gradient"). With scale 1:

# %% tags=["nbval-check-output"]
NOISES = ("uniform", "normal", "logistic")
P.table({q: {noise: A.surrogate_mismatch(q, noise, 1.0) for noise in NOISES}
         for q in ("ste_sign", "approx_sign", "swish_sign")},
        {"name": "surrogate", **{n: f"{n} noise" for n in NOISES}},
        formats=dict.fromkeys(NOISES, ".3f"), caption="L1 mismatch, noise scale 1")

# %% [markdown]
The STE is the *exact* gradient for uniform noise; no surrogate fits every noise.

## A whole network

In a network the question becomes: how well does the STE gradient $\partial L / \partial W$ of each
binary layer point in the direction of a trustworthy gradient? `GradientMismatch` measures it on a
fixed probe batch before training and after each epoch, against
- `tanh β=…`: the exact gradient of the network with every sign replaced by $\tanh(\beta x)$;
- `mc σ=…`: an unbiased Monte-Carlo estimate of the gradient of $\mathbb{E}[L(W + \sigma\varepsilon)]$ (noisy).

Three binary MLPs that differ only in the surrogate of their activations:

# %%
ds = data.load_digits(flatten=True)
EPOCHS, MC = (20, 256) if FULL_RUN else (3, 16)
probe, results = (ds.val[0][:128], ds.val[1][:128]), {}
for q in ("ste_sign", "approx_sign", "swish_sign"):
    torch.manual_seed(0)
    net = models.binary_mlp(64, (64, 64, 64), input_quantizer=q)
    results[q] = A.GradientMismatch(*probe, betas=(1, 5), mc_samples=MC, seed=0)
    train.fit(net, ds, epochs=EPOCHS, lr=3e-3, callbacks=[results[q]], progress=False)

# %% [markdown]
## Browse the agreement

Cosine 1 means the STE points exactly along the reference; 0 means it is no better than a random
direction. Choose a layer (or the mean over layers), a reference and a metric.

# %%
gradient_mismatch_explorer(results)

# %% [markdown]
The last measurement, layer by layer, for the last network (cosine with each reference):

# %%
last = results["swish_sign"].results[-1]
layers = list(next(iter(last.values())))
P.table({ref: {layer: v["cosine"] for layer, v in per_layer.items()} for ref, per_layer in last.items()},
        {"name": "reference", **{layer: f"layer {layer}" for layer in layers}},
        formats=dict.fromkeys(layers, ".2f"), caption="cosine(STE gradient, reference)")

# %% [markdown]
## Summary

- A surrogate is the exact gradient of the sign averaged over one particular noise; the
  mismatch measures how far it is from another.
- In a network the STE gradient correlates with, but is not, the gradient of a smooth or
  smoothed twin; the agreement varies by layer and over training.
- Monte-Carlo references are unbiased but noisy: read them with their sample count in mind.

## Try this

1. In [01](01_sign_and_ste.ipynb)'s explorer, find the noise scale for which `approx_sign` has the smallest mismatch.
2. Set `MC = 512` and compare the `mc σ=0.1` curves with `MC = 16`: which part of the gap was noise?
3. Add `betas=(1, 5, 20)`: does a sharper relaxation agree better or worse with the STE?
'''

SOURCES["05_bit_packing"] = r'''
# %% [markdown]
# 05 · Bit packing and XNOR-popcount

**Question.** How do 64 binary values fit in one machine word, and how much faster and smaller does that make a binary layer on an ordinary CPU?

**You will**
- pack signs into `uint64` words and read the bits;
- check that XNOR and popcount compute exactly the products of signs;
- measure packed kernels against torch float32 (speed and memory), then export a trained binary
  network to packed form and check that it computes the same outputs.

**Needs:** [02 · Binarise a trained float model](02_binarize_a_model.ipynb) · **Next:** [06 · Binary architectures compared](06_binary_architectures.ipynb) · [Index](00_index.ipynb)

# %%
FULL_RUN = False  # True: every benchmark case at 1 and 2 threads (a few minutes)
import numpy as np
import torch
from bnnlab import bench, data, functional as BF, kernels, models, packed, plots as P, train
from bnnlab.widgets import bit_packing_explorer
torch.manual_seed(0)
if not FULL_RUN:
    torch.set_num_threads(1)  # small models: one thread is the fastest

# %% [markdown]
## 64 signs in a word

Element $j$ of a row goes to bit $j \bmod 64$ of word $\lfloor j / 64 \rfloor$, least significant
bit first; a bit is 1 when the value is negative ($-1$) and 0 otherwise, so $\operatorname{sign}(0) = +1$
(the layout of larq-compute-engine). Five values fill the low bits of one word:

# %% tags=["nbval-check-output"]
p = kernels.pack_signs(np.array([[0.5, -2.0, 0.0, -1.0, 3.0]], np.float32))
print(p)
print(f"word: {int(p.words[0, 0])} = 0b{int(p.words[0, 0]):05b} (bits 1 and 3 are set: the two negatives)")

# %% [markdown]
A row of $K$ values takes $\lceil K/64 \rceil$ words: 300 float32 values (1,200 bytes) become 5 words (40 bytes).

# %% tags=["nbval-check-output"]
g = torch.Generator().manual_seed(0)
a, b = torch.randn(8, 300, generator=g), torch.randn(16, 300, generator=g)
pa, pb = kernels.pack_signs(a), kernels.pack_signs(b)
P.table([{"matrix": "a (8 × 300)", "float32 bytes": a.numel() * 4, "packed bytes": pa.nbytes},
         {"matrix": "b (16 × 300)", "float32 bytes": b.numel() * 4, "packed bytes": pb.nbytes}])

# %% [markdown]
## See it: signs, bits, words, and a dot product

Each column is one element: its sign, its bit, and (with a second vector $b$) the XOR of the two
bits, red where the signs differ. Move $K$ past 64 and a second word starts; change the share of
equal signs and watch the popcount and the dot product follow. The title compares
$K - 2\,\operatorname{popcount}(a \oplus b)$ with what the packed kernel computed.

# %%
bit_packing_explorer()

# %% [markdown]
## A product of signs is an XNOR, a sum of them a popcount

Two signs agree when their bits are equal, so the dot product of two rows of $\pm 1$ is
$K - 2\,\operatorname{popcount}(a \oplus b)$: one XOR and one popcount per 64 products.
`xnor_matmul` computes all the dot products of two packed matrices; it equals the float product
of the signs exactly:

# %% tags=["nbval-check-output"]
d = kernels.xnor_matmul(pa, pb)
print(f"{d.dtype} result of shape {d.shape}; equal to the float product of the signs: "
      f"{np.array_equal(d, (BF.sign(a) @ BF.sign(b).T).numpy())}")

# %% [markdown]
## How much faster? Measure it

`bench.run` checks each packed result against torch before timing it, then reports medians of
interleaved runs (torch float32 vs bnnlab): a GEMM, a matrix-vector product and the whole small
CNN (`models.binary_cnn`, packed vs its float twin), here at one thread (`FULL_RUN` adds the
convolutions and two threads). The speed-up is torch's time over bnnlab's; the numbers depend on
this machine and its load.

# %%
rows = bench.run(None if FULL_RUN else "gemm1024,gemv1x4096,e2e_cnn",
                 quick=not FULL_RUN, threads=(1, 2) if FULL_RUN else (1,))
timed = [{"case": r["case"], "threads": r["threads"], "torch_us": r["torch"] * 1e6,
          "bnnlab_us": r["bnnlab"] * 1e6, "ratio": r["ratio"], "correct": "yes" if r["correct"] else "NO"}
         for r in rows if r["unit"] == "s" and r["torch"] and r["bnnlab"]]
P.table(timed, {"case": "case", "threads": "threads", "torch_us": "torch float32 (µs)",
                "bnnlab_us": "bnnlab packed (µs)", "ratio": "speed-up (×)", "correct": "same result"},
        formats={"torch_us": ",.1f", "bnnlab_us": ",.1f", "ratio": ".1f"})

# %%
P.bars_figure([f"{r['case']} ({r['threads']} thr)" for r in timed], [r["ratio"] for r in timed],
              title="speed-up of the packed kernels over torch float32 (higher is better)",
              yaxis_title="speed-up (×)", fmt=".1f")

# %% [markdown]
Read the speed-up column. On a CPU with a fast popcount (AVX2, AVX-512) the kernels alone are
typically an order of magnitude faster than float32. The whole CNN gains far less: its float first layer, BatchNorm, pooling and classifier are not binary (Amdahl's law), and
at batch 1 the fixed costs of each call count.

## A trained network, packed

Train a binary MLP on the 8×8 digits, export it (`packed.export` folds each BatchNorm and sign
into one integer threshold per channel, and the BatchNorm after the last binary layer into that
layer's float output) and compare it with the torch model it came from. The integer parts are
exact, so the predictions are identical; the folded BatchNorm rounds once where torch rounds
twice, so the logits agree to float32 rounding:

# %%
ds = data.load_digits(flatten=True)
net = models.binary_mlp(64, (256, 256, 256))
train.fit(net, ds, epochs=20 if FULL_RUN else 3, lr=3e-3, progress=False)
fast = packed.export(net, ds.val[0])
print("\n".join(fast.notes))

# %% tags=["nbval-check-output"]
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

# %% [markdown]
With `fold_float_bn=False` that BatchNorm stays a torch stage and the packed network equals the
torch network bit for bit (BinaryNet layers: the torch layer's output *is* the integer
$K - 2\,\operatorname{popcount}$):

# %% tags=["nbval-check-output"]
exact = packed.export(net, ds.val[0], fold_float_bn=False)
print("bit for bit equal:", torch.equal(exact(x), y_torch))

# %%
one, sizes = x[:1], fast.sizes()
P.table([{"name": "torch (simulated binary)", "latency_us": bench.latency(net, one) * 1e6,
          "file_kib": sizes["float_state_dict_bytes"] / 1024},
         {"name": "packed", "latency_us": bench.latency(fast, one) * 1e6,
          "file_kib": sizes["packed_file_bytes"] / 1024}],
        {"name": "model", "latency_us": "latency per image (µs)", "file_kib": "file size (KiB)"},
        formats={"latency_us": ",.0f", "file_kib": ",.1f"})

# %% [markdown]
## Summary

- 64 signs fit one `uint64`; a dot product of signs is $K - 2\,\operatorname{popcount}(a \oplus b)$, exactly.
- Packed binary kernels beat float32 by a large factor on the binary layers; whole-network gains
  are bounded by the layers that stay float.
- The packed export reproduces the trained torch network's predictions exactly (its logits bit
  for bit with `fold_float_bn=False`, BinaryNet layers) and stores its binary weights in 1/32 of
  the space.

## Try this

1. Pack a vector of 65 values: how many words, and which bits of the second word are used?
2. Run `bench.run("gemm", quick=True, threads=(1, 2))`: does a second thread help on this machine?
3. Export `convert.binarize(..., layer="abc")` of a float MLP: read the error message, and explain it.
'''

SOURCES["06_binary_architectures"] = r'''
# %% [markdown]
# 06 · Binary architectures compared: XNOR-Net, XNOR-Net++, ABC-Net, Bi-Real, ReActNet

**Question.** What does each well-known trick (scales, learned scales, several bases, real shortcuts, learned thresholds) buy in accuracy, and what does it cost in memory and operations?

**You will**
- build the families on the same small data set (8×8 digit images);
- compare their parameters, packed memory and share of binary MACs (exact counts);
- train each briefly and put accuracy next to memory and the cost-model speed-up.

**Needs:** [02 · Binarise a trained float model](02_binarize_a_model.ipynb), [05 · Bit packing](05_bit_packing.ipynb) · **Next:** [07 · The live dashboard](07_live_dashboard.ipynb) · [Index](00_index.ipynb)

# %%
FULL_RUN = False  # True: more epochs
from functools import partial
import torch
from bnnlab import convert, data, models, plots as P, train
from bnnlab.summary import summary
torch.manual_seed(0)
if not FULL_RUN:
    torch.set_num_threads(1)  # small models: one thread is the fastest

# %% [markdown]
## The tricks

| family | forward of a binary layer | paper |
|---|---|---|
| BinaryNet | $y = W_b \star x_b$ | Hubara, Courbariaux et al. 2016 |
| XNOR-Net | $y = (W_b \star x_b) \odot \alpha \odot \beta$, $\alpha_o = \operatorname{mean}\lvert W_o\rvert$, $\beta$ from $\lvert x\rvert$ | Rastegari et al. 2016 |
| XNOR-Net++ | $y = (W_b \star x_b) \odot \Gamma$, $\Gamma$ learned | Bulat & Tzimiropoulos 2019 |
| ABC-Net | $y = \sum_n \beta_n \sum_m \alpha_m (B_m \star A_n)$, $M = N = 3$ bases | Lin et al. 2017 |
| Bi-Real Net | a real shortcut around every binary 3×3 conv, ApproxSign | Liu et al. 2018 |
| ReActNet | learned thresholds (RSign) and RPReLU, all convs binary | Liu et al. 2020 |

The first four are the same small CNN, converted from its float twin by `binarize` (binary
convolutions pad with $+1$); Bi-Real and ReActNet are bnnlab's tiny versions of those networks.

# %%
ds = data.load_digits()
float_cnn = partial(models.binary_cnn, 1, 8, binary=False, channels=(32, 64), activation="hardtanh")
variants = {
    "float": float_cnn,
    "BinaryNet": lambda: models.binary_cnn(1, 8, channels=(32, 64)),
    "XNOR-Net": lambda: convert.binarize(float_cnn(), layer="xnor", pad_value=1.0),
    "XNOR-Net++": lambda: convert.binarize(float_cnn(), layer="xnor++", pad_value=1.0),
    "ABC-Net": lambda: convert.binarize(float_cnn(), layer="abc", pad_value=1.0),
    "Bi-Real": lambda: models.tiny_bireal(1, 10, width=16),
    "ReActNet": lambda: models.tiny_reactnet(1, 10, width=16),
}

# %% [markdown]
## What each one costs (exact counts, no training needed)

# %% tags=["nbval-check-output"]
summaries = {name: summary(make(), ds.input_shape) for name, make in variants.items()}
P.table({name: {"params": s.total_params, "memory_kib": s.memory_bytes / 1024,
                "binary_macs": s.binary_mac_ratio} for name, s in summaries.items()},
        ["name", "params", "memory_kib", "binary_macs"])

# %% [markdown]
## What each one buys (a short training run)

Same seed, data, optimiser and epochs for every variant. With so few epochs the ranking is
noisy: read it as a first look, and use `FULL_RUN = True` for a fairer one.

# %%
EPOCHS, histories = (30 if FULL_RUN else 2), {}
for name, make in variants.items():
    torch.manual_seed(0)
    histories[name] = train.fit(make(), ds, epochs=EPOCHS, lr=3e-3, progress=False)
P.history_figure(histories, "val_acc", title="validation accuracy during training")

# %%
rows = [{"name": n, "accuracy": histories[n].val_acc[-1], "memory_kib": s.memory_bytes / 1024,
         "speedup": s.speedup} for n, s in summaries.items()]
P.comparison_figure(rows, {"accuracy": "validation accuracy", "memory_kib": "memory (KiB)",
                           "speedup": "speed-up (×, cost model)"}, height=400)

# %% [markdown]
## Summary

- Scaling factors (XNOR-Net, XNOR-Net++) cost a few floats per channel; whether they pay off at
  this scale is what the training run shows.
- ABC-Net approximates weights and activations with $M$ and $N$ binary bases: $M \cdot N$ binary
  convolutions per layer, and about twice the memory of BinaryNet here.
- Real shortcuts (Bi-Real) and learned thresholds (ReActNet) keep information flowing past the
  signs; the cost-model speed-up counts only MACs, not the shortcuts or the memory traffic.

## Try this

1. Train with `FULL_RUN = True`: does the ranking change?
2. Give ABC-Net one base (`convert.binarize(..., layer="abc", layer_kwargs={"num_weight_bases": 1, "num_act_bases": 1})`): what is left of its advantage?
3. Compare `models.tiny_bireal(..., binary=False)` with the binary one: how much does binarisation cost there?
'''

SOURCES["07_live_dashboard"] = r'''
# %% [markdown]
# 07 · The live dashboard: accuracy, speed and memory

**Question.** Trained side by side on the same data, how do float and binary variants trade accuracy for speed and memory?

**You will**
- start a dashboard that trains several variants on Fashion-MNIST under three seeds, with curves
  that grow epoch by epoch;
- read accuracy (mean ± sd over the seeds), measured latency and memory as bars and as a table,
  with the inference path each variant ran on and why;
- stop a run, change a variant, and run it again: the same press gives the same numbers.

**Needs:** [05 · Bit packing](05_bit_packing.ipynb), [06 · Binary architectures](06_binary_architectures.ipynb) · **Next:** [08 · Classroom demonstration](08_classroom_demo.ipynb) · [Index](00_index.ipynb)

# %%
FULL_RUN = False  # True: more training images, epochs and seeds (minutes)
import torch

from bnnlab import lessons as L
from bnnlab.summary import summary
from bnnlab.widgets import live_comparison

torch.manual_seed(0)
if not FULL_RUN:
    torch.set_num_threads(1)  # networks this small train fastest on one thread

# %% [markdown]
## Data and variants

Fashion-MNIST (70,000 real 28×28 images of clothing, 10 classes) from Debian's
`dataset-fashion-mnist` package, flattened; 2,000 training and 1,000 validation images unless
`FULL_RUN`. Four MLPs of the same shape 784-128-128-128-10 (`bnnlab.lessons.dashboard_variants`):
the float twin, BinaryNet, and XNOR-Net and XNOR-Net++ converted from the float twin. The first
layer (784 × 128) and the classifier stay float in all of them.

# %%
N_TRAIN, EPOCHS, SEEDS = (20000, 10, (0, 1, 2, 3, 4)) if FULL_RUN else (2000, 3, (0, 1, 2))
ds = L.fashion_subset(0, n_train=N_TRAIN)
variants = L.dashboard_variants(784, (128, 128, 128))

# %%
# NBVAL_CHECK_OUTPUT
L.memory_table({name: summary(make(), ds.input_shape) for name, make in variants.items()})

# %% [markdown]
## The dashboard

Press **Train all**: each variant trains once per seed (the seed sets the initial weights and the
order of the mini-batches), with a progress bar and **Stop**; the curves (mean over the seeds)
grow after every epoch; then validation accuracy (mean ± sd over the seeds), the latency of one
image (median of repeated runs) and memory appear as bars and in the table.

Latency is measured on the fastest path bnnlab has for each model, and the table says which and
why: the packed export ([05](05_bit_packing.ipynb)) where the layers can be packed, else the torch
model itself (the float twin; ABC-Net, which has no packed kernel). BinaryNet and XNOR-Net++ keep
their signs packed from one binary layer to the next; XNOR-Net scales each input by its mean
$|x|$ (β), which needs the real values, so its packed path does float work between the layers.

# %%
dashboard = live_comparison(variants, ds, epochs=EPOCHS, lr=3e-3, batch_size=128, seeds=SEEDS,
                            fit_kw={"schedule": "cosine"})
dashboard

# %% [markdown]
Running top to bottom, the next cell does what the button does (the dashboard above fills in),
and shows the table once more:

# %%
dashboard.run()
dashboard.results_table()

# %% [markdown]
## Summary

- On the same data and budget the float twin is the most accurate on average and the binary
  variants stay within a few points of it (`tests/test_lessons.py` checks five seeds); on any one
  seed the ranking of the binary variants can change, which is why the table shows mean ± sd.
- The binary variants need less memory, but the float first layer and classifier bound the
  saving: here they hold most of what is left.
- Latency is measured, not estimated, on the path the table names. For layers of a hundred units
  one image takes a fraction of a millisecond on any path and fixed per-call costs weigh heavily,
  so these latencies say little about large layers, where the packed kernels' advantage shows
  ([05](05_bit_packing.ipynb)).

## Try this

1. Add `"ABC-Net": lambda: convert.binarize(variants["float"](), layer="abc")` (after
   `from bnnlab import convert`) and rerun: which path does it run on, and why?
2. Make the hidden layers wider, `variants = L.dashboard_variants(784, (128, 1024, 1024))`: which
   numbers move, and by how much?
3. Press Stop during the second variant: what does the table show?
'''

SOURCES["08_classroom_demo"] = r'''
# %% [markdown]
# 08 · A 15-minute classroom demonstration: binary networks on Fashion-MNIST

**Question.** Can a network whose weights and activations are only $\pm 1$ recognise clothing, and what do we gain by it?

**You will** (about two minutes per section)
- look at the data: real 28×28 photos of clothing;
- see the one idea that makes training possible: the straight-through estimator;
- train a float CNN and its binary twin, then compare accuracy, memory and speed.

**Needs:** nothing (it recaps [01](01_sign_and_ste.ipynb)–[07](07_live_dashboard.ipynb)) · **Next:** back to the [Index](00_index.ipynb)

# %%
FULL_RUN = False  # True: 55,000 training images, 5 epochs, a wider CNN (several minutes)
import torch
from bnnlab import data, functional as BF, models, packed, plots as P
from bnnlab.summary import summary
from bnnlab.widgets import classroom_trainer
torch.manual_seed(0)
if not FULL_RUN:
    torch.set_num_threads(1)  # small models: one thread is the fastest

# %% [markdown]
## 1. The data (2 min)

Fashion-MNIST: 70,000 grey images of 10 kinds of clothing (Zalando, 2017), read from Debian's
`dataset-fashion-mnist` package. Harder than handwritten digits, small enough for a laptop.

# %%
N_TRAIN, EPOCHS, WIDTHS = (None, 5, (32, 64, 64)) if FULL_RUN else (1200, 2, (16, 32, 32))
ds = data.load_fashion_mnist(n_train=N_TRAIN, val_size=500, n_test=500)
P.image_grid_figure(ds.train[0][:10], [ds.classes[int(y)] for y in ds.train[1][:10]],
                    title="ten training images and their labels")

# %% [markdown]
## 2. The idea (3 min)

A binary network replaces every weight and every activation of its inner layers by its sign,
$\pm 1$. A product of two signs is an XNOR, a sum of 64 of them one popcount: cheap. But the sign has
no useful derivative, so training uses a fake one, the straight-through estimator: gradient 1
where $|x| \le 1$, else 0.

# %% tags=["nbval-check-output"]
x = torch.tensor([-1.5, -0.2, 0.0, 0.7], requires_grad=True)
BF.ste_sign(x).sum().backward()
P.table([{"x": f"{v:g}", "sign": f"{s:+g}", "STE gradient": f"{g:g}"}
         for v, s, g in zip(x.tolist(), BF.sign(x.detach()).tolist(), x.grad.tolist(), strict=True)])

# %% [markdown]
## 3. Two networks, one architecture (4 min)

The same small CNN twice: float, and binary (first convolution and classifier float, the rest
binary, as in most papers). Same data, same seed, same optimiser. **Train** trains both (the
curves grow epoch by epoch), then shows the test images the binary network gets wrong and a
scoreboard: test accuracy, memory of the weights, measured time per image, and *how* each model
ran — in torch, or packed into 64-bit words and computed with XNOR and popcount.

# %%
trainer = classroom_trainer({"float CNN": lambda: models.binary_cnn(channels=WIDTHS, binary=False),
                             "binary CNN": lambda: models.binary_cnn(channels=WIDTHS)},
                            ds, epochs=EPOCHS)
trainer

# %%
scores = trainer.run()  # what the Train button does

# %% [markdown]
## 4. Memory (3 min)

Every binary weight takes 1 bit instead of 32. Per layer, the binary CNN:

# %%
float_cnn, binary_cnn = trainer.models["float CNN"], trainer.models["binary CNN"]
s_float, s_bin = summary(float_cnn, ds.input_shape), summary(binary_cnn, ds.input_shape)
P.summary_figure(s_bin)

# %% tags=["nbval-check-output"]
P.table([{"name": "float CNN", "memory_kib": s_float.memory_bytes / 1024, "binary_macs": s_float.binary_mac_ratio},
         {"name": "binary CNN", "memory_kib": s_bin.memory_bytes / 1024, "binary_macs": s_bin.binary_mac_ratio}])

# %% [markdown]
## 5. Speed (3 min)

The scoreboard's packed row is the trained binary network exported into 64-bit words (64 weights
per word; products become XNOR and popcount). It makes exactly the same predictions (its scores
agree to float32 rounding):

# %% tags=["nbval-check-output"]
fast = packed.export(binary_cnn, ds.val[0][:100])
y_fast, y_torch = fast(ds.test[0]), binary_cnn.eval()(ds.test[0])
print("same predictions:", torch.equal(y_fast.argmax(1), y_torch.argmax(1)))
print("same scores up to float32 rounding:", torch.allclose(y_fast, y_torch, rtol=1e-5, atol=1e-5))

# %% [markdown]
The packed binary layers are much faster than their float versions ([05](05_bit_packing.ipynb)
measures them); the whole network gains less, because its first layer, BatchNorm, pooling and
classifier stay float. Training in torch only *simulates* the binary network, which is why it is
the slowest row of the scoreboard.

## Summary

- A network with $\pm 1$ weights and activations in its inner layers still learns to recognise clothing,
  a few points below its float twin.
- It needs a fake gradient (the STE) to train, and it needs an order of magnitude less memory.
- Packed into 64-bit words, its binary layers run as XNOR and popcount, much faster than float
  products; in a network this small, the float layers around them set the pace.

## Try this

1. Set `FULL_RUN = True` and rerun: how much of the accuracy gap closes?
2. Show the images the *float* network gets wrong:
   `P.misclassified_figure(ds.test[0], ds.test[1], float_cnn(ds.test[0]).argmax(1), ds.classes)`.
   Are they the same kinds of clothing?
3. Open [07 · The live dashboard](07_live_dashboard.ipynb) and add the float twin of a wider CNN.
'''

SOURCES["09_deploy_to_c"] = r'''
# %% [markdown]
# 09 · Deploy a binary network as plain C

**Question.** Can a trained binary network leave Python and run, with the same predictions, on a laptop, a 32-bit ARM board and a microcontroller?

**You will**
- train the small binary CNN of [08](08_classroom_demo.ipynb), pack it, and write it as one C99 file
  with no dynamic allocation and no dependency beyond `<stdint.h>` and `<string.h>`;
- compile it with strict warnings, run it from the notebook and compare its predictions with the
  packed model's;
- compare its flash and RAM with the same network in float32, and build it for a Cortex-M.

**Needs:** [05 · Bit packing](05_bit_packing.ipynb), [08 · Classroom demonstration](08_classroom_demo.ipynb) · **Next:** back to the [Index](00_index.ipynb)

# %%
FULL_RUN = False  # True: more images and epochs, the reference widths (a few minutes)
import shutil
import tempfile
import numpy as np
import plotly.graph_objects as go
import torch
from bnnlab import bench, data, models, packed, plots as P, train
from bnnlab.packed import c_export as packed_c
torch.manual_seed(0)
if not FULL_RUN:
    torch.set_num_threads(1)  # small runs: one thread is fastest (CI shares two cores)

# %% [markdown]
## Train and pack

A short training run of the small binary CNN on Fashion-MNIST, then `packed.export`: every binary
layer becomes packed words, each BatchNorm + sign one integer threshold per channel.

# %%
N_TRAIN, EPOCHS, WIDTHS = (None, 3, (16, 64, 64)) if FULL_RUN else (2000, 1, (8, 32, 32))
ds = data.load_fashion_mnist(n_train=N_TRAIN, val_size=1000, n_test=1000 if FULL_RUN else 500)
net = models.binary_cnn(channels=WIDTHS, hidden=64)
train.fit(net, ds, epochs=EPOCHS, lr=3e-3, progress=False)
pk = packed.export(net.eval(), ds.val[0][:64])
pk.notes

# %% [markdown]
## Write it as C

`packed_c.to_c` writes `bnn_model.h` and `bnn_model.c`. The header is the whole interface: an
input size, an output size, the size of the static scratch arena, and two functions.

# %%
out = tempfile.mkdtemp(prefix="bnn_c_")
res = packed_c.to_c(pk, out, input_shape=(1, 28, 28))
print(res.header.read_text())

# %% [markdown]
The weights are `static const` 32-bit words (bit 1 means −1); a fused BatchNorm + sign is an
integer comparison of the popcount:

# %%
src = res.source.read_text()
print(src[src.index("/* ---------------------------------------------------------------- parameters"):][:600])

# %% [markdown]
## Compile it, run it, compare

`run_host` compiles the generated example with `gcc -std=c99 -O2 -Wall -Wextra -Werror -pedantic`,
feeds it the test images and reads back its predictions and logits:

# %%
# NBVAL_CHECK_OUTPUT
x = ds.test[0]
pred_c, logits_c = packed_c.run_host(res, x.numpy())
logits_py = pk(x).numpy()
{"images": len(x), "same predictions": bool((pred_c == logits_py.argmax(1)).all()),
 "max |logit C - logit packed| < 1e-4": bool(np.abs(logits_c - logits_py).max() < 1e-4),
 "accuracy": round(float((pred_c == ds.test[1].numpy()).mean()), 2) > 0.5}

# %% [markdown]
## Flash and RAM: binary C against float32 C

Flash holds the weights, the other parameters (thresholds, the float first and last layers) and
the code; RAM the scratch arena and the stack. The float32 column is the same network with every
weight a float and every activation a float buffer.

# %%
m = res.memory
rows = [{"model": "binary C", "flash (bytes)": m["flash_bytes"], "RAM (bytes)": m["ram_bytes"]},
        {"model": "float32 C", "flash (bytes)": m["float32_flash_bytes"],
         "RAM (bytes)": m["float32_ram_bytes"]}]
if shutil.which("arm-none-eabi-gcc"):
    size = packed_c.cortex_m_size(res)
    rows.append({"model": "binary C, Cortex-M4 build (arm-none-eabi-size)",
                 "flash (bytes)": size["flash"], "RAM (bytes)": size["ram"]})
else:
    print("arm-none-eabi-gcc not installed (apt: gcc-arm-none-eabi): no Cortex-M4 build")
P.table_figure(rows, fmt="d")

# %%
fig = go.Figure([go.Bar(name=r["model"], x=["flash", "RAM"], y=[r["flash (bytes)"], r["RAM (bytes)"]])
                 for r in rows])
fig.update_layout(barmode="group", height=380, title="Memory of the exported CNN",
                  yaxis_title="bytes (log scale)", yaxis_type="log",
                  legend=dict(orientation="h", y=-0.15))

# %% [markdown]
Flash shrinks by about the factor of the binary weights (32 bits become 1). RAM shrinks too: the
float first convolution binarises each output as it computes it, so its float feature map is never
stored, and every later activation is packed bits.

## A 32-bit ARM board and a microcontroller, emulated

With the cross compilers installed (`make test` installs them), the same C file runs under
`qemu-arm` as a 32-bit ARM Linux program, and on qemu's Cortex-M3 board `mps2-an385` with the
test images embedded in the program:

# %%
if shutil.which("arm-linux-gnueabihf-gcc") and shutil.which("qemu-arm"):
    p_arm, _ = packed_c.run_host(res, x[:20].numpy(), cc="arm-linux-gnueabihf-gcc",
                                 extra=("-static",), emulator=("qemu-arm",))
    print("32-bit ARM Linux (qemu-arm): same predictions:", bool((p_arm == pred_c[:20]).all()))
else:
    print("arm-linux-gnueabihf-gcc / qemu-arm not installed (apt: gcc-arm-linux-gnueabihf qemu-user)")
if shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm"):
    p_mcu, _ = packed_c.run_mps2(res, x[:5].numpy())
    print("Cortex-M3 mps2-an385 (qemu-system-arm): same predictions:", bool((p_mcu == pred_c[:5]).all()))
else:
    print("arm-none-eabi-gcc / qemu-system-arm not installed (apt: gcc-arm-none-eabi "
          "libnewlib-arm-none-eabi qemu-system-arm)")

# %% [markdown]
## How fast is it?

One image at a time, on this CPU: the plain C (no SIMD, no threads) against the packed model in
Python, which calls vectorised kernels but pays Python's overhead for every stage.

# %%
{"C, one call (ms)": round(packed_c.host_latency(res, x[:20].numpy(), repeats=100) * 1e3, 3),
 "PackedModel, one image (ms)": round(bench.latency(pk, x[:1]) * 1e3, 3)}

# %% [markdown]
## Summary

- The exported C computes the packed model's predictions exactly; its logits agree to float
  rounding (its float first and last layers sum in a different order than torch).
- It needs no allocator and no library: the same file builds for a laptop, a 32-bit ARM board
  and a Cortex-M microcontroller.
- Flash and RAM shrink by an order of magnitude: binary weights are bits, and no float feature map
  is stored between the first layer and the classifier.

## Try this

1. Export with `word_bits=64` and compare the Cortex-M4 `flash` figure: why does it barely change?
2. Add `nn.Tanh()` before the last layer of a model and export it: read the refusal.
3. Which stage owns the arena? Print `res.memory` for `WIDTHS = (4, 32, 32)` and compare.
'''


# =============================================================================================
# Building
# =============================================================================================
_CELL_RE = re.compile(r"^# %%(?: \[(markdown)\])?(?: tags=(\[[^\]]*\]))?\s*$")


def parse_cells(source: str) -> list[tuple[str, str, list[str]]]:
    """``[(kind, text, tags)]`` of a percent-format source (kind ``"markdown"``/``"code"``)."""
    cells: list[tuple[str, list[str], list[str]]] = []
    for line in source.strip("\n").splitlines():
        m = _CELL_RE.match(line)
        if m:
            tags = json.loads(m.group(2)) if m.group(2) else []
            cells.append(("markdown" if m.group(1) else "code", [], list(tags)))
        elif cells:
            cells[-1][1].append(line)
        elif line.strip():
            raise ValueError(f"text before the first '# %%' marker: {line!r}")
    out = []
    for kind, lines, tags in cells:
        text = "\n".join(lines).strip("\n")
        if kind == "code" and text.splitlines() and text.splitlines()[0].strip() == CHECK_MARKER:
            text = "\n".join(text.splitlines()[1:]).strip("\n")
            tags = [*tags, CHECK_TAG] if CHECK_TAG not in tags else tags
        out.append((kind, text, tags))
    return out


def parse(source: str) -> list[tuple[str, str]]:
    """``[(kind, text)]`` of a percent-format source; kind is ``"markdown"`` or ``"code"``."""
    return [(kind, text) for kind, text, _ in parse_cells(source)]


def slide_type(kind: str, text: str, index: int) -> str:
    """RISE slide type: a heading (or the first cell) opens a slide; the rest are fragments."""
    if index == 0 or (kind == "markdown" and text.lstrip().startswith("#")):
        return "slide"
    return "fragment"


def build(name: str, source: str) -> nbformat.NotebookNode:
    """A fresh notebook (no outputs) from a source."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": dict(KERNELSPEC),
                   "language_info": {"name": "python", "pygments_lexer": "ipython3"}}
    for i, (kind, text, tags) in enumerate(parse_cells(source)):
        cell = (nbformat.v4.new_markdown_cell(text) if kind == "markdown"
                else nbformat.v4.new_code_cell(text))
        if tags:
            cell.metadata["tags"] = tags
        cell.metadata["slideshow"] = {"slide_type": slide_type(kind, text, i)}
        nb.cells.append(cell)
    for i, cell in enumerate(nb.cells):  # stable ids: clean diffs
        cell.id = f"{name[:2]}-{i:02d}"
    return nb


def title_and_question(source: str) -> tuple[str, str]:
    """The ``# NN · Title`` line and the question of a notebook's first cell."""
    first = parse(source)[0][1]
    title = first.splitlines()[0].lstrip("# ").strip()
    q = re.search(r"\*\*Question\.\*\*\s*(.+)", first)
    return title, (q.group(1).strip() if q else "")


def index_source() -> str:
    """Source of ``00_index.ipynb``: the list of notebooks, from their first cells."""
    items = []
    for name in sorted(SOURCES):
        title, question = title_and_question(SOURCES[name])
        items.append(f"- [{title}]({name}.ipynb): {question}")
    listing = "\n".join(items)
    return f"""
# %% [markdown]
# 00 · bnnlab notebooks

A laboratory for binary neural networks: each notebook asks one question and answers it with a
few calls to `bnnlab`. They run top to bottom in under 30 seconds on a laptop CPU (small subsets;
set `FULL_RUN = True` at the top of a notebook for the full run).

{listing}

Start with [01](01_sign_and_ste.ipynb); for a class, [08](08_classroom_demo.ipynb) tells the whole story
in 15 minutes.

**How to run them.** `make lab` starts JupyterLab on this folder; choose *Run → Run All Cells*.
Every notebook is seeded (`torch.manual_seed(0)`), so a rerun gives the same curves on the same
machine.

**For a class.** `make demo` serves [08](08_classroom_demo.ipynb) with Voilà: widgets and
figures only, no code. Every notebook also carries slide metadata: with the RISE extension
(`pip install jupyterlab-rise`), *View → Render as slides* presents it cell by cell.
"""


def all_sources() -> dict[str, str]:
    """Every notebook's source, the index included."""
    return {"00_index": index_source(), **SOURCES}


def strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Remove outputs (except ``keep_output`` cells), counts, execution metadata, widget state."""
    nb.metadata.pop("widgets", None)
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}  # no versions
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        if CHECK_TAG not in cell.metadata.get("tags", []):
            cell.outputs, cell.execution_count = [], None
        for out in cell.outputs:
            out.get("metadata", {}).pop("application/vnd.jupyter.widget-view+json", None)
    return nb


def write(nb: nbformat.NotebookNode, path: Path) -> None:
    nbformat.validate(nb)
    path.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")


def _cell_seconds(nb: nbformat.NotebookNode) -> float:
    """Kernel time from the first cell's start to the last reply (nbclient's timing metadata)."""
    stamps = []
    for cell in nb.cells:
        ex = cell.metadata.get("execution", {})
        for key in ("iopub.execute_input", "shell.execute_reply"):
            if key in ex:
                stamps.append(datetime.fromisoformat(ex[key].replace("Z", "+00:00")))
    return (max(stamps) - min(stamps)).total_seconds() if stamps else float("nan")


def execute(path: Path) -> tuple[float, float, float]:
    """Execute a notebook in place with nbconvert; ``(wall seconds, kernel seconds, CPU
    seconds)``. The CPU time (user + system of nbconvert and its kernel) does not grow when
    other jobs share the machine; wall times do."""
    cmd = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
           "--inplace", "--ExecutePreprocessor.store_widget_state=False",
           "--ExecutePreprocessor.timeout=600", "--ExecutePreprocessor.kernel_name=python3",
           str(path)]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=path.parent)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return wall, _cell_seconds(nbformat.read(path, as_version=4)), cpu


def _select(names: list[str]) -> dict[str, str]:
    sources = all_sources()
    if not names:
        return sources
    chosen = {"00_index": sources["00_index"]}  # titles may have changed: always rebuild it
    for n in names:
        hits = [k for k in sources if k == n or k.startswith(n)]
        if not hits:
            raise SystemExit(f"no notebook matches {n!r}; have {sorted(sources)}")
        chosen.update({k: sources[k] for k in hits})
    return chosen


def check() -> int:
    """0 if every notebook exists, matches its source and is stripped; else 1 (and says why)."""
    problems = []
    for name, source in all_sources().items():
        path = NB_DIR / f"{name}.ipynb"
        if not path.exists():
            problems.append(f"{path.name}: missing")
            continue
        nb = nbformat.read(path, as_version=4)
        want = build(name, source)
        if [(c.cell_type, c.source) for c in nb.cells] != [(c.cell_type, c.source) for c in want.cells]:
            problems.append(f"{path.name}: cells differ from tools/notebooks.py (run it)")
        if json.dumps(strip(copy.deepcopy(nb)), sort_keys=True) != json.dumps(nb, sort_keys=True):
            problems.append(f"{path.name}: not stripped (outputs or widget state)")
        if [(c.metadata.get("tags"), c.metadata.get("slideshow")) for c in nb.cells] != [
                (c.metadata.get("tags"), c.metadata.get("slideshow")) for c in want.cells]:
            problems.append(f"{path.name}: cell tags or slide metadata differ (run it)")
        if any(CHECK_TAG in c.metadata.get("tags", []) and not c.outputs for c in nb.cells):
            problems.append(f"{path.name}: a {CHECK_TAG} cell has no stored output (run it)")
    extra = {p.stem for p in NB_DIR.glob("*.ipynb")} - set(all_sources())
    problems += [f"{n}.ipynb: no source in tools/notebooks.py" for n in sorted(extra)]
    print("\n".join(problems) or "notebooks in sync")
    return 1 if problems else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", nargs="?", default="run", choices=["run", "build", "strip", "check"])
    ap.add_argument("names", nargs="*", help="notebooks (number or name prefix); default: all")
    args = ap.parse_args(argv)
    if args.command == "check":
        return check()
    if args.command == "strip":
        for path in sorted(NB_DIR.glob("*.ipynb")):
            write(strip(nbformat.read(path, as_version=4)), path)
        return 0
    NB_DIR.mkdir(exist_ok=True)
    times = {}
    for name, source in _select(args.names).items():
        path = NB_DIR / f"{name}.ipynb"
        write(build(name, source), path)
        if args.command == "run":
            times[name] = execute(path)
            write(strip(nbformat.read(path, as_version=4)), path)
            print(f"{name}: {times[name][0]:.1f} s wall, {times[name][1]:.1f} s in the kernel, "
                  f"{times[name][2]:.1f} s CPU", flush=True)
    slow = [n for n, (_, k, _) in times.items() if k > BUDGET_S]
    if times:
        print(f"{len(times)} notebooks; over the {BUDGET_S:.0f} s budget: {', '.join(slow) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
