"""The ablation ladder: specs are pure JSON, each rung adds its one idea, runs resume."""
import json
import math

import pytest
import torch
from torch import nn

from bnnlab import ladder as L
from bnnlab.blocks import RPReLU
from bnnlab.layers import BinaryConv2d, XnorConv2d
from bnnlab.quantizers import ApproxSign, MagnitudeAwareSign, SteSign

# A ladder small enough for a unit test (a second or two per run on one core).
TINY = dict(n_train=200, val_size=100, n_test=200, width=4, max_epochs=2, patience=1,
            lr_patience=1, batch_size=50)


def _convs(model):
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d,))]


def test_specs_are_json_and_hash_is_stable():
    specs = L.ladder_specs("quick", seeds=[0, 1])
    assert [s["rung"] for s in specs] == list(L.RUNGS) * 2
    assert json.loads(json.dumps(specs)) == specs
    assert L.spec_hash(specs[0]) == L.spec_hash(json.loads(json.dumps(specs[0])))
    assert len({L.spec_hash(s) for s in specs}) == len(specs)
    # every rung of a profile gets the same data and budget
    budget = {k: v for k, v in specs[0].items() if k not in ("rung", "teacher", "seed")}
    for s in specs:
        assert {k: v for k, v in s.items() if k not in ("rung", "teacher", "seed")} == budget
    distill = L.rung_spec("distill", "quick", 3)
    assert distill["teacher"] == L.rung_spec("float", "quick", 3)


@pytest.mark.parametrize("bad, exc", [
    (dict(rung="nope"), ValueError), (dict(profile="huge"), ValueError),
    (dict(seed=-1), ValueError), (dict(seed=1.5), TypeError),
])
def test_rung_spec_rejects_bad_arguments(bad, exc):
    kw = dict(rung="float", profile="quick", seed=0) | bad
    with pytest.raises(exc):
        L.rung_spec(kw.pop("rung"), kw.pop("profile"), kw.pop("seed"))


def test_rung_spec_rejects_unknown_override():
    with pytest.raises(ValueError, match="overrides"):
        L.rung_spec("float", "quick", 0, epochs=3)
    with pytest.raises(TypeError, match="spec"):
        L.run_rung(["float"])
    with pytest.raises(ValueError, match="missing"):
        L.run_rung({"rung": "float"})


def test_each_rung_adds_its_idea():
    x = torch.randn(2, 1, 14, 14)
    models = {r: L.build_model(L.rung_spec(r, "quick", 0)) for r in L.RUNGS}
    for m in models.values():
        assert m(x).shape == (2, 10)
    # float: no binary layer at all
    assert not any(isinstance(m, BinaryConv2d) for m in models["float"].modules())
    # BinaryNet: STE signs on inputs and weights, weight clip, no shortcut, no XNOR scale
    bn = [m for m in models["binarynet"].modules() if isinstance(m, BinaryConv2d)]
    assert bn and all(type(m) is BinaryConv2d and isinstance(m.input_quantizer, SteSign)
                      and isinstance(m.weight_quantizer, SteSign) and m.weight_clip == 1.0
                      for m in bn)
    assert all(u.shortcut is None for u in models["binarynet"] if isinstance(u, L.LadderUnit))
    # + XNOR: the same with XnorConv2d (alpha and K-map)
    xn = [m for m in models["xnor"].modules() if isinstance(m, BinaryConv2d)]
    assert len(xn) == len(bn) and all(isinstance(m, XnorConv2d) for m in xn)
    # + Bi-Real: shortcuts, ApproxSign, magnitude-aware weights
    units = [u for u in models["bireal"] if isinstance(u, L.LadderUnit)]
    assert all(u.shortcut is not None for u in units)
    assert all(isinstance(u.conv.input_quantizer, ApproxSign)
               and isinstance(u.conv.weight_quantizer, MagnitudeAwareSign) for u in units)
    # + ReActNet: RSign (learned shift + ApproxSign) and RPReLU
    units = [u for u in models["reactnet"] if isinstance(u, L.LadderUnit)]
    assert all(isinstance(u.conv.input_quantizer, L.RSignApprox) and isinstance(u.post, RPReLU)
               for u in units)
    # two-step and distill share ReActNet's architecture
    for r in ("twostep", "distill"):
        assert str(models[r]) == str(models["reactnet"])
    # step 1 of two-step: real weights, binary activations
    step1 = L.build_model(L.rung_spec("twostep", "quick", 0), binary_weights=False)
    assert all(m.weight_quantizer is None and m.input_quantizer is not None
               for m in step1.modules() if isinstance(m, BinaryConv2d))


