"""``attack=label_flip``: random wrong labels, as in Flower's FedDefender port.

A fraction ``flip_fraction`` of the malicious client's samples get a label drawn
uniformly from the other classes. It degrades the model rather than planting a
backdoor, so it has no attack success rate (reported as null).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedlight.attacks.base import ATTACKS, Attack
from fedlight.params import param


@ATTACKS.register("label_flip", order=40)
@dataclass
class LabelFlip(Attack):
    """Untargeted label noise on the malicious clients' data."""

    flip_fraction: float = param(
        1.0, low=0.0, high=1.0, doc="share of the attacker's samples relabelled"
    )
    num_classes: int = param(10, low=2, doc="labels are drawn from these classes")

    def poison(
        self,
        client_id: int,
        x: torch.Tensor,
        y: torch.Tensor,
        pixel_max: float,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_malicious(client_id):
            return x, y
        flip = torch.rand(len(y), generator=generator) < self.flip_fraction
        # An offset in [1, classes) added modulo classes never keeps the label.
        offset = torch.randint(1, self.num_classes, (len(y),), generator=generator)
        y = torch.where(flip, (y + offset) % self.num_classes, y)
        return x, y
