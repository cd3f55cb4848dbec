# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# # 07 · The live dashboard: accuracy, speed and memory
#
# **Question.** Trained side by side on the same data, how do float and binary variants trade accuracy for speed and memory?
#
# **You will**
# - start a dashboard that trains several variants on Fashion-MNIST under three seeds, with curves
#   that grow epoch by epoch;
# - read accuracy (mean ± sd over the seeds), measured latency and memory as bars and as a table,
#   with the inference path each variant ran on and why;
# - stop a run, change a variant, and run it again: the same press gives the same numbers.
#
# **Needs:** [05 · Bit packing](05_bit_packing.ipynb), [06 · Binary architectures](06_binary_architectures.ipynb) · **Next:** [08 · Classroom demonstration](08_classroom_demo.ipynb) · [Index](00_index.ipynb)

# %% slideshow={"slide_type": "fragment"}
FULL_RUN = False  # True: more training images, epochs and seeds (minutes)
import torch

from bnnlab import lessons as L
from bnnlab.summary import summary
from bnnlab.widgets import live_comparison, load_or_offer_download

torch.manual_seed(0)
if not FULL_RUN:
    torch.set_num_threads(1)  # networks this small train fastest on one thread

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Data and variants
#
# Fashion-MNIST (70,000 real 28×28 images of clothing, 10 classes) from Debian's
# `dataset-fashion-mnist` package (where it is missing, the next cell says how to install it or
# offers to download it), flattened; 2,000 training and 1,000 validation images unless
# `FULL_RUN`. Four MLPs of the same shape 784-128-128-128-10 (`bnnlab.lessons.dashboard_variants`):
# the float twin, BinaryNet, and XNOR-Net and XNOR-Net++ converted from the float twin. The first
# layer (784 × 128) and the classifier stay float in all of them.

# %% slideshow={"slide_type": "fragment"}
N_TRAIN, EPOCHS, SEEDS = (20000, 10, (0, 1, 2, 3, 4)) if FULL_RUN else (2000, 3, (0, 1, 2))
ds = load_or_offer_download(L.fashion_subset, 0, n_train=N_TRAIN)
variants = L.dashboard_variants(784, (128, 128, 128))

# %% slideshow={"slide_type": "fragment"} tags=["nbval-check-output"]
L.memory_table({name: summary(make(), ds.input_shape) for name, make in variants.items()})

# %% [markdown] slideshow={"slide_type": "slide"}
# ## The dashboard
#
# Press **Train all**: each variant trains once per seed (the seed sets the initial weights and the
# order of the mini-batches), with a progress bar and **Stop**; the curves (mean over the seeds)
# grow after every epoch; then validation accuracy (mean ± sd over the seeds), the latency of one
# image (median of repeated runs) and memory appear as bars and in the table.
#
# Latency is measured on the fastest path bnnlab has for each model, and the table says which and
# why: the packed export ([05](05_bit_packing.ipynb)) where the layers can be packed, else the torch
# model itself (the float twin; ABC-Net, which has no packed kernel). BinaryNet and XNOR-Net++ keep
# their signs packed from one binary layer to the next; XNOR-Net scales each input by its mean
# $|x|$ (β), which needs the real values, so its packed path does float work between the layers.

# %% slideshow={"slide_type": "fragment"}
dashboard = live_comparison(variants, ds, epochs=EPOCHS, lr=3e-3, batch_size=128, seeds=SEEDS,
                            fit_kw={"schedule": "cosine"})
dashboard

# %% [markdown] slideshow={"slide_type": "fragment"}
# Running top to bottom, the next cell does what the button does (the dashboard above fills in),
# and shows the table once more:

# %% slideshow={"slide_type": "fragment"}
dashboard.run()
dashboard.results_table()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Summary
#
# - On the same data and budget the float twin is the most accurate on average and the binary
#   variants stay within a few points of it (`tests/test_lessons.py` checks five seeds); on any one
#   seed the ranking of the binary variants can change, which is why the table shows mean ± sd.
# - The binary variants need less memory, but the float first layer and classifier bound the
#   saving: here they hold most of what is left.
# - Latency is measured, not estimated, on the path the table names. For layers of a hundred units
#   one image takes a fraction of a millisecond on any path and fixed per-call costs weigh heavily,
#   so these latencies say little about large layers, where the packed kernels' advantage shows
#   ([05](05_bit_packing.ipynb)).
#
# ## Try this
#
# 1. Add `"ABC-Net": lambda: convert.binarize(variants["float"](), layer="abc")` (after
#    `from bnnlab import convert`) and rerun: which path does it run on, and why?
# 2. Make the hidden layers wider, `variants = L.dashboard_variants(784, (128, 1024, 1024))`: which
#    numbers move, and by how much?
# 3. Press Stop during the second variant: what does the table show?
