"""What every attack can do to a client's data and report.

An attack is a plain, picklable object: the driver validates it and uses it to
build the ASR test set; every Ray actor gets a copy and applies it to the
partitions of the clients it names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Attack:
    """No attack: the base class every attack overrides in part.

    ``malicious_clients`` are partition ids. ``boost`` is the factor by which a
    malicious client inflates its reported example count (a model-replacement
    style boost: FedAvg weighs clients by that count).
    """

    malicious_clients: list[int] = field(default_factory=list)
    target_label: int | None = None
    boost: float = 1.0

    name = "none"

    def __post_init__(self) -> None:
        self.malicious_clients = sorted(int(c) for c in self.malicious_clients)

    def is_malicious(self, client_id: int) -> bool:
        return client_id in self.malicious_clients

    def poison(
        self,
        client_id: int,
        x: torch.Tensor,
        y: torch.Tensor,
        pixel_max: float,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the client's training data as the attacker would train on it."""
        return x, y

    def reported_examples(self, client_id: int, num_examples: int) -> float:
        """The example count the client reports to the server."""
        if self.is_malicious(client_id):
            return float(num_examples) * float(self.boost)
        return float(num_examples)

    def tamper(
        self,
        client_id: int,
        global_state: dict[str, torch.Tensor],
        state: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """The weights the client sends after training (model poisoning hook)."""
        return state

    def asr_set(
        self, x: torch.Tensor, y: torch.Tensor, pixel_max: float
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Inputs and attacker-wanted labels for the attack success rate.

        None when the attack has no success criterion (no attack, label flip).
        """
        return None
