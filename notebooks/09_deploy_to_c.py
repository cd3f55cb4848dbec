# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# # 09 · Deploy a binary network as plain C
#
# **Question.** Can a trained binary network leave Python and run, with the same predictions, on a laptop, a 32-bit ARM board and a microcontroller?
#
# **You will**
# - train the small binary CNN of [08](08_classroom_demo.ipynb), pack it, and write it as one C99 file
#   with no dynamic allocation and no dependency beyond `<stdint.h>` and `<string.h>`;
# - compile it with strict warnings, run it from the notebook and compare its predictions with the
#   packed model's;
# - compare its flash and RAM with the same network in float32, and build it for a Cortex-M.
#
# **Needs:** [05 · Bit packing](05_bit_packing.ipynb), [08 · Classroom demonstration](08_classroom_demo.ipynb) · **Next:** back to the [Index](00_index.ipynb)

# %% slideshow={"slide_type": "fragment"}
FULL_RUN = False  # True: more images and epochs, the reference widths (a few minutes)
import shutil
import tempfile
import numpy as np
import plotly.graph_objects as go
import torch
from bnnlab import bench, data, models, packed, plots as P, train
from bnnlab.packed import c_export as packed_c
from bnnlab.widgets import load_or_offer_download
torch.manual_seed(0)
if not FULL_RUN:
    torch.set_num_threads(1)  # small runs: one thread is fastest

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Train and pack
#
# A short training run of the small binary CNN on Fashion-MNIST, then `packed.export`: every binary
# layer becomes packed words, each BatchNorm + sign one integer threshold per channel.

# %% slideshow={"slide_type": "fragment"}
N_TRAIN, EPOCHS, WIDTHS = (None, 3, (16, 64, 64)) if FULL_RUN else (2000, 1, (8, 32, 32))
ds = load_or_offer_download(data.load_fashion_mnist, n_train=N_TRAIN, val_size=1000, n_test=1000 if FULL_RUN else 500)
net = models.binary_cnn(channels=WIDTHS, hidden=64)
train.fit(net, ds, epochs=EPOCHS, lr=3e-3, progress=False)
pk = packed.export(net.eval(), ds.val[0][:64])
pk.notes

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Write it as C
#
# `packed_c.to_c` writes `bnn_model.h` and `bnn_model.c`. The header is the whole interface: an
# input size, an output size, the size of the static scratch arena, and two functions.

# %% slideshow={"slide_type": "fragment"}
out = tempfile.mkdtemp(prefix="bnn_c_")
res = packed_c.to_c(pk, out, input_shape=(1, 28, 28))
print(res.header.read_text())

# %% [markdown] slideshow={"slide_type": "fragment"}
# The weights are `static const` 32-bit words (bit 1 means −1); a fused BatchNorm + sign is an
# integer comparison of the popcount:

# %% slideshow={"slide_type": "fragment"}
src = res.source.read_text()
print(src[src.index("/* ---------------------------------------------------------------- parameters"):][:600])

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Compile it, run it, compare
#
# `run_host` compiles the generated example with `gcc -std=c99 -O2 -Wall -Wextra -Werror -pedantic`,
# feeds it the test images and reads back its predictions and logits:

# %% slideshow={"slide_type": "fragment"} tags=["nbval-check-output"]
x = ds.test[0]
pred_c, logits_c = packed_c.run_host(res, x.numpy())
logits_py = pk(x).numpy()
{"images": len(x), "same predictions": bool((pred_c == logits_py.argmax(1)).all()),
 "max |logit C - logit packed| < 1e-4": bool(np.abs(logits_c - logits_py).max() < 1e-4),
 "accuracy": round(float((pred_c == ds.test[1].numpy()).mean()), 2) > 0.5}

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Flash and RAM: binary C against float32 C
#
# Flash holds the weights, the other parameters (thresholds, the float first and last layers) and
# the code; RAM the scratch arena and the stack. The float32 column is the same network with every
# weight a float and every activation a float buffer.

# %% slideshow={"slide_type": "fragment"}
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

# %% slideshow={"slide_type": "fragment"}
fig = go.Figure([go.Bar(name=r["model"], x=["flash", "RAM"], y=[r["flash (bytes)"], r["RAM (bytes)"]])
                 for r in rows])
fig.update_layout(barmode="group", height=380, title="Memory of the exported CNN",
                  yaxis_title="bytes (log scale)", yaxis_type="log",
                  legend=dict(orientation="h", y=-0.15))

# %% [markdown] slideshow={"slide_type": "fragment"}
# Flash shrinks by about the factor of the binary weights (32 bits become 1). RAM shrinks too: the
# float first convolution binarises each output as it computes it, so its float feature map is never
# stored, and every later activation is packed bits.
#
# ## A 32-bit ARM board and a microcontroller, emulated
#
# With the cross compilers installed (`make test` installs them), the same C file runs under
# `qemu-arm` as a 32-bit ARM Linux program, and on qemu's Cortex-M3 board `mps2-an385` with the
# test images embedded in the program:

# %% slideshow={"slide_type": "fragment"}
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

# %% [markdown] slideshow={"slide_type": "slide"}
# ## How fast is it?
#
# One image at a time, on this CPU: the plain C (no SIMD, no threads) against the packed model in
# Python, which calls vectorised kernels but pays Python's overhead for every stage.

# %% slideshow={"slide_type": "fragment"}
{"C, one call (ms)": round(packed_c.host_latency(res, x[:20].numpy(), repeats=100) * 1e3, 3),
 "PackedModel, one image (ms)": round(bench.latency(pk, x[:1]) * 1e3, 3)}

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Summary
#
# - The exported C computes the packed model's predictions exactly; its logits agree to float
#   rounding (its float first and last layers sum in a different order than torch).
# - It needs no allocator and no library: the same file builds for a laptop, a 32-bit ARM board
#   and a Cortex-M microcontroller.
# - Flash and RAM shrink by an order of magnitude: binary weights are bits, and no float feature map
#   is stored between the first layer and the classifier.
#
# ## Try this
#
# 1. Export with `word_bits=64` and compare the Cortex-M4 `flash` figure: why does it barely change?
# 2. Add `nn.Tanh()` before the last layer of a model and export it: read the refusal.
# 3. Which stage owns the arena? Print `res.memory` for `WIDTHS = (4, 32, 32)` and compare.
