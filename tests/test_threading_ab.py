"""tools/threading_ab.py: each backend really runs in its own process, and bad arguments are refused
by name (no timing is asserted)."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "threading_ab.py"
spec = importlib.util.spec_from_file_location("threading_ab", TOOL)
ab = importlib.util.module_from_spec(spec)
sys.modules["threading_ab"] = ab
spec.loader.exec_module(ab)


def test_cases_are_parsed_and_bad_ones_refused(capsys):
    assert ab.parse_cases("e2e_resnet18:1, e2e_vgg_small:16") == [("e2e_resnet18", 1),
                                                                  ("e2e_vgg_small", 16)]
    for bad, word in (("e2e_cnn:1", "unknown case"), ("e2e_resnet18", "batch"),
                      ("e2e_resnet18:0", "batch"), ("e2e_resnet18:x", "batch"), (",", "no case")):
        with pytest.raises(ValueError, match=word):
            ab.parse_cases(bad)
    assert ab.main(["--cases", "vgg:1"]) == 2
    assert ab.main(["--repeats", "1"]) == 2
    assert "--cases" in capsys.readouterr().err


@pytest.mark.slow
def test_each_backend_runs_in_its_own_process(tmp_path):
    from bnnlab import _kernels
    if not _kernels.openmp_enabled():
        pytest.skip("the extension was built without OpenMP")
    out = tmp_path / "ab.json"
    assert ab.main(["--cases", "e2e_vgg_small:1", "--rounds", "2", "--repeats", "3",
                    "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    # round 1 runs pool then OpenMP, round 2 the other way round
    assert [(r["round"], r["backend"]) for r in rows] == [(1, "pool"), (1, "openmp"),
                                                          (2, "openmp"), (2, "pool")]
    for r in rows:
        assert r["case"] == "e2e_vgg_small" and r["batch"] == 1
        assert r["packed_2t"] > 0 and r["packed_1t"] > 0 and r["twin_2t"] > 0
        if r["backend"] == "openmp":
            assert r["pool_stalls"] == 0       # the pool never ran a job in that process
