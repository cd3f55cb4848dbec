"""Tests of bnnlab.train: fit's history and callbacks, weight clip, evaluate, reference setups."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from bnnlab import data, train
from bnnlab.layers import BinaryLinear


@pytest.fixture(scope="module")
def moons():
    return data.make_moons(400, noise=0.15, seed=0)


def mlp(in_features=2, out=2, width=16):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, out))


# ---------------------------------------------------------------------------------- history
def test_history_has_one_entry_per_epoch(moons):
    h = train.fit(mlp(), moons, epochs=3, lr=1e-2, batch_size=32, progress=False)
    assert len(h) == 3 and h.epoch == [1, 2, 3]
    for key, values in h.as_dict().items():
        assert len(values) == 3, key
    assert all(t > 0 for t in h.time) and h.total_time == pytest.approx(sum(h.time))
    assert all(0.0 <= a <= 1.0 for a in h.train_acc + h.val_acc)
    assert not h.stopped_early
    assert h.lr == [1e-2] * 3
    assert "epochs=3" in repr(h)


def test_fit_learns_and_validation_is_evaluate(moons):
    model = mlp()
    h = train.fit(model, moons, epochs=15, lr=2e-2, batch_size=32, progress=False)
    assert h.train_loss[-1] < 0.5 * h.train_loss[0]
    assert h.val_acc[-1] > 0.85
    ev = train.evaluate(model, *moons.val)
    assert ev["accuracy"] == pytest.approx(h.val_acc[-1])
    assert ev["loss"] == pytest.approx(h.val_loss[-1], rel=1e-5)
    assert not model.training                          # fit leaves the model in eval mode


def test_fit_is_deterministic_given_seed(moons):
    h1 = train.fit(mlp(), moons, epochs=2, batch_size=50, seed=7, progress=False)
    h2 = train.fit(mlp(), moons, epochs=2, batch_size=50, seed=7, progress=False)
    h3 = train.fit(mlp(), moons, epochs=2, batch_size=50, seed=8, progress=False)
    assert h1.train_loss == h2.train_loss and h1.val_loss == h2.val_loss
    assert h1.train_loss != h3.train_loss


def test_fit_train_loss_is_mean_of_batch_losses(moons):
    losses, sizes = [], []

    class Recorder:
        def on_batch_end(self, batch, loss, model):
            losses.append(loss)

    n = moons.sizes["train"]
    batch = 64
    sizes = [min(batch, n - i) for i in range(0, n, batch)]
    h = train.fit(mlp(), moons, epochs=1, batch_size=batch, callbacks=[Recorder()],
                  progress=False)
    assert len(losses) == math.ceil(n / batch)
    assert h.train_loss[0] == pytest.approx(np.dot(losses, sizes) / n, rel=1e-6)


def test_fit_with_tuple_data_has_no_validation(moons):
    h = train.fit(mlp(), moons.train, epochs=2, progress=False)
    assert all(math.isnan(v) for v in h.val_loss + h.val_acc)


def test_fit_num_threads_is_restored(moons):
    before = torch.get_num_threads()
    seen = []

    class Probe:
        def on_epoch_end(self, epoch, history, model):
            seen.append(torch.get_num_threads())

    train.fit(mlp(), moons, epochs=1, num_threads=1, callbacks=[Probe()], progress=False)
    assert seen == [1] and torch.get_num_threads() == before


def test_fit_progress_bar_shows_epochs_and_the_last_metrics(moons, capsys):
    h = train.fit(mlp(), moons, epochs=2, progress=True)   # tqdm writes to stderr
    err = capsys.readouterr().err
    assert "fit: 100%" in err and "2/2" in err and "epoch/s" in err
    assert f"val_acc={h.val_acc[-1]:.3f}" in err.rsplit("\r", 1)[-1]   # the final line
    train.fit(mlp(), moons, epochs=1, progress=False)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------- callbacks
def test_callback_stops_by_returning_true(moons):
    seen = []

    class StopAt2:
        def on_epoch_end(self, epoch, history, model):
            seen.append((epoch, len(history)))
            return epoch == 2

    h = train.fit(mlp(), moons, epochs=10, callbacks=[StopAt2()], progress=False)
    assert len(h) == 2 and h.stopped_early
    assert seen == [(1, 1), (2, 2)]                    # history already holds the epoch


def test_callback_stops_by_flag_on_batch(moons):
    class StopAfter3(train.Callback):
        calls = 0

        def on_batch_end(self, batch, loss, model):
            assert isinstance(loss, float) and batch == self.calls
            self.calls += 1
            if self.calls == 3:
                self.stop_training = True

    cb = StopAfter3()
    h = train.fit(mlp(), moons, epochs=5, batch_size=10, callbacks=[cb], progress=False)
    assert cb.calls == 3 and len(h) == 1 and h.stopped_early


def test_callback_hooks_order(moons):
    events = []

    class Log:
        def on_train_begin(self, model, history):
            events.append("begin")

        def on_epoch_end(self, epoch, history, model):
            events.append(f"epoch{epoch}")

        def on_train_end(self, model, history):
            events.append("end")

    train.fit(mlp(), moons, epochs=2, callbacks=[Log(), object()], progress=False)
    assert events == ["begin", "epoch1", "epoch2", "end"]


def test_early_stopping_logic_and_restore():
    model = nn.Linear(1, 1)
    es = train.EarlyStopping(monitor="val_loss", patience=2)
    es.on_train_begin(model, None)
    h = train.History()
    stops = []
    for epoch, v in enumerate([1.0, 0.9, 0.95, 0.96, 0.97], start=1):
        with torch.no_grad():
            model.weight.fill_(epoch)
        h.val_loss.append(v)
        stops.append(es.on_epoch_end(epoch, h, model))
    assert stops == [False, False, False, False, True]
    assert es.best_epoch == 2 and es.best_value == 0.9
    es.on_train_end(model, h)
    assert float(model.weight.detach()) == 2.0                 # weights of the best epoch


def test_early_stopping_in_fit(moons):
    es = train.EarlyStopping(monitor="val_acc", patience=0, min_delta=1.0)  # never improves
    h = train.fit(mlp(), moons, epochs=10, callbacks=[es], progress=False)
    assert len(h) == 2 and h.stopped_early


def test_early_stopping_bad_arguments():
    with pytest.raises(ValueError, match="monitor"):
        train.EarlyStopping(monitor="test_acc")
    with pytest.raises(ValueError, match="patience"):
        train.EarlyStopping(patience=-1)


# ---------------------------------------------------------------------------------- weight clip
def _binary_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 16), nn.BatchNorm1d(16),
                         BinaryLinear(16, 16, weight_clip=0.05), nn.BatchNorm1d(16),
                         nn.Linear(16, 2))


def test_fit_applies_weight_clip(moons):
    net = _binary_net()
    train.fit(net, moons, epochs=2, lr=0.1, progress=False)
    w = net[2].weight.detach()
    assert float(w.abs().max()) <= 0.05 + 1e-7
    assert float(w.abs().max()) == pytest.approx(0.05)  # the clip was active


def test_fit_without_weight_clip(moons):
    net = _binary_net()
    train.fit(net, moons, epochs=2, lr=0.1, clip_weights=False, progress=False)
    assert float(net[2].weight.detach().abs().max()) > 0.05


# ---------------------------------------------------------------------------------- optimizers
@pytest.mark.parametrize("opt", ["adam", "adamw", "sgd",
                                 lambda p: torch.optim.RMSprop(p, lr=1e-3)])
def test_optimizers_and_schedules(moons, opt):
    h = train.fit(mlp(), moons, epochs=2, optimizer=opt, schedule="cosine", progress=False)
    assert len(h) == 2


def test_cosine_schedule_decays_lr(moons):
    h = train.fit(mlp(), moons, epochs=4, lr=0.01, schedule="cosine", progress=False)
    assert h.lr[0] == 0.01 and h.lr[1] < h.lr[0] and h.lr[3] < h.lr[2]


def test_optimizer_instance(moons):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    h = train.fit(model, moons, epochs=1, optimizer=opt, progress=False)
    assert h.lr == [0.05]


# ---------------------------------------------------------------------------------- regression
def test_regression_with_mse():
    ds = data.make_regression(300, seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                          nn.Linear(64, 1))
    h = train.fit(model, ds, epochs=30, lr=1e-2, batch_size=32, loss="mse", progress=False)
    assert all(math.isnan(a) for a in h.train_acc + h.val_acc)
    assert h.val_loss[-1] < 0.25 * float(ds.val[1].var())   # explains > 75 % of the variance
    ev = train.evaluate(model, *ds.test, loss="mse")
    with torch.no_grad():
        manual = float(((model(ds.test[0]) - ds.test[1]) ** 2).mean())
    assert ev["loss"] == pytest.approx(manual, rel=1e-5) and math.isnan(ev["accuracy"])


# ---------------------------------------------------------------------------------- evaluate
def test_evaluate_matches_numpy_and_restores_mode(moons):
    model = nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    model.train()
    x, y = moons.test
    ev = train.evaluate(model, x, y, batch_size=7)
    assert model.training
    model.eval()
    with torch.no_grad():
        logits = model(x).double().numpy()
    yn = y.numpy()
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    assert ev["loss"] == pytest.approx(-logp[np.arange(len(yn)), yn].mean(), rel=1e-5)
    assert ev["accuracy"] == pytest.approx((logits.argmax(1) == yn).mean())
    assert train.evaluate(model, x, y, batch_size=1000) == pytest.approx(ev)


# ---------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("kwargs, exc, match", [
    ({"epochs": -1}, ValueError, "epochs"),
    ({"epochs": 1.5}, TypeError, "epochs"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"lr": 0}, ValueError, "lr"),
    ({"optimizer": "lamb"}, ValueError, "optimizer"),
    ({"optimizer": 3}, TypeError, "optimizer"),
    ({"loss": "hinge"}, ValueError, "loss"),
    ({"schedule": "step"}, ValueError, "schedule"),
    ({"num_threads": 0}, ValueError, "num_threads"),
    ({"device": 3}, TypeError, "device"),
    ({"device": "tpu:0"}, ValueError, "device"),
    ({"resume": True}, ValueError, "checkpoint"),
    ({"augment": "flip"}, TypeError, "augment"),
])
def test_fit_bad_arguments(moons, kwargs, exc, match):
    kwargs = {"epochs": 1, **kwargs}
    with pytest.raises(exc, match=match):
        train.fit(mlp(), moons, progress=False, **kwargs)


def test_fit_bad_data():
    with pytest.raises(TypeError, match="data"):
        train.fit(mlp(), [1, 2, 3], epochs=1, progress=False)
    with pytest.raises(TypeError, match="model"):
        train.fit("net", data.make_moons(100), epochs=1, progress=False)
    with pytest.raises(ValueError, match="x has"):
        train.evaluate(mlp(), torch.zeros(3, 2), torch.zeros(2, dtype=torch.int64))


def test_history_best():
    h = train.History(epoch=[1, 2, 3], val_acc=[0.5, 0.7, 0.6], val_loss=[1.0, 0.8, 0.9])
    assert h.best("val_acc") == (2, 0.7) and h.best("val_loss") == (2, 0.8)
    with pytest.raises(ValueError, match="metric"):
        h.best("time")


# ---------------------------------------------------------------------------------- reference
def test_train_reference_digits_one_epoch():
    ds = data.load_digits(flatten=True, n_train=300)
    res = train.train_reference("mlp-digits", ds, epochs=1, progress=False)
    assert len(res.history) == 1 and 0.0 <= res.test["accuracy"] <= 1.0
    assert res.seconds > 0 and res.data is ds
    assert isinstance(res.model[3], BinaryLinear)
    twin = train.train_reference("mlp-digits", ds, epochs=1, binary=False, progress=False)
    assert not any(isinstance(m, BinaryLinear) for m in twin.model.modules())
    with pytest.raises(ValueError, match="name"):
        train.train_reference("resnet")


# ---------------------------------------------------------------------------------- checkpoints
def _mlp():
    torch.manual_seed(0)
    from bnnlab import models

    return models.binary_mlp(2, hidden=(16, 16), num_classes=2)


def test_checkpoint_resume_gives_the_uninterrupted_weights(moons, tmp_path, one_thread):
    """Two epochs straight vs one epoch, a fresh process-like restart (new model and optimiser
    objects), and a resumed second epoch: same weights, history, schedule and RNG stream."""
    kw = {"lr": 0.01, "batch_size": 32, "schedule": "cosine", "progress": False, "seed": 3}
    straight = _mlp()
    h_straight = train.fit(straight, moons, epochs=2, checkpoint=tmp_path / "a.safetensors", **kw)
    first = _mlp()
    ckpt = tmp_path / "b.safetensors"
    train.fit(first, moons, epochs=2, checkpoint=ckpt,
        callbacks=[type("Stop", (), {"on_epoch_end": lambda self, *a: True})()], **kw)
    resumed = _mlp()                                    # starts from scratch, then loads
    h_resumed = train.fit(resumed, moons, epochs=2, checkpoint=ckpt, resume=True, **kw)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(),
                         strict=True):
        assert torch.equal(a, b), k
    assert h_resumed.epoch == [1, 2] and h_resumed.train_loss == h_straight.train_loss
    assert h_resumed.lr == h_straight.lr
    raw = ckpt.read_bytes()
    assert b"bnnlab.checkpoint/1" in raw[:4096] and not raw.startswith(b"\x80")  # no pickle


def test_load_checkpoint_refuses_foreign_files(tmp_path):
    from safetensors.torch import save_file

    from bnnlab.train import load_checkpoint

    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="safetensors"):
        load_checkpoint(bad, _mlp())
    save_file({"a": torch.zeros(1)}, str(bad))
    with pytest.raises(ValueError, match="bnnlab.checkpoint"):
        load_checkpoint(bad, _mlp())


def test_build_model_by_name_and_import_path():
    from bnnlab.train import build_model

    assert isinstance(build_model("binary_mlp", in_features=4), torch.nn.Sequential)
    assert isinstance(build_model("torch.nn:Identity"), torch.nn.Identity)
    with pytest.raises(ValueError, match="model"):
        build_model("count_parameters")
    with pytest.raises(TypeError, match="returned"):
        build_model("builtins:dict", a=1)


def test_fit_streams_a_dataset_through_a_dataloader(moons, one_thread):
    """A torch Dataset (data that need not fit in one tensor) trains through a DataLoader in
    the same seeded order as the tensor path: without augmentation the two agree."""
    from torch.utils.data import TensorDataset

    kw = {"epochs": 2, "lr": 0.01, "batch_size": 32, "progress": False, "seed": 5}
    a, b = mlp(), mlp()
    ha = train.fit(a, moons, **kw)
    streamed = data.Split(moons.train, moons.val, moons.test)
    ds = TensorDataset(*streamed.train)
    hb = train.fit(b, type("S", (), {"train": ds, "val": moons.val})(), **kw)
    for (k, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0, msg=k)
    assert hb.val_acc == pytest.approx(ha.val_acc, abs=1e-6)
    c = mlp()
    train.fit(c, type("S", (), {"train": ds, "val": moons.val})(), augment=lambda x, g: x,
              **kw)
    with pytest.raises(ValueError, match="num_workers"):
        train.fit(mlp(), moons, epochs=1, num_workers=-1, progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fit_on_cuda_moves_model_and_batches_and_clips(moons, tmp_path):
    from bnnlab import models

    torch.manual_seed(0)
    net = models.binary_mlp(2, hidden=(16, 16), num_classes=2, weight_clip=1.0)
    keep = train.KeepBest()
    hist = train.fit(net, moons, epochs=2, lr=0.05, progress=False, device="cuda",
                     callbacks=[keep], checkpoint=tmp_path / "c.safetensors")
    assert next(net.parameters()).device.type == "cuda" and len(hist) == 2
    binary = [m for m in net.modules() if isinstance(m, BinaryLinear)]
    assert all(float(m.weight.abs().max()) <= 1.0 for m in binary)
    keep.restore(net)
    assert 0.0 <= train.evaluate(net, *moons.test)["accuracy"] <= 1.0