def test_rsign_approx_is_a_shifted_sign():
    q = L.RSignApprox(3)
    with torch.no_grad():
        q[0].bias.copy_(torch.tensor([0.0, -0.5, 0.5]))
    x = torch.full((1, 3, 1, 1), 0.25)
    assert q(x).flatten().tolist() == [1.0, -1.0, 1.0]


def test_run_rung_record(one_thread):
    spec = L.rung_spec("bireal", "quick", 0, **TINY)
    rec = L.run_rung(spec)
    assert json.loads(json.dumps(rec))["test_acc"] == rec["test_acc"]
    assert rec["spec"] == spec and rec["hash"] == L.spec_hash(spec)
    assert 0.0 <= rec["test_acc"] <= 1.0 and 0.0 <= rec["val_acc"] <= 1.0
    hist = rec["steps"][0]["history"]
    assert rec["epochs_run"] == len(hist["epoch"]) <= spec["max_epochs"]
    assert rec["hit_cap"] != rec["stopped_early"]
    if rec["epochs_run"] < spec["max_epochs"]:
        assert rec["stopped_early"]
    # patience 1: stopped exactly when two epochs passed without a new best
    assert rec["stopped_early"] == (rec["epochs_run"] - rec["best_epoch"] > spec["patience"])
    # the restored weights are those of the best validation epoch
    assert rec["val_acc"] == pytest.approx(max(hist["val_acc"]), abs=1e-12)
    assert hist["val_acc"][rec["best_epoch"] - 1] == max(hist["val_acc"])
    # a pure function of its spec
    again = L.run_rung(spec)
    assert again["test_acc"] == rec["test_acc"] and again["best_epoch"] == rec["best_epoch"]


def test_two_step_and_distillation_reuse_the_teacher(tmp_path, one_thread):
    kw = dict(TINY, max_epochs=4)
    float_rec = L.run_rung(L.rung_spec("float", "quick", 0, **kw), teacher_dir=tmp_path)
    saved = list(tmp_path.glob("*.safetensors"))
    assert len(saved) == 1 and saved[0].stem == float_rec["hash"]
    spec = L.rung_spec("distill", "quick", 0, **kw)
    rec = L.run_rung(spec, teacher_dir=tmp_path)
    assert [s["step"] for s in rec["steps"]] == [1, 2]
    assert [s["cap"] for s in rec["steps"]] == [2, 2]
    assert rec["epochs_run"] <= 4
    # without the cache the teacher is trained again, identically
    alone = L.run_rung(spec)
    assert alone["test_acc"] == rec["test_acc"]


