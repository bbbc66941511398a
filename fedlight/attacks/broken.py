"""``attack=broken_update``: Byzantine clients that send unusable weights.

Not a backdoor: these clients test that the server survives what a faulty or
hostile client can send — NaN or Inf values, a tensor of the wrong shape or
dtype, or an absurdly scaled update. The server must reject them before
aggregation (see :mod:`fedlight.sanitize`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedlight.attacks.base import ATTACKS, Attack
from fedlight.params import param

KINDS = ("nan_values", "inf_values", "wrong_shape", "wrong_dtype", "huge_norm")


@ATTACKS.register("broken_update", order=90)
@dataclass
class BrokenUpdate(Attack):
    """Replace the malicious clients' trained weights by a broken version."""

    kind: str = param("nan_values", choices=KINDS, doc="what the client sends")

    def tamper(
        self,
        client_id: int,
        global_state: dict[str, torch.Tensor],
        state: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        if not self.is_malicious(client_id):
            return state
        state = dict(super().tamper(client_id, global_state, state))
        key = next(k for k, v in state.items() if v.is_floating_point())
        value = state[key]
        if self.kind == "nan_values":
            state[key] = torch.full_like(value, float("nan"))
        elif self.kind == "inf_values":
            state[key] = torch.full_like(value, float("inf"))
        elif self.kind == "wrong_shape":
            state[key] = torch.zeros(value.numel() + 1)
        elif self.kind == "wrong_dtype":
            state[key] = value.double()
        elif self.kind == "huge_norm":
            state = {
                k: global_state[k] + 1e6 * (v - global_state[k])
                if v.is_floating_point()
                else v
                for k, v in state.items()
            }
        else:
            raise ValueError(
                f"attack.kind={self.kind!r} is not one of {', '.join(KINDS)}"
            )
        return state
