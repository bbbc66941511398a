"""A hand-written round record, as fedlight.server builds them, for the tests."""

from __future__ import annotations

import dataclasses
from typing import Any

from fedlight.record import RoundRecord


def record(round_: int = 1, **changes: Any) -> RoundRecord:
    """Round ``round_`` with client 0 (the attacker) flagged and given no weight;
    ``changes`` replace fields."""
    base = RoundRecord(
        round=round_,
        accuracy=0.9,
        loss=0.3,
        asr=0.05,
        malicious_confidence={"0": 1.0, "1": 0.0, "2": 0.2},
        flagged=["0"],
        rejected={},
        precision=1.0,
        recall=1.0,
        fpr=0.0,
        weights={"0": 0.0, "1": 0.25, "2": 0.75},
        attacker_weight=0.0,
        participants=["0", "1", "2"],
        failures={"3": "actor died"},
        clients={
            "0": {"train-loss": 0.5, "train-accuracy": 0.8, "num-examples": 2000.0,
                  "partition-id": 0.0},
            "1": {"train-loss": 0.4, "train-accuracy": 0.9, "num-examples": 100.0,
                  "partition-id": 1.0},
        },
        train_seconds=2.0,
        defense_seconds=0.5,
        eval_seconds=0.25,
        seconds=2.8,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)
