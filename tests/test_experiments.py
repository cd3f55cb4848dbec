"""Tests for bnnlab.experiments: a micro-run of the runner writes strict JSON in the schema that
bnnlab.figures reads (helpers of the protocol are tested in test_figures.py)."""
from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest
import torch
from torch import nn

from bnnlab import experiments as E
from bnnlab.train import History


def _strict(path):
    """Load JSON refusing NaN/Infinity (which strict JSON does not have)."""
    def bad(token):
        raise ValueError(f"{path.name} contains {token}")
    return json.loads(path.read_text(), parse_constant=bad)


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """One epoch, one seed, digits only, two variants, every experiment."""
    out = tmp_path_factory.mktemp("results")
    before = torch.get_num_threads()
    rc = E.main(["--only", "architectures", "ablation", "noise", "regression", "costs",
                 "--datasets", "digits", "--variants", "float", "binary", "--epochs", "1",
                 "--seeds", "1", "--out", str(out)])
    torch.set_num_threads(before)           # main() sets --threads (default 1)
    assert rc == 0
    return out


def test_micro_run_writes_every_file_with_the_schema(micro):
    names = {"run", "architectures", "signs", "ablation", "noise", "regression", "costs"}
    assert {p.stem for p in micro.glob("*.json")} == names
    for name in names:
        payload = _strict(micro / f"{name}.json")
        assert payload["schema"] == E.SCHEMA
        assert payload["experiment"] == name
        assert payload["profile"] == "quick+overrides"
    run = _strict(micro / "run.json")
    assert run["experiments"] == ["architectures", "ablation", "noise", "regression", "costs"]
    assert run["total_seconds"] > 0 and run["machine"]["torch_threads"] == 1
    assert run["config"]["seeds"] == [0] and run["bench"]["status"] == "skipped"


def test_micro_run_architecture_records(micro):
    arch = _strict(micro / "architectures.json")
    assert list(arch["datasets"]) == ["digits"]
    p = arch["datasets"]["digits"]
    assert p["epochs"] == 1 and p["optimizer"] == "adam" and p["schedule"] == "cosine"
    assert p["sizes"]["train"] + p["sizes"]["val"] + p["sizes"]["test"] == 1797
    assert [(r["variant"], r["seed"]) for r in arch["runs"]] == [("float", 0), ("binary", 0)]
    for r in arch["runs"]:
        assert r["dataset"] == "digits" and r["epochs"] == 1 and r["best_epoch"] == 1
        assert 0.0 <= r["test_acc"] <= 1.0 and 0.0 <= r["val_acc"] <= 1.0
        assert r["val_acc"] == r["history"]["val_acc"][0]
        assert set(r["history"]) >= {"epoch", "train_loss", "val_acc", "val_loss"}
        assert r["fit_seconds"] > 0


def test_micro_run_signs_ablation_noise(micro):
    signs = _strict(micro / "signs.json")["datasets"]["digits"]
    assert list(signs["flip_ratio"]) == ["binary"]                 # binary variants only
    fr = signs["flip_ratio"]["binary"]
    assert fr["epochs"] == [1] and 0.0 <= fr["total"][0] <= 1.0
    st = signs["sign_stats"]
    assert st["epochs"] == [0, 1] and len(st["edges"]) == 61
    layer = next(iter(st["layers"].values()))
    assert sum(layer["weight_counts"][0]) > 0 and len(layer["input_counts"]) == 2
    gm = signs["gradient_mismatch"]
    assert gm["epochs"] == [0, 1] and set(gm["results"][0]) == {"tanh β=1", "tanh β=3",
                                                                 "tanh β=10"}
    ab = _strict(micro / "ablation.json")
    assert ab["dataset"] == "digits"                        # follows --datasets
    assert [r["quantizer"] for r in ab["runs"]] == list(E.ABLATION_QUANTIZERS)
    assert ab["runs"][0]["reused_from_architectures"] is True
    assert all(not r["reused_from_architectures"] for r in ab["runs"][1:])
    nz = _strict(micro / "noise.json")
    assert nz["sigmas"] == list(E.PROFILES["quick"].noise_sigmas)
    assert {r["variant"] for r in nz["runs"]} == {"float", "binary"}
    assert all(len(r["accuracy"]) == len(nz["sigmas"]) for r in nz["runs"])
    clean = {r["variant"]: r["accuracy"][0] for r in nz["runs"]}
    arch = {r["variant"]: r["test_acc"] for r in _strict(micro / "architectures.json")["runs"]}
    if nz["n_test"] == _strict(micro / "architectures.json")["datasets"]["digits"]["sizes"]["test"]:
        assert clean == arch                          # sigma = 0 is the plain test accuracy


