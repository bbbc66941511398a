"""``defense=median``: the coordinate-wise median (Yin, Chen, Ramchandran,
Bartlett, ICML 2018, "Byzantine-robust distributed learning: towards optimal
statistical rates").

Every weight of the global model is the median of the clients' values, so fewer
than half the clients cannot drag any coordinate outside the benign range. It
is an aggregation rule: Flower's ``FedMedian`` aggregates in place of ``inner``.
It ignores example counts (a boost buys nothing) and rejects no whole client, so
the report has no scores and no detection metrics.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedMedian, Strategy

from fedlight.defenses.base import DefenseContext, OwnRuleDefense


class Median(OwnRuleDefense):
    """Coordinate-wise median of the client models (Flower's ``FedMedian``)."""

    def __init__(self, inner: Strategy, context: DefenseContext) -> None:
        super().__init__(inner, context)
        self.rule = FedMedian()
