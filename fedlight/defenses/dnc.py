"""``defense=dnc``: Divide-and-Conquer (Shejwalkar & Houmansadr, NDSS 2021,
"Manipulating the Byzantine: Optimizing model poisoning attacks and defenses for
federated learning").

DnC looks for the direction along which the clients' updates spread most and
removes the clients that stick out along it. Each of ``niters`` iterations (the
paper's Algorithm 2):

1. draw a random set of ``b`` coordinates (``subsample_dim``, the paper's
   10000; all of them when the model has fewer), sorted;
2. centre the sub-updates ``g_i[r]`` on their mean ``mu``;
3. take the top right singular vector ``v`` of the centred matrix (numpy SVD);
4. score each client ``s_i = <g_i[r] - mu, v>^2``;
5. keep the ``n - c*m`` clients with the lowest scores (``filter_frac`` c, the
   paper's 1.0; ``m`` = ``num_malicious_nodes``, null: ``server.max_attackers``;
   ``ceil(c*m)`` are removed, at least one client is kept).

A client is good only if it was kept in *every* iteration (the intersection of
the kept sets), so more than ``c*m`` clients can go. The new model is the mean
of the good clients' models, the paper's mean of the good updates: removed
clients have weight 0, kept ones 1, or their reported counts with
``weighted=true``. Removed clients are flagged with score 1 (kept: 0). Should
no client pass every iteration (possible only when ``niters * ceil(c*m) >= n``),
every weight is 0 and the server keeps the global model.

Choices: the paper's inputs are gradients; ours are the updates ``w_i -
global`` (after centring, models and updates give the same scores). The
coordinates are drawn from a generator seeded by run seed and round. Ties in
the scores (e.g. identical updates) are broken by client order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedlight.defenses.base import (
    DEFENSES,
    Defense,
    RoundInput,
    Verdict,
    assumed_attackers,
    check_bound,
    selection_weights,
)
from fedlight.defenses.vectors import update_matrix
from fedlight.params import Params, RunFacts, param
from fedlight.seeding import derive_seed


@dataclass
class DnCParams(Params):
    num_malicious_nodes: int | None = param(
        None, low=0, doc="m, the attackers assumed; null: server.max_attackers"
    )
    filter_frac: float = param(
        1.0, low=0.0, doc="c: each iteration removes ceil(c * m) clients"
    )
    niters: int = param(5, low=1, doc="iterations; a client must pass every one")
    subsample_dim: int = param(
        10000, low=1, doc="b, coordinates drawn per iteration (all if fewer)"
    )
    weighted: bool = param(
        False, doc="average the kept clients by reported counts (paper: equally)"
    )

    def check(self, facts: RunFacts, key: str, owner: str) -> None:
        check_bound(self.num_malicious_nodes, facts, key, owner)


def outlier_scores(sub: np.ndarray) -> np.ndarray:
    """``<g_i - mu, v>^2`` for each row ``g_i`` of ``sub`` (clients, coords),
    ``v`` the top right singular vector of the centred rows."""
    centred = sub - sub.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return (centred @ vt[0]) ** 2


def dnc_kept(
    updates: np.ndarray, subsets: list[np.ndarray], num_keep: int
) -> tuple[np.ndarray, list[list[int]]]:
    """The clients kept in every iteration (a mask) and the indices each
    iteration removed; iteration ``t`` scores the coordinates ``subsets[t]``."""
    kept = np.ones(len(updates), dtype=bool)
    removed = []
    for coords in subsets:
        order = np.argsort(outlier_scores(updates[:, coords]), kind="stable")
        kept[order[num_keep:]] = False
        removed.append(sorted(order[num_keep:].tolist()))
    return kept, removed


def draw_subsets(
    dim: int, size: int, niters: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """``niters`` sorted random sets of ``size`` coordinates (all if fewer)."""
    if size >= dim:
        return [np.arange(dim)] * niters
    return [np.sort(rng.choice(dim, size=size, replace=False)) for _ in range(niters)]


@DEFENSES.register(
    "dnc", params=DnCParams, order=55, paper="Shejwalkar & Houmansadr, NDSS 2021"
)
class DnC(Defense):
    """Remove clients that stick out along the top singular direction."""

    params: DnCParams

    @property
    def num_malicious(self) -> int:
        return assumed_attackers(self.params.num_malicious_nodes, self.context)

    def num_keep(self, n: int) -> int:
        """``n - ceil(c * m)`` clients kept per iteration, at least one."""
        removed = math.ceil(self.params.filter_frac * self.num_malicious - 1e-9)
        return min(n, max(1, n - removed))

    def verdict(self, rnd: RoundInput) -> Verdict:
        _, _, updates = update_matrix(rnd)
        p = self.params
        rng = np.random.default_rng(
            derive_seed(self.context.seed, "dnc", rnd.server_round)
        )
        subsets = draw_subsets(updates.shape[1], p.subsample_dim, p.niters, rng)
        keep = self.num_keep(len(updates))
        kept, removed = dnc_kept(updates, subsets, keep)
        ids = rnd.ids
        good = {cid for cid, ok in zip(ids, kept, strict=True) if ok}
        counts = rnd.counts() if p.weighted else dict.fromkeys(ids, 1.0)
        return Verdict(
            weights=selection_weights(counts, good),
            flagged=[cid for cid in ids if cid not in good],
            scores={cid: 0.0 if cid in good else 1.0 for cid in ids},
            details={
                "num_malicious_nodes": self.num_malicious,
                "kept_per_iteration": keep,
                "subsample_dim": len(subsets[0]),
                "removed_per_iteration": [[ids[i] for i in r] for r in removed],
            },
        )
