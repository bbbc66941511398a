"""``attack=dba``: the distributed backdoor attack (Xie et al., ICLR 2020).

DBA splits one global trigger into local parts, one per malicious client: each
attacker trains only with its own part, so no single update carries the whole
trigger (and looks less unlike a benign one), yet the global model learns to
answer the assembled trigger, which is what the attack is tested with.

Here the global trigger is :class:`~fedlight.attacks.Backdoor`'s bottom-right
square; its rows are split into ``num_parts`` horizontal bands of (near) equal
height, one band per attacker in the order of ``malicious_clients``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedlight.attacks.backdoor import Backdoor, stamp_trigger
from fedlight.attacks.base import ATTACKS
from fedlight.params import RunFacts, fail, param


def stamp_part(
    x: torch.Tensor, size: int, value: float, part: int, num_parts: int
) -> torch.Tensor:
    """Copy of ``x`` (..., H, W) with band ``part`` of ``num_parts`` of the
    bottom-right ``size`` square set to ``value``; the bands tile the square."""
    out = x.clone()
    h, w = out.shape[-2], out.shape[-1]
    s_h, s_w = min(size, h), min(size, w)
    rows = torch.tensor_split(torch.arange(h - s_h, h), num_parts)[part]
    if len(rows):
        out[..., int(rows[0]) : int(rows[-1]) + 1, w - s_w :] = value
    return out


@ATTACKS.register("dba", order=20, paper="Xie et al., ICLR 2020")
@dataclass
class DistributedBackdoor(Backdoor):
    """Each attacker stamps its own part of the trigger; tested with all of it.

    ``num_parts`` None means one part per malicious client (the DBA setting);
    with more attackers than parts, parts are reused round-robin.
    """

    num_parts: int | None = param(
        None, low=1, doc="trigger parts; null: one per malicious client"
    )

    def check(self, facts: RunFacts, key: str, owner: str) -> None:
        super().check(facts, key, owner)
        if self.num_parts is not None and self.num_parts > self.trigger_size:
            fail(
                f"{key}.num_parts",
                self.num_parts,
                f"an integer in [1, {self.trigger_size}] (trigger_size)",
                owner,
            )

    @property
    def parts(self) -> int:
        return self.num_parts or max(1, len(self.malicious_clients))

    def part_of(self, client_id: int) -> int:
        """The trigger part attacker ``client_id`` stamps."""
        return self.malicious_clients.index(client_id) % self.parts

    def stamp(
        self, x: torch.Tensor, pixel_max: float, client_id: int | None = None
    ) -> torch.Tensor:
        if client_id is None:
            return stamp_trigger(x, self.trigger_size, pixel_max)
        return stamp_part(
            x, self.trigger_size, pixel_max, self.part_of(client_id), self.parts
        )
