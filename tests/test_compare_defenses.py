"""The documented study in small: a Hydra multirun over three defences through the
real stack, then ``python -m fedlight.report`` over its folder."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from support import SMOKE


@pytest.mark.slow
def test_smoke_multirun_then_report(tmp_path, data_root, ray_tmp):
    sweep, out = tmp_path / "sweep", tmp_path / "report"
    env = {**os.environ, "FEDLIGHT_DATA": str(data_root), "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedlight.run",
            "-m",
            *SMOKE,
            "attack.malicious_clients=[0]",  # the attacks' default: no attacker
            "defense=none,krum,feddefender_robust",
            f"simulation.ray_temp_dir={ray_tmp}",
            f"hydra.sweep.dir={sweep}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    krum = json.loads((sweep / "1" / "results.json").read_text())
    for r in krum["rounds"]:
        assert len(r["flagged"]) == 3, "Krum keeps one of four clients"
        assert r["recall"] in (0.0, 1.0) and r["fpr"] is not None
        (kept,) = r["defense_details"]["selected"]
        assert kept not in r["flagged"]
        # Krum's verdict as applied: the kept client is the whole aggregate.
        assert r["weights"] == {c: float(c == kept) for c in "0123"}
        assert r["attacker_weight"] == float(kept == "0")
    robust = json.loads((sweep / "2" / "results.json").read_text())
    for r in robust["rounds"]:  # scored in the defender's Ray actor
        assert set(r["malicious_confidence"]) == {"0", "1", "2", "3"}
        assert set(r["defense_details"]["statistic"]) == {"0", "1", "2", "3"}
        assert r["defense_seconds"] > 0

    proc = subprocess.run(
        [sys.executable, "-m", "fedlight.report", str(sweep), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    table = (out / "table.md").read_text()
    assert "| none | 1 |" in table and "| krum | 1 |" in table
    assert "400-image subset of mnist" in table
    with (out / "table.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["defense"] for r in rows] == ["none", "krum", "feddefender_robust"]
    assert rows[0]["precision_mean"] == "" and rows[1]["fpr_mean"] != ""
    assert float(rows[1]["accuracy_mean"]) == pytest.approx(krum["final"]["accuracy"])
    # The attacker's largest share after round 1: round 2's, of two rounds.
    last_share = krum["rounds"][1]["attacker_weight"]
    assert float(rows[1]["attacker_weight_mean"]) == pytest.approx(last_share)
    assert "attacker weight r≥2" in table
    (png,) = out.glob("*.png")
    assert png.name == "default-400-train-backdoor.png" and png.stat().st_size > 1000
