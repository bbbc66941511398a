"""``defense=none``: plain FedAvg (McMahan et al., AISTATS 2017)."""

from __future__ import annotations

from fedlight.defenses.base import DEFENSES, Defense


@DEFENSES.register("none", order=0, paper="McMahan et al., AISTATS 2017 (FedAvg)")
class NoDefense(Defense):
    """FedAvg by reported example counts; scores nobody."""