def test_run_ladder_writes_one_file_per_run_and_resumes(tmp_path, one_thread):
    logs = []
    recs = L.run_ladder("quick", tmp_path, seeds=[0], overrides=dict(TINY, max_epochs=1),
                        log=logs.append)
    assert [r["rung"] for r in recs] == list(L.RUNGS)
    assert len(list((tmp_path / "runs").glob("*.json"))) == len(L.RUNGS)
    assert not list(tmp_path.rglob("*.tmp*"))
    loaded = L.load_ladder(tmp_path)
    assert [r["hash"] for r in loaded["runs"]] == [r["hash"] for r in recs]
    assert loaded["meta"]["profile"] == "quick" and loaded["meta"]["seeds"] == [0]
    assert all(math.isfinite(r["test_acc"]) for r in recs)
    logs.clear()
    again = L.run_ladder("quick", tmp_path, seeds=[0], overrides=dict(TINY, max_epochs=1),
                         log=logs.append)
    assert all("done before" in line for line in logs)
    assert [r["test_acc"] for r in again] == [r["test_acc"] for r in recs]
    # a resume that runs nothing keeps the wall time of the ladder it found
    assert L.load_ladder(tmp_path)["meta"]["wall_seconds"] == loaded["meta"]["wall_seconds"] > 0

    # the README's table: one row per rung, the numbers of the records
    md = L.markdown_table(tmp_path)
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == len(L.RUNGS)
    for row, rec in zip(rows, recs, strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0].rstrip(" †") == rec["label"]
        assert cells[1] == f"{rec['test_acc'] * 100:.1f}"      # one seed: no sd
        assert cells[4] == f"{int(rec['stopped_early'])} / {int(rec['hit_cap'])}"
    assert cells[3] == "one seed" and "Profile `quick`: 1 seed(s)" in md
    assert L.main(["--markdown", "--out", str(tmp_path)]) == 0

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{L.README_BEGIN} old -->\nstale\n{L.README_END}\n\nafter\n")
    assert L.update_readme(readme, tmp_path, check=True) is False
    assert "stale" in readme.read_text()                        # check=True writes nothing
    assert L.main(["--out", str(tmp_path), "--update-readme", str(readme)]) == 0
    text = readme.read_text()
    assert md in text and "stale" not in text and text.endswith(f"{L.README_END}\n\nafter\n")
    assert L.update_readme(readme, tmp_path) is True


def test_markdown_table_refuses_an_unfinished_ladder(tmp_path, capsys):
    with pytest.raises(ValueError, match="out: .* no finished ladder"):
        L.markdown_table(tmp_path)
    with pytest.raises(SystemExit):
        L.main(["--markdown", "--out", str(tmp_path)])
    assert "no finished ladder" in capsys.readouterr().err


def test_load_ladder_missing_and_wrong_schema(tmp_path):
    assert L.load_ladder(tmp_path) is None
    (tmp_path / "ladder.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(ValueError, match="schema"):
        L.load_ladder(tmp_path)


def test_cli_list(capsys):
    assert L.main(["--profile", "quick", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(L.RUNGS)


def test_run_ladder_on_dask_matches_the_serial_ladder(tmp_path, one_thread):
    """The same specs through the sweep engine (embedded LocalCluster, runner "ladder") give the
    same records as the serial ladder, land in the results store and resume from it."""
    kw = dict(TINY, max_epochs=1)
    serial = L.run_ladder("quick", tmp_path / "serial", seeds=[0], overrides=kw, log=lambda s: None)
    dask = L.run_ladder("quick", tmp_path / "dask", seeds=[0], overrides=kw, log=lambda s: None,
                        workers=2)
    assert [r["hash"] for r in dask] == [r["hash"] for r in serial]
    assert [r["test_acc"] for r in dask] == [r["test_acc"] for r in serial]
    assert len(list((tmp_path / "dask" / "store").glob("*.json"))) == len(L.RUNGS)
    logs: list[str] = []
    L.run_ladder("quick", tmp_path / "dask", seeds=[0], overrides=kw, log=logs.append, workers=2)
    assert all("done before" in line for line in logs)


def test_readme_ladder_block_is_generated_from_the_committed_ladder():
    """The README's ladder table is the one its committed records give (no typed numbers)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text(encoding="utf-8")
    m = re.search(re.escape(L.README_BEGIN) + r" generated from (\S+) ", text)
    assert m, "README.md has no generated ladder block"
    src = root / m.group(1)
    lad = L.load_ladder(src)
    assert lad is not None and lad["meta"]["profile"] == "full"
    assert len(lad["runs"]) == len(L.RUNGS) * len(lad["meta"]["seeds"]) >= 3 * len(L.RUNGS)
    assert L.update_readme(root / "README.md", src, check=True), \
        f"README's ladder block differs from {src}: run the command it names"
