"""``attack=blended``: a fixed full-image pattern blended into the image.

The blended-injection backdoor of Chen et al. 2017 ("Targeted backdoor attacks
on deep learning systems using data poisoning", arXiv 1712.05526): instead of a
patch, a seeded random pattern covering the whole image is mixed in,
``x' = (1 - blend_ratio) * x + blend_ratio * pattern``, and the sample is
relabelled to the target. A small ratio keeps the trigger hard to see and spreads
it over every pixel, which patch-oriented defences do not expect.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedlight.attacks.backdoor import TriggerAttack
from fedlight.attacks.base import ATTACKS
from fedlight.params import param


def blend_pattern(height: int, width: int, pixel_max: float, seed: int) -> torch.Tensor:
    """The (H, W) pattern: uniform noise in [0, pixel_max], seeded by ``seed``.

    Drawn in the normalised space, where 0 is the data mean and ``pixel_max`` a
    saturated pixel, so in pixel space it lies in [mean, 1]: a valid image, known
    without the black level (which :meth:`Attack.poison` is not given).
    """
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(height, width, generator=generator) * pixel_max


def blend(x: torch.Tensor, pattern: torch.Tensor, ratio: float) -> torch.Tensor:
    """``(1 - ratio) * x + ratio * pattern`` for ``x`` (..., H, W).

    Normalisation is affine, so blending normalised images equals blending the
    raw images and normalising.
    """
    return (1.0 - ratio) * x + ratio * pattern.to(x.dtype)


@ATTACKS.register("blended", order=30, paper="Chen et al., arXiv 1712.05526")
@dataclass
class Blended(TriggerAttack):
    """Blend a fixed pattern into ``poison_fraction`` of the non-target samples."""

    blend_ratio: float = param(
        0.2, low=0.0, low_open=True, high=1.0, doc="x' = (1 - ratio) x + ratio pattern"
    )
    pattern_seed: int = param(0, low=0, doc="the seed fixing the pattern")

    def stamp(
        self, x: torch.Tensor, pixel_max: float, client_id: int | None = None
    ) -> torch.Tensor:
        pattern = blend_pattern(x.shape[-2], x.shape[-1], pixel_max, self.pattern_seed)
        return blend(x, pattern, self.blend_ratio)
