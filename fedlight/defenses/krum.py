"""``defense=krum``: Krum (Blanchard et al., NeurIPS 2017).

Multi-Krum with ``m = 1``: the single client whose update is closest to its
``n - f - 2`` nearest neighbours becomes the global model (FedAvg of one reply),
as Flower's ``Krum`` subclasses its ``MultiKrum``. Every other client is flagged:
with one attacker among n clients, its false-positive rate is at least
``(n - 2) / (n - 1)`` by design; it is a selection rule, not a detector.
"""

from __future__ import annotations

from flwr.serverapp.strategy import Strategy

from fedlight.defenses.base import DefenseContext
from fedlight.defenses.multikrum import MultiKrum


class Krum(MultiKrum):
    """Keep the one most central client (``num_malicious_nodes`` as Multi-Krum)."""

    label = "Krum"

    def __init__(
        self,
        inner: Strategy,
        context: DefenseContext,
        num_malicious_nodes: int | None = None,
    ) -> None:
        super().__init__(
            inner,
            context,
            num_malicious_nodes=num_malicious_nodes,
            num_nodes_to_select=1,
        )
