"""Client-side attacks, one module each; ``attack=`` names the config file."""

from fedlight.attacks.backdoor import Backdoor, stamp_trigger
from fedlight.attacks.base import Attack
from fedlight.attacks.label_flip import LabelFlip
from fedlight.attacks.none import NoAttack

__all__ = ["Attack", "Backdoor", "LabelFlip", "NoAttack", "stamp_trigger"]
