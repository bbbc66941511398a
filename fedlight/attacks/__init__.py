"""Client-side attacks, one module each, registered by name in ``ATTACKS``."""

from fedlight.attacks.base import ATTACKS, Attack, scale_update

__all__ = ["ATTACKS", "Attack", "scale_update"]
