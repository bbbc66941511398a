"""``defense=rfa``: robust federated aggregation by the geometric median
(Pillutla, Kakade, Harchaoui, IEEE TSP 2022, "Robust aggregation for federated
learning").

The global model becomes the weighted geometric median of the client models,
the point minimising the weighted sum of Euclidean distances to them, found by
the smoothed Weiszfeld algorithm: start at the weighted mean, then repeat
``v <- sum_i b_i w_i / sum_i b_i`` with ``b_i = a_i / max(nu, ||v - w_i||)``.
Each step is a weighted average, so the verdict is just the last step's
weights ``b_i`` and the server's FedAvg computes the iterate: a far-away
(scaled or backdoored) model's ``a_i`` is divided by its distance. ``a_i`` are
the reported example counts (the paper's data-size weights) or, with
``weighted=false``, equal. Count weights trust what a client reports: a client
with more than half the reported mass *is* the weighted median, and a 20x count
among 20 clients (20 of 39) pulls it most of the way (the zoo's mnist_20:
attacker weight 0.95, ASR 1.0). The median is taken of the models; it equals the
global model plus the geometric median of the updates. Rejects no whole client:
no scores, no detection metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedlight.defenses.base import DEFENSES, Defense, RoundInput, Verdict
from fedlight.params import Params, param


@dataclass
class RFAParams(Params):
    max_iter: int = param(4, low=1, doc="Weiszfeld iterations at most")
    nu: float = param(
        1e-6, low=0.0, low_open=True, doc="smoothing: distances below nu count as nu"
    )
    ftol: float = param(
        1e-6, low=0.0, doc="stop when the objective improves by less (relative)"
    )
    weighted: bool = param(True, doc="weight clients by their reported counts")


def weiszfeld_weights(
    points: np.ndarray, alphas: np.ndarray, max_iter: int, nu: float, ftol: float
) -> tuple[np.ndarray, int]:
    """The weights ``b`` whose weighted mean of ``points`` (clients, dim) is the
    last smoothed-Weiszfeld iterate, and the number of iterations run."""
    alphas = alphas / alphas.sum()
    median = alphas @ points
    weights = alphas
    objective = float(alphas @ np.linalg.norm(points - median, axis=1))
    for step in range(1, max_iter + 1):
        distances = np.linalg.norm(points - median, axis=1)
        weights = alphas / np.maximum(nu, distances)
        median = (weights / weights.sum()) @ points
        new = float(alphas @ np.linalg.norm(points - median, axis=1))
        if abs(objective - new) <= ftol * max(new, nu):
            return weights, step
        objective = new
    return weights, max_iter


def geometric_median_shares(points: np.ndarray) -> np.ndarray:
    """Each row's share (summing to 1) of the unweighted geometric median of
    ``points`` (clients, dim), run to convergence (up to 100 Weiszfeld steps,
    not the paper's 4): the median itself is wanted, not a few steps towards it."""
    weights, _ = weiszfeld_weights(
        points, np.ones(len(points)), max_iter=100, nu=1e-6, ftol=1e-6
    )
    return weights / weights.sum()


@DEFENSES.register(
    "rfa", params=RFAParams, order=75, paper="Pillutla et al., IEEE TSP 2022"
)
class RFA(Defense):
    """The geometric median of the client models (smoothed Weiszfeld)."""

    params: RFAParams

    def verdict(self, rnd: RoundInput) -> Verdict:
        keys = [k for k, v in rnd.global_numpy.items() if v.dtype.kind == "f"]
        points = np.stack(
            [
                np.concatenate([u.numpy[k].ravel() for k in keys]).astype(np.float64)
                for u in rnd.updates
            ]
        )
        counts = np.array([u.num_examples for u in rnd.updates], dtype=np.float64)
        alphas = counts if self.params.weighted else np.ones_like(counts)
        p = self.params
        weights, steps = weiszfeld_weights(points, alphas, p.max_iter, p.nu, p.ftol)
        return Verdict(
            weights=dict(zip(rnd.ids, weights.tolist(), strict=True)),
            details={"iterations": steps},
        )
