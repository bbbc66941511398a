"""``defense=centered_clipping``: centered clipping (Karimireddy, He, Jaggi, ICML
2021, "Learning from history for Byzantine robust optimization").

The clients' updates ``x_i = w_i - global`` are clipped around a centre ``v``
rather than around 0: starting from ``v_0``, the server's previous aggregate,
``iterations`` times ``v <- v + (1/n) sum_i clip_tau(x_i - v)`` with
``clip_tau(z) = z * min(1, tau / ||z||)``; the new global model is
``global + v``. Whatever its norm or count, one client moves ``v`` by at most
``tau / n`` per iteration. ``v_0`` is the history the title refers to: the
authors' ``Clipping`` aggregator keeps its last output (``self.momentum``,
zero before the first round) across calls, and so does this defence, in its
state, for resume. The paper clips the workers' momentum vectors of SGD; a
client's multi-step update plays that role here, as in FLPoison and Blades.
One iteration is the authors' default (``n_iter=1``).

The clients count equally, as the paper averages (a count boost buys nothing).
The paper fixes ``tau``; with ``tau`` null it is the median of the round's
``||x_i - v_0||``, a choice that needs no tuning per model or round (half the
clients are clipped in the first iteration). Excludes nobody: no scores. The
weights are each client's coefficient in the final ``v``, followed linearly
through the iterations (``v = a v_0 + sum_i b_i x_i``) as shares ``b_i / sum b``:
a far client that was clipped gets a small share. Only float weights are
clipped; integer buffers keep the global model's value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedlight.defenses.base import (
    DEFENSES,
    Defense,
    DefenseContext,
    RoundInput,
    Verdict,
    to_record,
)
from fedlight.defenses.vectors import unflatten, update_matrix
from fedlight.params import Params, param


@dataclass
class CenteredClippingParams(Params):
    tau: float | None = param(
        None,
        low=0.0,
        low_open=True,
        doc="the clipping radius; null: the round's median ||x_i - v_0||",
    )
    iterations: int = param(1, low=1, doc="clipping iterations L (the authors': 1)")


def clip_scales(diffs: np.ndarray, tau: float) -> np.ndarray:
    """``min(1, tau / ||z||)`` per row of ``diffs`` (1 for a zero row)."""
    norms = np.linalg.norm(diffs, axis=1)
    scales = np.ones(len(norms))
    far = norms > tau
    scales[far] = tau / norms[far]
    return scales


def centered_clip(
    updates: np.ndarray, start: np.ndarray, tau: float, iterations: int
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Centered clipping of ``updates`` (clients, dim) from ``start`` = ``v_0``.

    Returns ``v``, and ``a``, ``b`` with ``v = a v_0 + b @ updates``, and the
    last iteration's clip scales.
    """
    n = len(updates)
    v, a, b = start.copy(), 1.0, np.zeros(n)
    scales = np.ones(n)
    for _ in range(iterations):
        scales = clip_scales(updates - v, tau)
        v = v + (scales @ (updates - v)) / n
        keep = 1.0 - scales.sum() / n
        a, b = a * keep, b * keep + scales / n
    return v, a, b, scales


@DEFENSES.register(
    "centered_clipping",
    params=CenteredClippingParams,
    order=20,
    paper="Karimireddy et al., ICML 2021",
)
class CenteredClipping(Defense):
    """Clip the updates around the last aggregate and average them."""

    params: CenteredClippingParams

    def __init__(self, params: CenteredClippingParams, context: DefenseContext) -> None:
        super().__init__(params, context)
        self.momentum: np.ndarray | None = None  # v of the last round

    def state_dict(self) -> dict[str, Any]:
        if self.momentum is None:
            return {}
        return {"momentum": torch.from_numpy(self.momentum.copy())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "momentum" in state:
            self.momentum = state["momentum"].numpy().astype(np.float64)

    def start(self, dim: int) -> np.ndarray:
        """``v_0``: the last round's aggregate, zero before the first."""
        if self.momentum is None:
            return np.zeros(dim)
        if self.momentum.size != dim:
            raise ValueError(
                f"centered_clipping: the saved momentum has {self.momentum.size} "
                f"values, the model {dim}"
            )
        return self.momentum

    def verdict(self, rnd: RoundInput) -> Verdict:
        keys, origin, updates = update_matrix(rnd)
        v0 = self.start(origin.size)
        tau = self.params.tau
        if tau is None:
            tau = float(np.median(np.linalg.norm(updates - v0, axis=1)))
        v, a, b, scales = centered_clip(updates, v0, tau, self.params.iterations)
        self.momentum = v
        shares = b / b.sum()
        return Verdict(
            weights=dict(zip(rnd.ids, shares.tolist(), strict=True)),
            model=to_record(unflatten(origin + v, rnd.global_numpy, keys)),
            details={
                "tau": tau if math.isfinite(tau) else None,
                "history_weight": a,
                "clipped": [c for c, s in zip(rnd.ids, scales, strict=True) if s < 1],
            },
        )
