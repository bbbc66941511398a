"""``attack=backdoor``: a square trigger patch relabelled to a target class.

The threat model of FedDefender's original code (Gill et al., arXiv 2307.08672):
the malicious client stamps a saturated square in the bottom-right corner of some
of its non-target images and relabels them to the target class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedlight.attacks.base import Attack


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


@dataclass
class Backdoor(Attack):
    """Trigger-and-relabel data poisoning of ``poison_fraction`` of non-target data."""

    target_label: int = 9
    trigger_size: int = 4
    poison_fraction: float = 0.5

    name = "backdoor"

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
        candidates = torch.nonzero(y != self.target_label).flatten()
        num_poisoned = round(self.poison_fraction * len(candidates))
        order = torch.randperm(len(candidates), generator=generator)
        chosen = candidates[order[:num_poisoned]]
        x, y = x.clone(), y.clone()
        x[chosen] = stamp_trigger(x[chosen], self.trigger_size, pixel_max)
        y[chosen] = self.target_label
        return x, y

    def asr_set(
        self, x: torch.Tensor, y: torch.Tensor, pixel_max: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Triggered test images whose true class is not the target."""
        keep = y != self.target_label
        triggered = stamp_trigger(x[keep], self.trigger_size, pixel_max)
        return triggered, torch.full_like(y[keep], self.target_label)
