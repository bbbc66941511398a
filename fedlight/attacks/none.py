"""``attack=none``: every client is benign."""

from __future__ import annotations

from dataclasses import dataclass

from fedlight.attacks.base import Attack


@dataclass
class NoAttack(Attack):
    """Benign federation; kept as a class so configs never carry a null attack."""

    name = "none"
