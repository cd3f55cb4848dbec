# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# # 06 · Binary architectures compared: XNOR-Net, XNOR-Net++, ABC-Net, Bi-Real, ReActNet
#
# **Question.** What does each well-known trick (scales, learned scales, several bases, real shortcuts, learned thresholds) buy in accuracy, and what does it cost in memory and operations?
#
# **You will**
# - build the families on the same small data set (8×8 digit images);
# - compare their parameters, packed memory and share of binary MACs (exact counts);
# - train each briefly and put accuracy next to memory and the cost-model speed-up.
#
# **Needs:** [02 · Binarise a trained float model](02_binarize_a_model.ipynb), [05 · Bit packing](05_bit_packing.ipynb) · **Next:** [07 · The live dashboard](07_live_dashboard.ipynb) · [Index](00_index.ipynb)

# %% slideshow={"slide_type": "fragment"}
FULL_RUN = False  # True: more epochs
from functools import partial
import torch
from bnnlab import convert, data, models, plots as P, train
from bnnlab.summary import summary
torch.manual_seed(0)
if not FULL_RUN:
    torch.set_num_threads(1)  # small models: one thread is the fastest

# %% [markdown] slideshow={"slide_type": "slide"}
# ## The tricks
#
# | family | forward of a binary layer | paper |
# |---|---|---|
# | BinaryNet | $y = W_b \star x_b$ | Hubara, Courbariaux et al. 2016 |
# | XNOR-Net | $y = (W_b \star x_b) \odot \alpha \odot \beta$, $\alpha_o = \operatorname{mean}\lvert W_o\rvert$, $\beta$ from $\lvert x\rvert$ | Rastegari et al. 2016 |
# | XNOR-Net++ | $y = (W_b \star x_b) \odot \Gamma$, $\Gamma$ learned | Bulat & Tzimiropoulos 2019 |
# | ABC-Net | $y = \sum_n \beta_n \sum_m \alpha_m (B_m \star A_n)$, $M = N = 3$ bases | Lin et al. 2017 |
# | Bi-Real Net | a real shortcut around every binary 3×3 conv, ApproxSign | Liu et al. 2018 |
# | ReActNet | learned thresholds (RSign) and RPReLU, all convs binary | Liu et al. 2020 |
#
# The first four are the same small CNN, converted from its float twin by `binarize` (binary
# convolutions pad with $+1$); Bi-Real and ReActNet are bnnlab's tiny versions of those networks.

# %% slideshow={"slide_type": "fragment"}
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

# %% [markdown] slideshow={"slide_type": "slide"}
# ## What each one costs (exact counts, no training needed)

# %% slideshow={"slide_type": "fragment"} tags=["nbval-check-output"]
summaries = {name: summary(make(), ds.input_shape) for name, make in variants.items()}
P.table({name: {"params": s.total_params, "memory_kib": s.memory_bytes / 1024,
                "binary_macs": s.binary_mac_ratio} for name, s in summaries.items()},
        ["name", "params", "memory_kib", "binary_macs"])

# %% [markdown] slideshow={"slide_type": "slide"}
# ## What each one buys (a short training run)
#
# Same seed, data, optimiser and epochs for every variant. With so few epochs the ranking is
# noisy: read it as a first look, and use `FULL_RUN = True` for a fairer one.

# %% slideshow={"slide_type": "fragment"}
EPOCHS, histories = (30 if FULL_RUN else 2), {}
for name, make in variants.items():
    torch.manual_seed(0)
    histories[name] = train.fit(make(), ds, epochs=EPOCHS, lr=3e-3, progress=False)
P.history_figure(histories, "val_acc", title="validation accuracy during training")

# %% slideshow={"slide_type": "fragment"}
rows = [{"name": n, "accuracy": histories[n].val_acc[-1], "memory_kib": s.memory_bytes / 1024,
         "speedup": s.speedup} for n, s in summaries.items()]
P.comparison_figure(rows, {"accuracy": "validation accuracy", "memory_kib": "memory (KiB)",
                           "speedup": "speed-up (×, cost model)"}, height=400)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Summary
#
# - Scaling factors (XNOR-Net, XNOR-Net++) cost a few floats per channel; whether they pay off at
#   this scale is what the training run shows.
# - ABC-Net approximates weights and activations with $M$ and $N$ binary bases: $M \cdot N$ binary
#   convolutions per layer, and about twice the memory of BinaryNet here.
# - Real shortcuts (Bi-Real) and learned thresholds (ReActNet) keep information flowing past the
#   signs; the cost-model speed-up counts only MACs, not the shortcuts or the memory traffic.
#
# ## Try this
#
# 1. Train with `FULL_RUN = True`: does the ranking change?
# 2. Give ABC-Net one base (`convert.binarize(..., layer="abc", layer_kwargs={"num_weight_bases": 1, "num_act_bases": 1})`): what is left of its advantage?
# 3. Compare `models.tiny_bireal(..., binary=False)` with the binary one: how much does binarisation cost there?
