"""The plug-in refactor changed how a defence talks to the server, not what it
decides: FedDefender and the robust FedDefender make the per-round decisions
(participants, flags, rejections) recorded before it
(tests/golden/before_plugins.json, commit d9001a7) on a small mnist_20 setting,
through the whole stack, with the numbers around them. The robust FedDefender
runs with the engine and the settings it had then (``engine=per_client`` and the
first generation's search, :data:`GEN1`); its batched engine is compared with
that one in test_feddefender_robust.

The numbers are bit-exact only on a CPU like the one they were recorded on:
elsewhere oneDNN picks other kernels, and early training amplifies the last-bit
differences. Measured on an AVX2-only EPYC (2026-12-01): the same decisions in
every round, round-1 train losses within 2e-7 relative and confidences within
0.002, round-3 accuracy within 0.005 and confidences within 0.21. So decisions
are compared exactly, round 1 tightly, later rounds within that drift.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support import compose_config

GOLDEN = json.loads(
    (Path(__file__).parent / "golden" / "before_plugins.json").read_text()
)
# The robust FedDefender as it was recorded: the first generation's search.
GEN1 = [
    "defense.engine=per_client",
    "defense.num_inputs=20",
    "defense.steps=15",
    "defense.lr=0.1",
    "defense.universal=false",
    "defense.aim_gate=0",
    "defense.median_rounds=0",
]
SMALL = [
    "+experiment=mnist_20",
    "num_clients=6",
    "num_rounds=3",
    "client.epochs=1",
    "dataset.max_train_samples=1200",
    "wandb.mode=disabled",
    "simulation.round_timeout_s=300",
    # the kernels of the recording (fedlight.models.kernels' plain choices)
    "model.memory_format=contiguous",
    "client.fused_optimizer=false",
]


@pytest.mark.slow
@pytest.mark.parametrize("defense", sorted(GOLDEN["runs"]))
def test_same_rounds_as_before_the_refactor(defense, data_root, ray_tmp, tmp_path):
    from fedlight.simulate import simulate

    cfg = compose_config(
        [
            *SMALL,
            f"defense={defense}",
            *(GEN1 if defense == "feddefender_robust" else []),
            f"dataset.root={data_root}",
            f"simulation.ray_temp_dir={ray_tmp}",
        ]
    )
    rounds = simulate(cfg, tmp_path)["rounds"]
    before = GOLDEN["runs"][defense]
    assert [r["round"] for r in rounds] == [r["round"] for r in before]
    for now, then in zip(rounds, before, strict=True):
        first = now["round"] == 1
        for key in ("participants", "flagged", "rejected"):
            assert now[key] == then[key], (now["round"], key)
        for key in ("precision", "recall", "fpr"):  # follow from the decisions
            assert now[key] == then[key], (now["round"], key)
        assert now["accuracy"] == pytest.approx(
            then["accuracy"], abs=1e-3 if first else 0.01
        )
        assert now["loss"] == pytest.approx(then["loss"], rel=1e-4 if first else 0.01)
        if then["asr"] is not None:
            assert now["asr"] == pytest.approx(then["asr"], abs=1e-3 if first else 0.02)
        if first:
            assert now["malicious_confidence"] == pytest.approx(
                then["malicious_confidence"], abs=0.01
            )
        for cid, metrics in then["clients"].items():
            assert now["clients"][cid]["num-examples"] == metrics["num-examples"]
            assert now["clients"][cid]["train-loss"] == pytest.approx(
                metrics["train-loss"], rel=1e-5 if first else 1e-2
            )
    # The attacker's share of the aggregate is recorded in every round.
    assert all(0.0 <= r["attacker_weight"] <= 1.0 for r in rounds)
    assert sum(rounds[0]["weights"].values()) == pytest.approx(1.0)
