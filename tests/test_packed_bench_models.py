"""bnnlab.bench_models: the e2e cases build, check and break down the packed models."""
from __future__ import annotations

import pytest
import torch

from bnnlab import bench, bench_models, models, packed


def test_replay_calls_covers_every_binary_kernel_and_packing_step():
    torch.manual_seed(0)
    net = models.tiny_bireal(in_channels=3, width=8, weight_quantizer="ste_sign").eval()
    x = torch.randn(2, 3, 12, 12)
    pk = packed.export(net, x)
    kernels_only, packing_only = bench_models.replay_calls(pk, x)
    kernels_only()
    packing_only()
    # the model still runs unpatched afterwards, with the same outputs
    with torch.no_grad():
        assert torch.equal(pk(x), net(x))
    assert "plan" in vars(pk.body[2].units[0]) and callable(pk.body[2].units[0].plan)


def test_unknown_case_is_refused():
    with pytest.raises(ValueError, match="case"):
        bench_models.build("e2e_nope")


@pytest.mark.slow
def test_rows_time_both_models_at_batch_1_and_16():
    cfg = {"repeats": 1, "warmup": 1, "min_time": 0.0, "budget": 1.0}
    for case in bench_models.CASES:
        rows = bench_models.rows(case, 1, cfg, bench._interleaved, bench._row)
        assert [r["case"] for r in rows] == [case, f"{case}_b16"]
        for r in rows:
            assert r["correct"] and r["torch"] > 0 and r["bnnlab"] > 0
            br = r["breakdown"]
            assert 0.0 <= br["float_share"] <= 1.0 and br["binary_kernels"] > 0
        assert "bit-exact" in rows[0]["note"] or "allclose" in rows[0]["note"]
    assert "| e2e_resnet18 |" in bench_models.table(rows)


def test_replay_records_bound_kernel_plans_of_a_flat_export():
    torch.manual_seed(1)
    net = models.binary_cnn().eval()
    x = torch.randn(2, 1, 28, 28)
    pk = packed.export(net, x)
    pk(x)                                               # steps built, plans bound
    kernel_calls, pack_calls, undo = bench_models._recorder(pk)
    try:
        pk(x)
    finally:
        undo()
    fused = [m for m in pk.packed_layers() if m.fused]
    assert len(kernel_calls) >= len(fused) > 0
    n = len(kernel_calls)
    with torch.no_grad():
        got = pk(x)
    assert len(kernel_calls) == n                      # no recording wrapper left bound
    assert torch.allclose(got, net(x), rtol=1e-4, atol=1e-4)
