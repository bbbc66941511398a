"""``defense=none``: the inner strategy (FedAvg) unchanged."""

from __future__ import annotations

from fedlight.defenses.base import DefenseStrategy


class NoDefense(DefenseStrategy):
    """Aggregates every reply; scores no client."""
