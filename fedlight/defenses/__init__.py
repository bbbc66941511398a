"""Server-side defences, one module each, registered by name in ``DEFENSES``."""

from fedlight.defenses.base import (
    DEFENSES,
    ClientUpdate,
    Defense,
    DefenseContext,
    RoundInput,
    Verdict,
)

__all__ = [
    "DEFENSES",
    "ClientUpdate",
    "Defense",
    "DefenseContext",
    "RoundInput",
    "Verdict",
]
