"""``attack=backdoor``: a square trigger patch relabelled to a target class.

The threat model of FedDefender's original code (Gill et al., arXiv 2307.08672):
the malicious client stamps a saturated square in the bottom-right corner of some
of its non-target images and relabels them to the target class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fedlight.attacks.base import ATTACKS, Attack, State
from fedlight.params import RunFacts, fail, param


def stamp_trigger(x: torch.Tensor, size: int, value: float) -> torch.Tensor:
    """Copy of ``x`` (..., H, W) with a ``size`` x ``size`` square of ``value``.

    The square sits in the bottom-right corner and is clipped to the image.
    ``value`` is the data maximum in the space ``x`` lives in (for normalised
    images: the normalised value of a saturated pixel), so the stamp equals
    stamping before normalisation.
    """
    out = x.clone()
    h, w = out.shape[-2], out.shape[-1]
    s_h, s_w = min(size, h), min(size, w)
    out[..., h - s_h :, w - s_w :] = value
    return out


def poison_non_target(
    x: torch.Tensor,
    y: torch.Tensor,
    target_label: int,
    fraction: float,
    generator: torch.Generator,
    stamp: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stamp ``fraction`` of the non-target samples (seeded) and relabel them.

    Shared by every trigger-based backdoor; only ``stamp`` differs between them.
    """
    candidates = torch.nonzero(y != target_label).flatten()
    num_poisoned = round(fraction * len(candidates))
    order = torch.randperm(len(candidates), generator=generator)
    chosen = candidates[order[:num_poisoned]]
    x, y = x.clone(), y.clone()
    x[chosen] = stamp(x[chosen])
    y[chosen] = target_label
    return x, y


@dataclass
class TriggerAttack(Attack):
    """Trigger-and-relabel data poisoning of ``poison_fraction`` of non-target data.

    Every trigger backdoor (patch, blended, distributed) shares the poisoning and
    the ASR set; subclasses only say how the trigger is stamped (:meth:`stamp`).
    """

    target_label: int = param(9, low=0, doc="the class triggered images go to")
    poison_fraction: float = param(
        0.5,
        low=0.0,
        high=1.0,
        doc="share of the attacker's non-target samples poisoned",
    )

    def stamp(
        self, x: torch.Tensor, pixel_max: float, client_id: int | None = None
    ) -> torch.Tensor:
        """``x`` with the trigger client ``client_id`` trains on; with None, the
        trigger the attack is tested with."""
        raise NotImplementedError

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
        return poison_non_target(
            x,
            y,
            self.target_label,
            self.poison_fraction,
            generator,
            lambda xs: self.stamp(xs, pixel_max, client_id),
        )

    def asr_set(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        pixel_max: float,
        published: State | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Triggered test images whose true class is not the target."""
        keep = y != self.target_label
        triggered = self.stamp(x[keep], pixel_max)
        return triggered, torch.full_like(y[keep], self.target_label)


class PreparedTriggerAttack(TriggerAttack):
    """A trigger made anew in each attacked round (:meth:`Attack.prepare`), from
    the global model and the attacker's memory: nothing to poison beforehand."""

    # The data is left as it is (the base rule): the trigger is made and stamped
    # in :meth:`prepare`.
    poison = Attack.poison


@ATTACKS.register("backdoor", order=10, paper="Gill et al., arXiv 2307.08672")
@dataclass
class Backdoor(TriggerAttack):
    """The square patch in the bottom-right corner (FedDefender's threat model)."""

    trigger_size: int = param(
        12, low=1, doc="px at the model's input size, bottom-right corner"
    )

    def check(self, facts: RunFacts, key: str, owner: str) -> None:
        super().check(facts, key, owner)
        if self.trigger_size > facts.image_size:
            fail(
                f"{key}.trigger_size",
                self.trigger_size,
                f"an integer in [1, {facts.image_size}] (dataset.image_size)",
                owner,
            )

    def stamp(
        self, x: torch.Tensor, pixel_max: float, client_id: int | None = None
    ) -> torch.Tensor:
        return stamp_trigger(x, self.trigger_size, pixel_max)
