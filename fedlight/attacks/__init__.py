"""Client-side attacks, one module each; ``attack=`` names the config file."""

from fedlight.attacks.backdoor import Backdoor, stamp_trigger
from fedlight.attacks.base import Attack, scale_update
from fedlight.attacks.blended import Blended
from fedlight.attacks.broken import BrokenUpdate
from fedlight.attacks.dba import DistributedBackdoor
from fedlight.attacks.label_flip import LabelFlip
from fedlight.attacks.none import NoAttack

__all__ = [
    "Attack",
    "Backdoor",
    "Blended",
    "BrokenUpdate",
    "DistributedBackdoor",
    "LabelFlip",
    "NoAttack",
    "scale_update",
    "stamp_trigger",
]