def test_micro_run_regression_errors_are_consistent(micro):
    reg = _strict(micro / "regression.json")
    a, b = reg["domain"]
    assert [(r["variant"], r["seed"]) for r in reg["runs"]] == [("float", 0), ("binary", 0)]
    for r in reg["runs"]:
        # norms of one error function on [a, b]: L1 <= (b-a) sup, L2 <= sqrt(b-a) sup,
        # and L1 <= sqrt(b-a) L2 (Cauchy-Schwarz)
        assert 0 < r["l1"] <= (b - a) * r["sup"] + 1e-9
        assert 0 < r["l2"] <= math.sqrt(b - a) * r["sup"] + 1e-9
        assert r["l1"] <= math.sqrt(b - a) * r["l2"] + 1e-9
        assert r["val_loss"] > 0 and "test_acc" not in r
    c = reg["curves"]
    assert len(c["x"]) == len(c["truth"]) == len(c["fits"]["float"]) == len(c["fits"]["binary"])
    np.testing.assert_allclose(c["truth"], E.regression_target(np.array(c["x"])))


def test_micro_run_costs(micro):
    costs = _strict(micro / "costs.json")["datasets"]["digits"]
    fl, bn = costs["variants"]["float"], costs["variants"]["binary"]
    assert fl["packed_bytes"] == 0 and fl["summary"]["totals"]["binary_macs"] == 0
    # hidden (256, 256, 256): two binary 256x256 weight matrices, 256 bits = 4 words per row
    assert bn["bits_bytes"] == 2 * 256 * 256 / 8
    assert bn["packed_bytes"] == 2 * 256 * 4 * 8
    assert bn["summary"]["totals"]["binary_macs"] == 2 * 256 * 256
    assert fl["torch_forward_ms"] > 0 and bn["torch_forward_ms"] > 0


def test_figures_read_the_micro_run(micro, tmp_path, one_thread):
    from bnnlab import figures
    from bnnlab import ladder as L

    # the report needs the ablation ladder too: a micro one (one epoch, tiny data, one seed)
    L.run_ladder("quick", micro / "ladder", seeds=[0], log=lambda s: None,
                 overrides=dict(n_train=200, val_size=100, n_test=200, width=4, max_epochs=1,
                                patience=1, lr_patience=1, batch_size=50))
    out = figures.write_all(tmp_path, results_dir=micro, pdf=False, log=lambda s: None)
    assert len(out["tables"]) == len(figures.TABLES)
    tex = (tmp_path / "tables" / "architectures.tex").read_text()
    acc = _strict(micro / "architectures.json")["runs"][1]["test_acc"]
    assert f"${100 * acc:.1f}$" in tex                          # one seed: no sd


def test_regression_target_is_the_noise_free_data_curve():
    from bnnlab import data

    split = data.make_regression(64, noise=0.0, seed=3)
    for x, y in split:
        np.testing.assert_allclose(y[:, 0].numpy(), E.regression_target(x[:, 0].numpy()),
                                   rtol=1e-6, atol=1e-6)


