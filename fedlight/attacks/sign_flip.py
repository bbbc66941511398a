"""``attack=sign_flip``: the sign-flipping attack (Damaskinos et al., ICML 2018,
"Asynchronous Byzantine machine learning"; a standard untargeted attack of the
Byzantine-robustness literature, e.g. Karimireddy et al., ICML 2021).

Each malicious client trains honestly, then sends its update reversed and
scaled, ``global - flip_scale * (trained - global)``: it pushes the global model
uphill on its own loss, degrading clean accuracy for everyone. It plants no
backdoor, so it has no attack success rate (reported as null). ``scale`` is not
applied on top: ``flip_scale`` is the whole factor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedlight.attacks.base import ATTACKS, Attack, scale_update
from fedlight.params import param


@ATTACKS.register("sign_flip", order=50, paper="Damaskinos et al., ICML 2018")
@dataclass
class SignFlip(Attack):
    """Send the trained update reversed, times ``flip_scale``."""

    flip_scale: float = param(
        1.0, low=0.0, low_open=True, doc="the update is sent as -flip_scale x itself"
    )

    def tamper(
        self,
        client_id: int,
        global_state: dict[str, torch.Tensor],
        state: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        if not self.is_malicious(client_id):
            return state
        return scale_update(global_state, state, -self.flip_scale)
