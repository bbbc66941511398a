"""``defense=foolsgold``: FoolsGold (Fung, Yoon, Beschastnikh, RAID 2020, "The
limitations of federated learning in sybil settings").

Sybils that pursue one poisoning goal send updates that point the same way
round after round, while honest clients, each with its own data, differ.
FoolsGold keeps every client's history ``H_i``, the sum of its updates
``w_i - global`` over the rounds it took part in, and per round (Algorithm 1):

1. ``cs`` = cosine similarity of the histories of the round's participants,
   ``v_i = max_j cs_ij`` over the others;
2. pardoning: ``cs_ij *= v_i / v_j`` where ``v_j > v_i`` (an honest client that
   merely resembles a sybil is not punished for the sybil's similarity);
3. ``alpha_i = 1 - max_j cs_ij`` clipped to [0, 1], ``alpha /= max(alpha)``,
   ``alpha = 0.99`` where it is 1;
4. ``alpha = kappa * (ln(alpha / (1 - alpha)) + 0.5)`` clipped to [0, 1]
   (``kappa``, default 1, is the paper's confidence parameter).

Two identical sybils have ``cs = 1``, so ``alpha = 0``: weight 0. The weights
are ``alpha`` and the server's FedAvg averages the models with them (all 0:
the global model is kept).

As built, and where it deviates:

- The cosine matrix has its diagonal set to 0 as the authors' code does
  (``cs - I``), so ``v_i >= 0``; with the paper's literal ``max`` over the
  others a client dissimilar to all (negative ``v_i``) would have its negative
  similarities flipped positive by pardoning. A zero history has similarity 0
  with every other. Non-finite logits: ``-inf`` (alpha 0) becomes 0 and
  ``+inf`` 1, as in the authors' code; NaN (which the steps above cannot
  produce) 0.
  ``1 - max cs`` below 1e-9 counts as 0: the cosine of two identical float
  vectors can come out as 1 - 2e-16, which the rescaling by ``max(alpha)``
  would blow up to 1 when every client is a sybil.
- FoolsGold ignores the reported example counts (the paper weights updates by
  ``alpha`` only): a 20x boosted count buys nothing. The paper adds
  ``sum_i alpha_i * update_i`` to the model; the server's FedAvg normalises by
  ``sum_i alpha_i``, so the step length does not grow with the number of
  clients the defence trusts.
- ``features``: ``all`` (default) compares histories over every float weight,
  the paper's definition; ``output`` compares only the output layer's weight
  matrix (the last float array with two or more dimensions, every float array
  if there is none), as the authors' deep-learning code does (``grads[-2]``) to
  stay cheap on large models. Our ConvNet has 62k weights, so the full vector
  costs nothing, and a pixel-trigger backdoor also changes the convolutions.
  The paper's feature-importance weighting of the output layer is not built.
- Similarities are taken among this round's participants only (the authors'
  code compares all clients' memories and reads off the participants'); the
  history of a client that sits a round out is kept and grows when it returns.

Scores are ``1 - alpha``; ``flagged`` are the clients with ``alpha == 0``,
those FoolsGold excludes from the round's average.
"""

from __future__ import annotations

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
)
from fedlight.defenses.vectors import flatten, float_keys
from fedlight.params import Params, param

FEATURES = ("all", "output")
ROUND_OFF = 1e-9  # 1 - cos below this is float round-off of identical vectors


@dataclass
class FoolsGoldParams(Params):
    features: str = param(
        "all",
        choices=FEATURES,
        doc="all float weights (the paper) or the output layer only (authors' code)",
    )
    kappa: float = param(
        1.0, low=0.0, low_open=True, doc="confidence: the scale of the logit"
    )


def feature_keys(arrays: dict[str, np.ndarray], features: str) -> list[str]:
    """The keys compared: every float array, or the output layer's weights (the
    last float array of two or more dimensions; every float array if none)."""
    keys = float_keys(arrays)
    if features == "output":
        matrices = [k for k in keys if np.asarray(arrays[k]).ndim >= 2]
        if matrices:
            return matrices[-1:]
    return keys


def cosine_matrix(rows: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of ``rows``; a zero row is similar to nothing."""
    norms = np.linalg.norm(rows, axis=1)
    safe = np.where(norms > 0, norms, 1.0)
    unit = rows / safe[:, None]
    return unit @ unit.T


def foolsgold_weights(histories: np.ndarray, kappa: float = 1.0) -> np.ndarray:
    """FoolsGold's ``alpha`` for each row of ``histories`` (clients, features)."""
    n = len(histories)
    cs = cosine_matrix(histories) - np.eye(n)  # the diagonal 0, as the authors
    v = cs.max(axis=1)
    pardon = v[None, :] > v[:, None]  # v_j > v_i
    with np.errstate(divide="ignore", invalid="ignore"):
        cs = np.where(pardon, cs * v[:, None] / v[None, :], cs)
    alpha = np.clip(1.0 - cs.max(axis=1), 0.0, 1.0)
    alpha[alpha < ROUND_OFF] = 0.0  # identical histories: cos 1 - 2e-16 is 1
    if alpha.max() > 0:
        alpha = alpha / alpha.max()
    alpha[alpha == 1.0] = 0.99
    with np.errstate(divide="ignore", invalid="ignore"):
        logit = kappa * (np.log(alpha / (1.0 - alpha)) + 0.5)
    logit = np.nan_to_num(logit, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(logit, 0.0, 1.0)


@DEFENSES.register(
    "foolsgold",
    params=FoolsGoldParams,
    order=45,
    paper="Fung, Yoon, Beschastnikh, RAID 2020",
)
class FoolsGold(Defense):
    """Down-weight clients whose update histories point the same way (sybils)."""

    params: FoolsGoldParams

    def __init__(self, params: Params, context: DefenseContext) -> None:
        super().__init__(params, context)
        self.history: dict[str, np.ndarray] = {}

    def state_dict(self) -> dict[str, Any]:
        return {"history": {c: torch.from_numpy(h) for c, h in self.history.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = {
            str(c): np.asarray(h, dtype=np.float64)
            for c, h in state.get("history", {}).items()
        }

    def remember(self, rnd: RoundInput) -> np.ndarray:
        """Add the round's updates to the histories; the participants' rows."""
        keys = feature_keys(rnd.global_numpy, self.params.features)
        start = flatten(rnd.global_numpy, keys)
        for u in rnd.updates:
            update = flatten(u.numpy, keys) - start
            previous = self.history.get(u.cid)
            if previous is not None and previous.shape != update.shape:
                raise ValueError(
                    f"client {u.cid}: history of {previous.size} features, "
                    f"update of {update.size}"
                )
            self.history[u.cid] = update if previous is None else previous + update
        return np.stack([self.history[c] for c in rnd.ids])

    def verdict(self, rnd: RoundInput) -> Verdict:
        alpha = foolsgold_weights(self.remember(rnd), self.params.kappa)
        weights = dict(zip(rnd.ids, alpha.tolist(), strict=True))
        return Verdict(
            weights=weights,
            flagged=[c for c, a in weights.items() if a == 0.0],
            scores={c: 1.0 - a for c, a in weights.items()},
            details={"features": self.params.features},
        )
