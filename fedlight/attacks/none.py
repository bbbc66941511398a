"""``attack=none``: every client is benign."""

from __future__ import annotations

from dataclasses import dataclass

from fedlight.attacks.base import ATTACKS, Attack


@ATTACKS.register("none", order=0)
@dataclass
class NoAttack(Attack):
    """Benign federation; kept as a class so configs never carry a null attack.

    It has no malicious clients whatever an experiment file sets (so sweeping
    ``attack=none`` over a backdoor experiment gives the no-attack baseline, and
    the detection metrics count every flag as a false positive).
    """

    def __post_init__(self) -> None:
        self.malicious_clients = []
        self.num_malicious = None
