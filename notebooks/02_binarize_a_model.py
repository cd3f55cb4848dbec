# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# # 02 · Binarise a trained float model
#
# **Question.** What changes (memory, operations, accuracy) when the layers of a trained float network become binary?
#
# **You will**
# - convert a float MLP with `binarize_with_report` and read what was replaced and why;
# - count bits, memory and multiply-accumulates (MACs) with `summary`;
# - measure the accuracy before and after a short fine-tune;
# - pick the layers to binarise in an explorer and fine-tune.
#
# **Needs:** [01 · Sign and the STE](01_sign_and_ste.ipynb) · **Next:** [03 · Sign distributions and flip ratio](03_sign_distributions.ipynb) · [Index](00_index.ipynb)

# %% slideshow={"slide_type": "fragment"}
FULL_RUN = False  # True: more training images and epochs
import copy

import torch

from bnnlab import convert
from bnnlab import functional as BF
from bnnlab import lessons as L
from bnnlab.summary import summary
from bnnlab.widgets import binarize_explorer, load_or_offer_download

torch.manual_seed(0)
if not FULL_RUN:
    torch.set_num_threads(1)  # networks this small train fastest on one thread

# %% [markdown] slideshow={"slide_type": "slide"}
# ## A float network to start from
#
# Fashion-MNIST (real 28×28 photos of clothing, 10 classes, from Debian's `dataset-fashion-mnist`
# package; where it is missing, the cell that loads it says how to install it or offers to
# download it), flattened to 784 inputs: 3,000 training and 1,000 validation images. The float twin of bnnlab's reference MLP (784-256-256-10)
# uses `hardtanh` where the binary network will take signs. Why not ReLU? Because
# $\operatorname{sign}(\operatorname{ReLU}(x))$ is always $+1$:

# %% slideshow={"slide_type": "fragment"} tags=["nbval-check-output"]
x = torch.tensor([-2.0, -0.5, 0.0, 0.5])
L.Table([{"x": v, "sign(ReLU(x))": a, "sign(hardtanh(x))": b} for v, a, b in
         zip(x.tolist(), BF.sign(torch.relu(x)).tolist(), BF.sign(torch.nn.functional.hardtanh(x)).tolist(), strict=True)],
        formats={"x": "+.1f", "sign(ReLU(x))": "+.0f", "sign(hardtanh(x))": "+.0f"})

# %% [markdown] slideshow={"slide_type": "fragment"}
# The whole experiment of this notebook is one function, `bnnlab.lessons.binarize_and_finetune`
# (the test suite runs it under five seeds): train the float MLP (Adam, 5 epochs, cosine decay),
# binarise a copy with `convert.binarize_with_report`, measure it, fine-tune it (3 epochs at a
# ten times smaller learning rate), measure again. We run it once and look at each part.

# %% slideshow={"slide_type": "fragment"}
ds = load_or_offer_download(L.fashion_subset, 0, n_train=20000 if FULL_RUN else 3000)
run = L.binarize_and_finetune(seed=0, data=ds, epochs=10 if FULL_RUN else 5)
float_net, bin_net = run.float_model, run.binary_model

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Binarise it
#
# `binarize_with_report` returns a binarised *copy* and a report. By default the first layer (it
# sees the real pixels) and the last one (it produces the logits) stay float, as in most BNN papers:

# %% slideshow={"slide_type": "fragment"} tags=["nbval-check-output"]
_, report = convert.binarize_with_report(float_net)
L.report_table(report)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## What did we gain?
#
# `summary` counts, per layer, the weights by bit width, the memory with 1 bit per binary weight
# (32 bits per other parameter), and MACs split into 1-bit and 32-bit ones:

# %% slideshow={"slide_type": "fragment"}
L.summary_table(summary(bin_net, ds.input_shape))

# %% slideshow={"slide_type": "fragment"} tags=["nbval-check-output"]
L.memory_table({"float": summary(float_net, ds.input_shape), "binarised": summary(bin_net, ds.input_shape)})

# %% [markdown] slideshow={"slide_type": "fragment"}
# The binarised middle layer shrank 32×, but the whole network only by the factor above: the float
# first layer (784 × 256 weights) holds almost all of what is left.
#
# ## And what did it cost?
#
# The copy computes a different function (signs instead of values in the middle layer). Its
# validation accuracy straight after the conversion, and after the short fine-tune:

# %% slideshow={"slide_type": "fragment"}
run.table()

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Choose the layers yourself
#
# Tick the layers to binarise and pick a family (BinaryNet `binary`, XNOR-Net `xnor`, XNOR-Net++
# `xnor++`, ABC-Net `abc`): the memory and MAC bars update at once. **Fine-tune** starts from the
# float weights, trains as above and adds a bar to the accuracy chart (Stop interrupts it).

# %% slideshow={"slide_type": "fragment"}
explorer = binarize_explorer(lambda: copy.deepcopy(float_net), ds, epochs=3, lr=3e-4,
                             fit_kw={"schedule": "cosine", "seed": 0})
explorer

# %% slideshow={"slide_type": "fragment"}
explorer.run()  # what the Fine-tune button does, for a top-to-bottom run
L.Table(explorer.results, {"name": "configuration", "accuracy": "validation accuracy (%)", "memory_kib": "memory (KiB)"},
        {"accuracy": lambda v: f"{100 * v:.1f}", "memory_kib": ".1f"})

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Summary
#
# - `binarize` replaces `nn.Linear`/`nn.Conv*d` layers by binary ones, copying the latent weights;
#   the report says which layers changed and why the others did not.
# - Memory shrinks 32× per binarised layer; the float first and last layers and the BatchNorm
#   parameters soon dominate what is left.
# - A binarised copy computes a different function: it loses accuracy straight after the
#   conversion, and a short fine-tune at a small learning rate wins most of it back (tested over
#   five seeds). That holds for a float network trained with `hardtanh`; one trained with ReLU
#   feeds its binary layer a constant $+1$ and falls to chance.
#
# ## Try this
#
# 1. In the explorer, binarise the first layer too: the pixels lie in $[0, 1]$, so what is their
#    sign, and what happens to accuracy?
# 2. Run `L.binarize_and_finetune(activation="relu")`: read the warning, compare `.converted_acc`
#    and `.finetuned_acc` with the hardtanh run, and explain them.
# 3. Run `L.binarize_and_finetune(finetune_lr=3e-3)`: why does a large fine-tuning step hurt at first?
# 4. Compare the families at equal memory: which one is worth its extra scales?
