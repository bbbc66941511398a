"""Client-side attacks, one module each; ``attack=`` names the config file."""

from fedlight.attacks.backdoor import Backdoor, stamp_trigger
from fedlight.attacks.base import Attack
from fedlight.attacks.broken import BrokenUpdate
from fedlight.attacks.label_flip import LabelFlip
from fedlight.attacks.none import NoAttack

__all__ = [
    "Attack",
    "Backdoor",
    "BrokenUpdate",
    "LabelFlip",
    "NoAttack",
    "stamp_trigger",
]
