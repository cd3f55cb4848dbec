"""Runners for the sweep tests, imported by Dask workers by name (``_sweep_helper:...``).

``marked_fit`` is the built-in ``fit`` runner, preceded, when the worker's environment sets
``BNNLAB_TEST_MARKERS``, by an empty marker file ``<pid>-<seed>`` in that folder and a pause of
``BNNLAB_TEST_PAUSE`` seconds: the test sees which worker process started which run, and can
kill it while the run is in flight. The result does not depend on either variable.
``with_file`` returns a :class:`bnnlab.runs.RunOutput` with one small file.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bnnlab import runs


def marked_fit(spec: dict[str, Any]) -> dict[str, Any]:
    folder = os.environ.get("BNNLAB_TEST_MARKERS")
    if folder:
        (Path(folder) / f"{os.getpid()}-{spec['seed']}").touch()
        time.sleep(float(os.environ.get("BNNLAB_TEST_PAUSE", "0")))
    spec = {**spec, "runner": "fit"}
    return runs.fit_runner(runs.canonical_spec(spec))


def failing(spec: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError(f"run {spec['seed']} always fails")


def with_file(spec: dict[str, Any]) -> runs.RunOutput:
    """A run that also produces a file (as the experiments' architecture runs store weights)."""
    return runs.RunOutput({"seed": spec["seed"]}, {"data.bin": bytes([spec["seed"]]) * 4})
