"""``defense=krum``: Krum (Blanchard et al., NeurIPS 2017).

Multi-Krum with ``m = 1``: the single client whose update is closest to its
``n - f - 2`` nearest neighbours becomes the global model, as Flower's ``Krum``
subclasses its ``MultiKrum``. Every other client is flagged: with one attacker
among n clients, its false-positive rate is at least ``(n - 2) / (n - 1)`` by
design; it is a selection rule, not a detector.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedlight.defenses.base import DEFENSES, check_bound
from fedlight.defenses.multikrum import PAPER, MultiKrum
from fedlight.params import Params, RunFacts, param


@dataclass
class KrumParams(Params):
    num_malicious_nodes: int | None = param(
        None, low=0, doc="f, the attackers assumed; null: server.max_attackers"
    )

    @property
    def num_nodes_to_select(self) -> int:
        return 1

    @property
    def weighted(self) -> bool:  # one client kept: it is the model either way
        return False

    def check(self, facts: RunFacts, key: str, owner: str) -> None:
        check_bound(self.num_malicious_nodes, facts, key, owner)


@DEFENSES.register("krum", params=KrumParams, order=30, paper=PAPER)
class Krum(MultiKrum):
    """Keep the one most central client."""
