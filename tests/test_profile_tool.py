"""benchmarks/profile_run.py's summary: py-spy samples sorted by process and
activity, on a hand-written recording whose answer is known."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from support import REPO

DRIVER = 'process 1:"python benchmarks/profile_run.py --inner"'
ACTOR = 'process 7:"python default_worker.py"'


def load_tool():
    spec = importlib.util.spec_from_file_location(
        "profile_run", REPO / "benchmarks" / "profile_run.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_samples_are_sorted_by_process_and_activity(tmp_path: Path) -> None:
    tool = load_tool()
    lines = [
        # the driver importing torch (30 samples), then evaluating (10)
        f"{DRIVER};<module> (run.py:1);"
        "_find_and_load (<frozen importlib._bootstrap>:1176);"
        "<module> (torch/__init__.py:5) 30",
        f"{DRIVER};run_round (fedlight/server.py:9);"
        "__call__ (fedlight/evaluation.py:3) 10",
        # a Ray worker that runs Flower's actor: a client actor, training (50)
        f"{DRIVER};{ACTOR};run (flwr/simulation/ray_transport/ray_actor.py:60);"
        "training_step (fedlight/models/module.py:81) 50",
        f"{DRIVER};{ACTOR};thread (0x1) 5",  # native code, no Python frame
    ]
    raw = tmp_path / "raw.txt"
    raw.write_text("\n".join(lines) + "\n")
    cpu = tool.summarise(raw)["cpu_s"]
    rate = tool.RATE
    want = {"import": 30 / rate, "evaluation": 10 / rate}
    assert cpu["driver"] == pytest.approx(want)
    assert cpu["client actor"] == pytest.approx(
        {"train step": 50 / rate, "native (no Python frame)": 5 / rate}
    )
