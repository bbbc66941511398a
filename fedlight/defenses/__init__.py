"""Server-side defences, one module each; ``defense=`` names the config file."""

from fedlight.defenses.base import DefenseContext, DefenseReport, DefenseStrategy
from fedlight.defenses.feddefender import FedDefender
from fedlight.defenses.none import NoDefense

__all__ = [
    "DefenseContext",
    "DefenseReport",
    "DefenseStrategy",
    "FedDefender",
    "NoDefense",
]
