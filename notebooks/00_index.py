# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# # 00 · bnnlab notebooks
#
# A laboratory for binary neural networks: each notebook asks one question and answers it with a
# few calls to `bnnlab`. They run top to bottom in under 30 seconds on a laptop CPU (small subsets;
# set `FULL_RUN = True` at the top of a notebook for the full run).
#
# - [01 · Sign, and why it needs a fake gradient](01_sign_and_ste.ipynb): How can a network learn through $\operatorname{sign}(x)$, whose derivative is 0 almost everywhere?
# - [02 · Binarise a trained float model](02_binarize_a_model.ipynb): What changes (memory, operations, accuracy) when the layers of a trained float network become binary?
# - [03 · Sign distributions and flip ratio](03_sign_distributions.ipynb): While a binary network trains, do its binary weights still change sign, and where do the latent weights sit?
# - [04 · How wrong is the fake gradient?](04_gradient_mismatch.ipynb): How far is the STE's gradient from a gradient that the binary network actually has?
# - [05 · Bit packing and XNOR-popcount](05_bit_packing.ipynb): How do 64 binary values fit in one machine word, and how much faster and smaller does that make a binary layer on an ordinary CPU?
# - [06 · Binary architectures compared: XNOR-Net, XNOR-Net++, ABC-Net, Bi-Real, ReActNet](06_binary_architectures.ipynb): What does each well-known trick (scales, learned scales, several bases, real shortcuts, learned thresholds) buy in accuracy, and what does it cost in memory and operations?
# - [07 · The live dashboard: accuracy, speed and memory](07_live_dashboard.ipynb): Trained side by side on the same data, how do float and binary variants trade accuracy for speed and memory?
# - [08 · A 15-minute classroom demonstration: binary networks on Fashion-MNIST](08_classroom_demo.ipynb): Can a network whose weights and activations are only $\pm 1$ recognise clothing, and what do we gain by it?
# - [09 · Deploy a binary network as plain C](09_deploy_to_c.ipynb): Can a trained binary network leave Python and run, with the same predictions, on a laptop, a 32-bit ARM board and a microcontroller?
#
# Start with [01](01_sign_and_ste.ipynb); for a class, [08](08_classroom_demo.ipynb) tells the whole story
# in 15 minutes.
#
# **How to run them.** `make lab` starts JupyterLab on this folder; choose *Run → Run All Cells*.
# Every notebook is seeded (`torch.manual_seed(0)`), so a rerun gives the same curves on the same
# machine.
#
# **For a class.** `make demo` serves [08](08_classroom_demo.ipynb) with Voilà: widgets and
# figures only, no code. Every notebook also carries slide metadata: with the RISE extension
# (`pip install jupyterlab-rise`), *View → Render as slides* presents it cell by cell.
