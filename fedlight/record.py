"""The round record: one typed row per round, shared by the server loop, the
reference loop, the console, W&B tracking, ``results.json`` and the report."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RoundRecord:
    """What one round did and measured.

    ``weights`` are the clients' shares of the aggregate (summing to 1, from the
    defence's verdict); ``attacker_weight`` is the share that went to the
    clients attacking this round (None without participants' weights).
    ``malicious_confidence`` and ``flagged`` are None for a defence that scores
    nobody; ``precision``/``recall``/``fpr`` None where undefined.
    """

    round: int
    accuracy: float
    loss: float
    asr: float | None = None
    malicious_confidence: dict[str, float] | None = None
    flagged: list[str] | None = None
    rejected: dict[str, str] = field(default_factory=dict)
    precision: float | None = None
    recall: float | None = None
    fpr: float | None = None
    weights: dict[str, float] | None = None
    attacker_weight: float | None = None
    participants: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    clients: dict[str, dict[str, float]] = field(default_factory=dict)
    train_seconds: float = 0.0
    defense_seconds: float = 0.0
    defense_details: dict[str, Any] = field(default_factory=dict)
    eval_seconds: float = 0.0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The record as ``results.json`` and checkpoints hold it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoundRecord:
        """A record read back; keys an older fedlight did not write get their
        defaults, keys this one does not know are dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def normalised(weights: dict[str, float]) -> dict[str, float] | None:
    """``weights`` as shares summing to 1 (None when they sum to 0)."""
    total = sum(weights.values())
    return {c: w / total for c, w in weights.items()} if total > 0 else None


def attacker_share(weights: dict[str, float], malicious: list[str]) -> float | None:
    """The share of ``weights`` held by ``malicious`` clients (None if no weight)."""
    total = sum(weights.values())
    if total <= 0:
        return None
    return sum(w for cid, w in weights.items() if cid in malicious) / total
