"""``defense=rlr``: the robust learning rate (Ozdayi, Kantarcioglu, Gel, AAAI
2021, "Defending against backdoors in federated learning with robust learning
rate").

A backdoor needs directions in weight space that the honest clients do not
share. For every coordinate the server counts the signs of the clients' updates
``x_i = w_i - global``: where fewer than ``theta`` agree
(``|sum_i sign(x_i)| < theta``) its learning rate is ``-eta``, elsewhere
``+eta``, and the new global model is ``global + lr * aggregate`` (elementwise),
the aggregate being FedAvg of the updates. As in the authors' code
(``compute_robustLR``, ``agg_avg``) the vote counts one sign per client and the
average weighs each client by its example count; here that is the reported
count (their server knew the data sizes), so a boosted client buys weight in the
average but no extra vote. ``weighted=false`` averages equally, as BackFed does.

``theta`` defaults to ``max(4, 2 f)`` with ``f = server.max_attackers``: the
paper requires the threshold to exceed the number of corrupt agents (so they
alone can never carry a coordinate), a bound, not a setting; the authors' runs
(``src/runner.sh``) set 4 with 1 corrupt agent of 10 and 8 with 4 of 40, which
this rule gives. With 20 clients voting, ``f + 1`` = 2 would flip only the
coordinates where the signs split exactly in half. Above the round's number of
clients every coordinate would flip, which the config check refuses (and a
round with fewer replies asks for all of them to agree). Only learned weights
are voted on (the authors vote on ``model.parameters()``): BatchNorm's running
statistics get plain FedAvg and integer buffers keep the global model's value.
Excludes nobody: no scores; the weights are each client's share of the
aggregate. ``details.flipped`` is the fraction of voted coordinates whose
learning rate was ``-eta``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedlight.defenses.base import (
    DEFENSES,
    Defense,
    RoundInput,
    Verdict,
    assumed_attackers,
    to_record,
)
from fedlight.defenses.vectors import (
    average_shares,
    learned_mask,
    unflatten,
    update_matrix,
)
from fedlight.params import Params, RunFacts, fail, param


@dataclass
class RLRParams(Params):
    theta: int | None = param(
        None,
        low=1,
        doc="signs that must agree to keep +eta; null: max(4, 2 server.max_attackers)",
    )
    server_lr: float = param(
        1.0, low=0.0, low_open=True, doc="eta, the server learning rate"
    )
    weighted: bool = param(
        True, doc="average the updates by reported counts (the authors' code)"
    )

    def check(self, facts: RunFacts, key: str, owner: str) -> None:
        n = facts.clients_per_round
        if self.theta is not None and self.theta > n:
            fail(
                f"{key}.theta",
                self.theta,
                f"an integer in [1, {n}] (clients_per_round: above it every "
                "coordinate's learning rate flips)",
                owner,
            )


def robust_lr(updates: np.ndarray, theta: float, eta: float) -> np.ndarray:
    """Per coordinate of ``updates`` (clients, dim): ``-eta`` where
    ``|sum_i sign(x_i)| < theta``, else ``eta``."""
    agreement = np.abs(np.sign(updates).sum(axis=0))
    return np.where(agreement < theta, -eta, eta)


@DEFENSES.register("rlr", params=RLRParams, order=25, paper="Ozdayi et al., AAAI 2021")
class RLR(Defense):
    """Flip the server's learning rate where too few update signs agree."""

    params: RLRParams

    def theta(self) -> int:
        """The agreement threshold: the param, else ``max(4, 2 max_attackers)``
        (the authors' settings)."""
        if self.params.theta is not None:
            return self.params.theta
        return max(4, 2 * assumed_attackers(None, self.context))

    def verdict(self, rnd: RoundInput) -> Verdict:
        keys, start, updates = update_matrix(rnd)
        counts = np.array([u.num_examples for u in rnd.updates], dtype=np.float64)
        shares = average_shares(counts, self.params.weighted)
        voted = learned_mask(rnd.global_numpy, keys)
        # a round with fewer replies than theta (failures, sampling) asks for
        # all of them to agree, not for more signs than exist (every coordinate
        # would flip)
        theta, eta = min(self.theta(), len(rnd.updates)), self.params.server_lr
        lr = np.ones(start.size)  # running statistics: plain FedAvg
        lr[voted] = robust_lr(updates[:, voted], theta, eta)
        new = start + lr * (shares @ updates)
        flipped = float((lr[voted] < 0).mean()) if voted.any() else 0.0
        return Verdict(
            weights=dict(zip(rnd.ids, shares.tolist(), strict=True)),
            model=to_record(unflatten(new, rnd.global_numpy, keys)),
            details={"theta": theta, "flipped": flipped},
        )
