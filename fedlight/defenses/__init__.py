"""Server-side defences, one module each; ``defense=`` names the config file."""

from fedlight.defenses.base import DefenseContext, DefenseReport, DefenseStrategy
from fedlight.defenses.bulyan import Bulyan
from fedlight.defenses.feddefender import FedDefender
from fedlight.defenses.feddefender_robust import RobustFedDefender
from fedlight.defenses.krum import Krum
from fedlight.defenses.median import Median
from fedlight.defenses.multikrum import MultiKrum
from fedlight.defenses.none import NoDefense
from fedlight.defenses.normclip import NormClip
from fedlight.defenses.trimmed_mean import TrimmedMean

__all__ = [
    "Bulyan",
    "DefenseContext",
    "DefenseReport",
    "DefenseStrategy",
    "FedDefender",
    "Krum",
    "Median",
    "MultiKrum",
    "NoDefense",
    "NormClip",
    "RobustFedDefender",
    "TrimmedMean",
]
