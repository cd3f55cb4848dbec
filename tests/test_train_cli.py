"""``python -m bnnlab train`` with real processes: DDP under torchrun (gloo, CPU) equals one
process on the same global batch; a run killed mid-epoch and resumed equals an uninterrupted
one; checkpoints are pickle-free."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bnnlab import train

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS)]),
                OMP_NUM_THREADS="1")


SMALL = ("--model-kw", '{"hidden": [64, 64]}')


def _train(out: Path, *extra: str, torchrun: int = 0, epochs: int = 1, batch: int = 64,
           model: str = "_train_helper:plain_mlp") -> list[str]:
    args = ["-m", "bnnlab", "train", "--model", model, "--data", "digits",
            "--epochs", str(epochs), "--batch-size", str(batch), "--lr", "0.01",
            "--schedule", "linear", "--out", str(out), *extra]
    if torchrun:
        return [TORCHRUN, "--standalone", f"--nproc-per-node={torchrun}", *args]
    return [sys.executable, *args]


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True,  # noqa: S603
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow   # about 70 s on the shared two-core machine (three interpreter start-ups)
def test_torchrun_ddp_equals_one_process_on_the_same_global_batch(tmp_path):
    # global batch 60 over 2 ranks; the last, short batch (1,149 % 60 = 9) splits 5 + 4
    _run(_train(tmp_path / "ddp", torchrun=2, batch=60))
    _run(_train(tmp_path / "one", batch=60))
    ddp = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    one = load_file(str(tmp_path / "one" / "model.safetensors"))
    assert ddp.keys() == one.keys()
    for k in one:
        torch.testing.assert_close(ddp[k], one[k], atol=1e-5, rtol=0)
    import json

    rec = json.loads((tmp_path / "ddp" / "record.json").read_text())
    assert rec["world_size"] == 2
    ref = json.loads((tmp_path / "one" / "record.json").read_text())
    assert rec["history"]["train_loss"] == pytest.approx(ref["history"]["train_loss"], abs=1e-5)
    assert not list((tmp_path / "ddp").glob(".*"))          # no temporary files left


@pytest.mark.slow   # about 140 s on the shared, loaded two-core machine
def test_train_killed_mid_epoch_resumes_to_the_uninterrupted_weights(tmp_path):
    # batch 2: about 575 steps per epoch, long enough to be killed inside epoch 2
    run = tmp_path / "run"
    proc = subprocess.Popen(_train(run, *SMALL, epochs=2, batch=2, model="binary_mlp"),  # noqa: S603
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = run / "checkpoint.safetensors"
    end = time.monotonic() + 240
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    model = train.build_model("binary_mlp", in_features=64, num_classes=10, hidden=(64, 64))
    assert train.load_checkpoint(ckpt, model) == 1            # killed during epoch 2
    assert not (run / "model.safetensors").exists()
    _run(_train(run, *SMALL, "--resume", epochs=2, batch=2, model="binary_mlp"))
    _run(_train(tmp_path / "straight", *SMALL, epochs=2, batch=2, model="binary_mlp"))
    a = load_file(str(run / "model.safetensors"))
    b = load_file(str(tmp_path / "straight" / "model.safetensors"))
    for k in b:
        assert torch.equal(a[k], b[k]), k
    import json

    ra = json.loads((run / "record.json").read_text())["history"]
    rb = json.loads((tmp_path / "straight" / "record.json").read_text())["history"]
    for k in ("epoch", "train_loss", "val_acc", "lr"):
        assert ra[k] == rb[k]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_train_on_cuda(tmp_path):
    _run(_train(tmp_path / "gpu", "--device", "cuda", model="binary_mlp"))
    rec = (tmp_path / "gpu" / "record.json").read_text()
    assert '"device": "cuda"' in rec