def test_pool_split_and_build_model_shapes(one_thread):
    from bnnlab import data

    split = E.pool_split(data.load_digits(n_train=20, seed=0), 2)
    assert split.input_shape == (1, 4, 4) and split.info["pool"] == 2
    for v in E.VARIANTS:
        net = E.build_model(v, split.input_shape, 10, hidden=(8, 8), width=4)
        assert net.eval()(split.test[0][:3]).shape == (3, 10)
    reg = E.build_regression_model("binary", (8, 8))
    assert reg.eval()(torch.zeros(5, 1)).shape == (5, 1)
    spread = 0.98 * math.sqrt(3)
    bias = reg[2].bias.detach()
    assert float(bias.abs().max()) <= spread and float(bias.std()) > 0.1


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="variant"):
        E.build_model("xnor+", (4,), 2)
    with pytest.raises(ValueError, match="profile"):
        E.run("medium", tmp_path)
    with pytest.raises(ValueError, match="only"):
        E.run("quick", tmp_path, only=["everything"])
    with pytest.raises(SystemExit):
        E.main(["--seeds", "0", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        E.main(["--variants", "nope", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        E.main(["--quick", "--full"])


def test_jsonable_writes_strict_json():
    got = E._jsonable({"a": np.float32(0.5), "b": [math.nan, np.int64(3)], "c": torch.ones(2),
                       "d": (1, math.inf)})
    assert got == {"a": 0.5, "b": [None, 3], "c": [1.0, 1.0], "d": [1, None]}
    with pytest.raises(TypeError, match="JSON"):
        E._jsonable(object())


# ------------------------------------------------------------------------------ protocol helpers
def test_function_errors_of_e_equals_x_on_unit_interval():
    x = np.linspace(0.0, 1.0, 2001)
    got = E.function_errors(x, x)
    assert got["sup"] == 1.0
    assert got["l1"] == pytest.approx(0.5, abs=1e-12)          # trapezoid is exact for |x|
    assert got["l2"] == pytest.approx(math.sqrt(1.0 / 3.0), abs=1e-6)


def test_function_errors_on_a_nonuniform_grid_and_a_jump():
    x = np.sort(np.concatenate([np.linspace(-1, 1, 4001), [0.123456]]))
    e = np.where(x < 0, -2.0, 1.0)                            # |e| = 2 on [-1,0), 1 on [0,1]
    got = E.function_errors(x, e)
    assert got["sup"] == 2.0
    assert got["l1"] == pytest.approx(3.0, abs=2e-3)
    assert got["l2"] == pytest.approx(math.sqrt(5.0), abs=2e-3)
    with pytest.raises(ValueError, match="increasing"):
        E.function_errors(x[::-1], e)
    with pytest.raises(ValueError, match="same length"):
        E.function_errors(x, e[:-1])


def test_aggregate_mean_and_sample_sd():
    vals = [0.90, 0.92, 0.97]
    got = E.aggregate(vals)
    assert got["mean"] == pytest.approx(statistics.mean(vals))
    assert got["sd"] == pytest.approx(statistics.stdev(vals))      # ddof = 1
    assert got["n"] == 3 and got["min"] == 0.90 and got["max"] == 0.97
    one = E.aggregate([0.5, None, math.nan])
    assert one["n"] == 1 and one["mean"] == 0.5 and math.isnan(one["sd"])
    assert E.aggregate([])["n"] == 0


def test_select_best_takes_the_first_best_and_skips_nan():
    assert E.select_best([0.5, 0.9, 0.9, 0.7]) == 1
    assert E.select_best([math.nan, 0.3, 0.2, 0.2], mode="min") == 2
    with pytest.raises(ValueError, match="finite"):
        E.select_best([math.nan])
    with pytest.raises(ValueError, match="mode"):
        E.select_best([1.0], mode="best")


def test_model_selection_uses_validation_not_test():
    """Validation peaks at epoch 2, test at epoch 4: the kept weights are those of epoch 2."""
    val_acc = [0.60, 0.80, 0.70, 0.75]
    test_acc = [0.55, 0.65, 0.70, 0.90]           # what a test-selected protocol would pick
    model = nn.Linear(1, 1)
    keep = E.KeepBest("val_acc")
    hist = History()
    for epoch, v in enumerate(val_acc, start=1):
        with torch.no_grad():
            model.weight.fill_(float(epoch))       # the weights "are" the epoch number
        hist.epoch.append(epoch)
        hist.val_acc.append(v)
        hist.val_loss.append(1.0 - v)
        keep.on_epoch_end(epoch, hist, model)
    keep.restore(model)
    assert keep.best_epoch == 2 and float(model.weight.detach()) == 2.0
    assert keep.best_epoch != 1 + int(np.argmax(test_acc))
    loss_keep = E.KeepBest("val_loss")
    for epoch in (1, 2):
        loss_keep.on_epoch_end(epoch, History(epoch=[1, 2][:epoch], val_loss=[0.3, 0.3][:epoch],
                                              val_acc=[0.0, 0.0][:epoch]), model)
    assert loss_keep.best_epoch == 1                       # ties keep the earliest
    with pytest.raises(RuntimeError, match="epoch"):
        E.KeepBest().restore(model)


def test_train_one_reports_test_at_the_validation_epoch(one_thread):
    """A real (tiny) fit: the record's epoch is the first argmax of the validation curve and the
    test accuracy is that of the restored weights."""
    from bnnlab import data, train

    split = data.load_digits(n_train=200, seed=0)
    torch.manual_seed(0)
    model = E.build_model("binary", split.input_shape, 10, hidden=(16, 16))
    model, rec = E.train_one(model, split, epochs=4, lr=0.01, batch_size=32, seed=0)
    val = rec["history"]["val_acc"]
    assert rec["best_epoch"] == 1 + int(np.argmax(val))
    assert rec["val_acc"] == max(val)
    assert rec["test_acc"] == train.evaluate(model, *split.test)["accuracy"]


# ------------------------------------------------------------------------------ paper profile
@pytest.mark.slow   # 60-85 s on the shared two-core machine (five full-size CIFAR models)
@pytest.mark.long
def test_paper_profile_smoke_on_generated_cifar_files(tmp_path):
    """The paper profile end to end at 1 % of the data and 1 epoch, on files in the official
    binary format (unverified: they are not the official bytes), through Dask in-process."""
    from distributed import Client

    from bnnlab import data as D

    rng = np.random.default_rng(0)
    root = tmp_path / "cifar"
    root.mkdir()
    for name in D.CIFAR10_FILES:
        D.write_cifar10_bin(root / name, rng.integers(0, 256, (40, 3, 32, 32), dtype=np.uint8),
                            rng.integers(0, 10, 40))
    specs = E.paper_specs(seeds=(0,), fraction=0.01, epochs=1, verify=False)
    assert len(specs) == len(E.PAPER_MODELS)
    with Client(processes=False, n_workers=1, threads_per_worker=1,
                dashboard_address=None) as client:
        table = E.run_paper(tmp_path / "out", root, client=client, progress=False,
                            log=lambda s: None, seeds=(0,), fraction=0.01, epochs=1,
                            verify=False)
    assert set(table["models"]) == set(E.PAPER_MODELS)
    row = table["models"]["vgg-small"]
    assert row["parameters"] == 14_029_706 and row["epochs"] == 1 and row["fraction"] == 0.01
    assert 0.0 <= row["test_acc"]["mean"] <= 1.0 and row["seeds"] == [0]
    assert table["sweep"]["done"] == len(E.PAPER_MODELS)
    again = E.paper_table(tmp_path / "out" / "runs")                  # from the files only
    written = _strict(tmp_path / "out" / "paper.json")["models"]
    for name, row in again["models"].items():
        assert row["keys"] == table["models"][name]["keys"] == written[name]["keys"]
        assert row["test_acc"]["mean"] == written[name]["test_acc"]["mean"]


# ------------------------------------------------------------------------------ runs and the store
#: A profile small enough for unit tests: digits only, 1-2 epochs, small MLPs and CNNs.
TINY = E.Profile(
    name="tiny", seeds=(0, 1),
    datasets={"digits": E.DatasetSpec("digits", epochs=2, batch_size=64, lr=3e-3, n_train=300,
                                      hidden=(16, 16), width=4)},
    variants=("float", "binary", "abc", "reactnet"), ablation_dataset="digits",
    ablation_quantizers=("ste_sign", "approx_sign"), noise_dataset="digits",
    noise_sigmas=(0.0, 0.3), noise_n_test=100, signs_dataset="digits", probe_size=32,
    regression=E.RegressionSpec(n_samples=64, epochs=2, hidden=(16, 16), grid_points=201,
                                plot_points=21),
    timing_batch=16, timing_repeats=1)
#: what may differ between two runs of one spec
TIMING_KEYS = ("fit_seconds", "time")


def _untimed(obj):
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def _store_results(out):
    """key -> (result without timings, files) of every record in <out>/store."""
    from bnnlab.runs import ResultStore

    return {r["key"]: (_untimed(r["result"]), r.get("files")) for r in
            ResultStore(out / "store").records()}


def _quiet(s):
    pass


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny profile, run serially in this process."""
    out = tmp_path_factory.mktemp("tiny")
    before = torch.get_num_threads()
    E.run(TINY, out, log=_quiet)
    torch.set_num_threads(before)
    return out


def test_every_training_is_a_stored_run(tiny):
    specs = E.experiment_specs(TINY)
    # 1 data set x 4 variants x 2 seeds, + 1 ablation binariser x 2 seeds (STE is the
    # architecture run of "binary"), + float/binary regression x 2 seeds
    assert len(specs) == 8 + 2 + 4
    got = _store_results(tiny)
    assert len(got) == len(specs)
    run = _strict(tiny / "run.json")
    assert run["execution"]["done"] == len(specs) and run["execution"]["skipped"] == 0
    assert run["execution"]["executor"].startswith("serial")
    arch = _strict(tiny / "architectures.json")
    for row in arch["runs"]:                     # architecture runs keep their weights
        assert got[row["key"]][1] == {"weights.safetensors": got[row["key"]][1][
            "weights.safetensors"]}
    ab = _strict(tiny / "ablation.json")
    assert [r["reused_from_architectures"] for r in ab["runs"]] == [True, False] * 2
    assert ab["runs"][0]["key"] == next(r["key"] for r in arch["runs"]
                                        if (r["variant"], r["seed"]) == ("binary", 0))


def test_rerun_executes_nothing_and_a_deleted_record_reruns_alone(tiny, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(tiny, out)
    before = _store_results(out)
    E.run(TINY, out, log=_quiet)
    assert _strict(out / "run.json")["execution"]["done"] == 0
    victim = E.ablation_spec(TINY, "approx_sign", 1)
    from bnnlab.runs import spec_key

    (out / "store" / f"{spec_key(victim)}.json").unlink()
    E.run(TINY, out, log=_quiet)
    ex = _strict(out / "run.json")["execution"]
    assert ex["done"] == 1 and ex["skipped"] == len(before) - 1
    assert _store_results(out) == before          # the same record again (timings aside)


def test_payloads_assemble_from_the_results_directory_alone(tiny, tmp_path):
    import shutil

    shutil.copytree(tiny / "store", tmp_path / "store")      # nothing but the store
    got = E.assemble(TINY, tmp_path, log=_quiet)
    assert set(got) == {"architectures", "signs", "ablation", "noise", "regression", "costs"}
    for name in ("architectures", "signs", "ablation", "noise", "regression"):
        want = {k: v for k, v in _strict(tiny / f"{name}.json").items() if k != "seconds"}
        assert {k: v for k, v in _strict(tmp_path / f"{name}.json").items()
                if k != "seconds"} == want
    costs = _strict(tmp_path / "costs.json")["datasets"]["digits"]["variants"]
    old = _strict(tiny / "costs.json")["datasets"]["digits"]["variants"]
    for v in TINY.variants:
        assert costs[v]["summary"] == old[v]["summary"]
        assert costs[v]["packed_bytes"] == old[v]["packed_bytes"]
    # the loaded weights are the trained ones: noise-free accuracy is the test accuracy
    arch = _strict(tmp_path / "architectures.json")["runs"]
    noise = _strict(tmp_path / "noise.json")
    assert noise["n_test"] == 100
    split = E.load_dataset(TINY.datasets["digits"], 0)
    for r in (r for r in arch if r["seed"] == 0):
        model = E.load_model(E.ResultStore(tmp_path / "store"), E.architecture_spec(
            TINY, "digits", r["variant"], 0))
        from bnnlab import train

        assert train.evaluate(model, *split.test)["accuracy"] == r["test_acc"]
    signs = _strict(tmp_path / "signs.json")["datasets"]["digits"]
    assert list(signs["flip_ratio"]) == ["binary", "abc", "reactnet"]
    assert signs["sign_stats"]["variant"] == "binary"


def test_a_missing_run_or_altered_weights_are_refused(tiny, tmp_path):
    import shutil

    with pytest.raises(ValueError, match="no record"):
        E.assemble(TINY, tmp_path / "empty", log=_quiet)
    shutil.copytree(tiny / "store", tmp_path / "store")
    spec = E.architecture_spec(TINY, "digits", "binary", 0)
    store = E.ResultStore(tmp_path / "store")
    path = store.file(spec, E.WEIGHTS)
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ValueError, match="SHA-256"):
        E.load_model(store, spec)


@pytest.mark.slow   # about 70 s on the shared two-core machine at load 4 (a LocalCluster starts)
def test_records_of_a_two_worker_localcluster_equal_the_serial_ones(tiny, tmp_path):
    E.run(TINY, tmp_path, workers=2, log=_quiet)
    ex = _strict(tmp_path / "run.json")["execution"]
    assert ex["executor"].endswith("(LocalCluster)") and ex["done"] == len(_store_results(tiny))
    assert _store_results(tmp_path) == _store_results(tiny)   # weights' SHA-256 included
    for name in ("architectures", "ablation", "noise", "regression", "signs"):
        assert _untimed({k: v for k, v in _strict(tmp_path / f"{name}.json").items()
                         if k != "seconds"}) == \
            _untimed({k: v for k, v in _strict(tiny / f"{name}.json").items() if k != "seconds"})


def test_run_and_the_runner_refuse_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="workers"):
        E.run(TINY, tmp_path, workers=0)
    with pytest.raises(ValueError, match="at most one"):
        E.run(TINY, tmp_path, workers=2, scheduler="tcp://127.0.0.1:1")
    with pytest.raises(TypeError, match="scheduler"):
        E.run(TINY, tmp_path, scheduler=8786)
    with pytest.raises(ValueError, match="threads"):
        E.run(TINY, tmp_path, threads=0)
    with pytest.raises(TypeError, match="only"):
        E.run(TINY, tmp_path, only="noise")
    with pytest.raises(ValueError, match="kind"):
        E.experiment_runner({"kind": "everything", "seed": 0})
    with pytest.raises(ValueError, match="seed"):
        E.experiment_runner({"kind": "regression", "seed": -1})
    with pytest.raises(ValueError, match="quantizer"):
        E.ablation_spec(TINY, "sign", 0)
    with pytest.raises(ValueError, match="variant"):
        E.architecture_spec(TINY, "digits", "mlp", 0)
    with pytest.raises(ValueError, match="dataset"):
        E.architecture_spec(TINY, "cifar10", "float", 0)
    with pytest.raises(ValueError, match="variant"):
        E.regression_spec(TINY, "xnor", 0)
    for argv in (["--workers", "0"], ["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"]):
        with pytest.raises(SystemExit):
            E.main([*argv, "--out", str(tmp_path)])
    assert not (tmp_path / "store").exists()       # nothing ran
