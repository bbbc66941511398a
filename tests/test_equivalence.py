"""The plug-in refactor changed how a defence talks to the server, not what it
decides: FedDefender and the robust FedDefender give the per-round accuracy,
ASR, confidences and flags recorded before it (tests/golden/before_plugins.json,
commit d9001a7) on a small mnist_20 setting, through the whole stack. The
robust FedDefender runs with the engine it had then (``engine=per_client``);
its batched engine is compared with that one in test_feddefender_robust."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support import compose_config

GOLDEN = json.loads(
    (Path(__file__).parent / "golden" / "before_plugins.json").read_text()
)
SMALL = [
    "+experiment=mnist_20",
    "num_clients=6",
    "num_rounds=3",
    "client.epochs=1",
    "dataset.max_train_samples=1200",
    "wandb.mode=disabled",
    "simulation.round_timeout_s=300",
]


@pytest.mark.slow
@pytest.mark.parametrize("defense", sorted(GOLDEN["runs"]))
def test_same_rounds_as_before_the_refactor(defense, data_root, ray_tmp, tmp_path):
    from fedlight.simulate import simulate

    cfg = compose_config(
        [
            *SMALL,
            f"defense={defense}",
            *(["defense.engine=per_client"] if defense == "feddefender_robust" else []),
            f"dataset.root={data_root}",
            f"simulation.ray_temp_dir={ray_tmp}",
        ]
    )
    rounds = simulate(cfg, tmp_path)["rounds"]
    before = GOLDEN["runs"][defense]
    assert [r["round"] for r in rounds] == [r["round"] for r in before]
    for now, then in zip(rounds, before, strict=True):
        for key in ("participants", "flagged", "rejected"):
            assert now[key] == then[key], (now["round"], key)
        for key in ("accuracy", "loss", "asr", "precision", "recall", "fpr"):
            assert now[key] == pytest.approx(then[key], rel=1e-6, abs=1e-9), key
        assert now["malicious_confidence"] == pytest.approx(
            then["malicious_confidence"], rel=1e-6, abs=1e-9
        )
        for cid, metrics in then["clients"].items():
            assert now["clients"][cid]["num-examples"] == metrics["num-examples"]
            assert now["clients"][cid]["train-loss"] == pytest.approx(
                metrics["train-loss"], rel=1e-6
            )
    # The attacker's share of the aggregate is recorded in every round.
    assert all(0.0 <= r["attacker_weight"] <= 1.0 for r in rounds)
    assert sum(rounds[0]["weights"].values()) == pytest.approx(1.0)
