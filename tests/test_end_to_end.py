"""The main command through the real stack: Hydra, Flower's simulation engine on
Ray, Lightning clients, FedDefender, W&B offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import SMOKE


@pytest.mark.slow
def test_cli_smoke_run_writes_results_plot_config_and_wandb(
    tmp_path, data_root, ray_tmp
):
    run_dir = tmp_path / "run"
    overrides = [o for o in SMOKE if not o.startswith("wandb.mode")]
    env = {**os.environ, "FEDLIGHT_DATA": str(data_root), "WANDB_SILENT": "true"}
    env.pop("WANDB_API_KEY", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedlight.run",
            *overrides,
            "wandb.mode=offline",
            f"simulation.ray_temp_dir={ray_tmp}",
            f"hydra.run.dir={run_dir}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "FedDefender Output Round 2" in out and "[SUMMARY]" in out

    results = json.loads((run_dir / "results.json").read_text())
    assert results["malicious_clients"] == ["0"]
    assert results["data_source"].startswith("local:")
    assert [r["round"] for r in results["rounds"]] == [1, 2]
    for r in results["rounds"]:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["loss"] > 0
        assert 0.0 <= r["asr"] <= 1.0
        assert set(r["malicious_confidence"]) == {"0", "1", "2", "3"}
        assert all(0.0 <= c <= 1.0 for c in r["malicious_confidence"].values())
        flagged = {c for c, v in r["malicious_confidence"].items() if v > 0.5}
        assert set(r["flagged"]) == flagged
        assert r["seconds"] > 0 and set(r["clients"]) == {"0", "1", "2", "3"}
    assert results["final"]["accuracy"] == results["rounds"][-1]["accuracy"]
    assert results["final"]["asr"] == results["rounds"][-1]["asr"]
    # The results name the code that made them: this checkout's commit.
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert results["code"]["commit"] == head
    assert (run_dir / "iid-convnet-mnist.png").stat().st_size > 1000
    assert "num_clients: 4" in (run_dir / "config.yaml").read_text()
    assert (run_dir / ".hydra" / "config.yaml").exists()
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))


@pytest.mark.slow
def test_no_defense_scores_nobody(smoke_cfg, tmp_path, ray_tmp):
    from fedlight.simulate import simulate
    from support import compose_config

    cfg = compose_config(
        [
            *SMOKE,
            f"dataset.root={smoke_cfg.dataset.root}",
            "defense=none",
            "num_rounds=1",
            f"simulation.ray_temp_dir={ray_tmp}",
        ]
    )
    results = simulate(cfg, tmp_path)
    (r,) = results["rounds"]
    assert r["malicious_confidence"] is None and r["flagged"] is None
    assert r["precision"] is None and r["recall"] is None
    assert (
        json.loads((Path(tmp_path) / "results.json").read_text())["rounds"][0]["round"]
        == 1
    )
