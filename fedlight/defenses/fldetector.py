"""``defense=fldetector``: FLDetector (Zhang, Cao, Jia, Gong, KDD 2022,
"FLDetector: Defending federated learning against model poisoning attacks via
detecting malicious clients").

A benign client's update is a smooth function of the global model, so the
server can predict it from the client's previous update: by the mean value
theorem ``g_i^t ~ g_i^{t-1} + H_t (w_t - w_{t-1})``, with the Hessian-vector
product ``H_t v`` from the L-BFGS approximation built on the last ``N`` global
model differences ``dW`` and global update differences ``dG`` (the paper's
Algorithm 1, the compact representation of Byrd, Nocedal and Schnabel, as the
authors' ``lbfgs``). A malicious client whose updates do not follow its own
history lands far from its prediction. Per round:

1. ``d_i = ||ghat_i - g_i||``, normalised ``d / ||d||_1`` over the clients
   predicted this round;
2. suspicion ``s_i`` = the mean of the client's last ``N`` normalised
   distances;
3. the gap statistic (Tibshirani, Walther, Hastie 2001) on the suspicions
   decides whether they form more than one cluster; if so, k-means with two
   clusters (sklearn ``KMeans``) splits them and the cluster with the larger
   mean suspicion is malicious: flagged, weight 0. Else nobody is flagged.

The server state (``state_dict``): the last global model vector and global
update, the ``N`` latest pairs ``(dW, dG)``, each client's last update (with
the global model it was taken at) and its last ``N`` normalised distances.

As built, and where it deviates:

- ``g_i = w_i - global``: the paper predicts gradients, our clients return
  models after several local epochs. The update is the same smooth function of
  the global model, so the prediction carries over; the global update ``G_t``
  is the aggregate the server applies (of the kept clients, by
  ``aggregation``), as the authors' code records its aggregated gradient.
- When detection starts: a prediction needs one ``(dW, dG)`` pair, i.e. global
  models and updates of two earlier rounds, and the client's previous update:
  with every client every round, distances start in round 3. Flagging starts
  after ``warmup`` rounds (default 2: from round 3, on the one distance there
  is; the suspicion averages the distances there are, up to ``N``). The
  authors' code predicts after 30 iterations and clusters once 11 rounds of
  distances exist, more than our 15-round runs have. Before detection: the
  aggregation rule over everyone, nobody flagged, no scores (so those rounds
  have no detection metrics, rather than counting the attackers as missed).
- Clients that skip rounds: the prediction uses the client's last update from
  round ``r`` and the global model it started from, ``g_i^r + H (w_t - w_r)``
  (the paper assumes every client every round, where ``r = t - 1``); an update
  more than ``N`` rounds old is dropped and the client counts as new. A new
  client (no previous update) gets no distance: score 0, never flagged, in the
  average until it has history. A client's suspicion averages its own last
  ``N`` distances, whichever rounds they came from.
- The paper removes the detected clients for good and lets a Byzantine-robust
  rule learn the model from the rest; here the verdict is per round: a flagged
  client is left out of that round's aggregate and judged again next round.
- Aggregation of the others (``aggregation``): ``median`` (default), the
  coordinate-wise median (Yin et al. 2018), one of the Byzantine-robust rules
  the paper pairs FLDetector with and the one the authors' ``train_mnist.py``
  defaults to; ``mean`` with equal weights; ``fedavg`` with the reported
  counts, as fedlight's other filtering defences, under which a boosted count
  buys weight until its sender is flagged (more than half the aggregate for
  one 20x attacker of 20 in rounds 1-2).
- The gap statistic: suspicions scaled to [0, 1] as in the authors' code,
  ``references`` uniform samples on [0, 1] (seeded by run seed and round),
  ``Gap(k) = mean_b log W*_kb - log W_k`` (Tibshirani's definition; the
  authors' code takes ``log mean_b W*_kb``), the smallest ``k`` with
  ``Gap(k) >= Gap(k+1) - s_{k+1}`` (``max_k`` if none). ``W_k`` is the exact
  minimum within-cluster sum of squares of the 1-D values (dynamic
  programming), the optimum the authors' ``KMeans`` fits approximate.

Scores: ``s_i / max_j s_j`` over the round's participants (0 without history).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from fedlight.aggregation import rank_shares
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
from fedlight.seeding import derive_seed

AGGREGATIONS = ("fedavg", "mean", "median")
TINY = 1e-12  # the floor of a within-cluster dispersion (k = distinct values: 0)
SAME = 1e-9  # values closer than this (relative) differ by round-off only


@dataclass
class FLDetectorParams(Params):
    window: int = param(
        10, low=1, doc="N: L-BFGS pairs kept and distances averaged per client"
    )
    warmup: int = param(
        2, low=2, doc="rounds without flagging: detection from round warmup + 1"
    )
    max_k: int = param(7, low=2, doc="gap statistic: clusters tried, 1..max_k")
    references: int = param(
        10, low=1, doc="gap statistic: uniform reference samples per k"
    )
    aggregation: str = param(
        "median",
        choices=AGGREGATIONS,
        doc="of the kept clients: fedavg (counts), mean (equal) or median",
    )


def lbfgs_hvp(s: np.ndarray, y: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``B v`` for the L-BFGS Hessian approximation ``B`` from the pairs
    ``y_k ~ H s_k`` (rows of ``s``, ``y``, oldest first) in compact form:
    ``B = sigma I - [sigma S, Y] M^-1 [sigma S^T; Y^T]``,
    ``M = [[sigma S^T S, L], [L^T, -D]]``, ``sigma = y_m.s_m / s_m.s_m``."""
    m = len(s)
    sy = s @ y.T  # (i, j): s_i . y_j
    lower = np.tril(sy, -1)
    sigma = float(y[-1] @ s[-1]) / float(s[-1] @ s[-1])
    middle = np.block([[sigma * (s @ s.T), lower], [lower.T, -np.diag(np.diag(sy))]])
    rhs = np.concatenate([sigma * (s @ v), y @ v])
    try:
        q = np.linalg.solve(middle, rhs)
    except np.linalg.LinAlgError:  # dependent pairs: the least-squares solution
        q = np.linalg.lstsq(middle, rhs, rcond=None)[0]
    return sigma * v - (sigma * (s.T @ q[:m]) + y.T @ q[m:])


def dispersions(values: np.ndarray, max_k: int) -> np.ndarray:
    """``W_k`` for k = 1..max_k: the least within-cluster sum of squares of the
    1-D ``values`` split into k clusters (exact: clusters of sorted values are
    contiguous, so dynamic programming over the split points finds it)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = len(x)
    p1 = np.concatenate([[0.0], np.cumsum(x)])
    p2 = np.concatenate([[0.0], np.cumsum(x * x)])
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    size = j - i + 1
    total = p1[j + 1] - p1[i]
    cost = np.where(
        size > 0, p2[j + 1] - p2[i] - total**2 / np.maximum(size, 1), np.inf
    )
    cost = np.where(size > 0, np.maximum(cost, 0.0), np.inf)  # cost[i, j]: x[i..j]
    best = cost[0].copy()  # best[j]: x[0..j] in k clusters
    out = [best[-1]]
    for _ in range(2, max_k + 1):
        # The last cluster is x[i..j], i >= 1, after x[0..i-1] in k - 1 clusters.
        best = np.min(best[:-1, None] + cost[1:], axis=0, initial=np.inf)
        best = np.concatenate([[np.inf], best[1:]])
        out.append(best[-1])
    return np.array(out)


def gap_statistic(
    values: np.ndarray, max_k: int, references: int, rng: np.random.Generator
) -> tuple[int, list[float]]:
    """The number of clusters the gap statistic picks for 1-D ``values`` and the
    gaps; 1 when there is nothing to compare: fewer than three values, fewer
    than two distinct ones, or values equal up to round-off (the statistic is
    scale-free: it would read structure into the last bits)."""
    x = np.asarray(values, dtype=np.float64)
    k_most = min(max_k, len(np.unique(x)), len(x) - 1)
    if k_most < 2 or np.ptp(x) <= SAME * np.abs(x).max():
        return 1, []
    x = (x - x.min()) / (x.max() - x.min())
    log_w = np.log(np.maximum(dispersions(x, k_most), TINY))
    samples = rng.uniform(size=(references, len(x)))
    log_ref = np.log(np.maximum([dispersions(r, k_most) for r in samples], TINY))
    gaps = log_ref.mean(axis=0) - log_w
    spread = log_ref.std(axis=0) * np.sqrt(1.0 + 1.0 / references)
    for k in range(1, k_most):
        if gaps[k - 1] >= gaps[k] - spread[k]:
            return k, gaps.tolist()
    return k_most, gaps.tolist()


def split_high(values: np.ndarray, seed: int) -> np.ndarray:
    """Which of the 1-D ``values`` fall in the higher-mean cluster of KMeans(2).

    One OpenMP thread: on a few dozen values threads only cost (25x on a busy
    two-core machine)."""
    with threadpool_limits(limits=1, user_api="openmp"):
        kmeans = KMeans(n_clusters=2, n_init=10, random_state=seed)
        labels = kmeans.fit(values.reshape(-1, 1)).labels_
    high = int(values[labels == 1].mean() > values[labels == 0].mean())
    return labels == high


def median_of_kept(
    rnd: RoundInput,
    keys: list[str],
    start: np.ndarray,
    updates: np.ndarray,
    kept: np.ndarray,
) -> tuple[dict[str, float], np.ndarray, ArrayRecord]:
    """The coordinate-wise median of the kept clients: each client's share of
    it (0 for the others), the global update and the model (integer buffers:
    their median too, as Flower's FedMedian)."""
    chosen = [u.numpy for u, k in zip(rnd.updates, kept, strict=True) if k]
    step = np.median(updates[kept], axis=0)
    model = unflatten(start + step, rnd.global_numpy, keys)
    for key in rnd.global_numpy:
        if key not in keys:
            values = np.stack([np.asarray(c[key]) for c in chosen])
            model[key] = np.median(values, axis=0).astype(values.dtype)
    n = len(chosen)
    shares = iter(rank_shares(chosen, (n - 1) // 2, n // 2 + 1).tolist())
    weights = {
        c: next(shares) if k else 0.0 for c, k in zip(rnd.ids, kept, strict=True)
    }
    return weights, step, to_record(model)


@DEFENSES.register(
    "fldetector",
    params=FLDetectorParams,
    order=65,
    paper="Zhang, Cao, Jia, Gong, KDD 2022",
)
class FLDetector(Defense):
    """Flag clients whose updates stray from their L-BFGS-predicted updates."""

    params: FLDetectorParams

    def __init__(self, params: Params, context: DefenseContext) -> None:
        super().__init__(params, context)
        self.models: dict[int, np.ndarray] = {}  # global models still referenced
        self.last_round: int | None = None
        self.last_update: np.ndarray | None = None  # the global update then
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []  # (dW, dG)
        self.updates: dict[str, tuple[int, np.ndarray]] = {}  # round, g_i
        self.distances: dict[str, list[float]] = {}

    # -- state ---------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "models": {r: torch.from_numpy(m) for r, m in self.models.items()},
            "pairs_w": [torch.from_numpy(s) for s, _ in self.pairs],
            "pairs_g": [torch.from_numpy(y) for _, y in self.pairs],
            "update_rounds": {c: r for c, (r, _) in self.updates.items()},
            "updates": {c: torch.from_numpy(g) for c, (_, g) in self.updates.items()},
            "distances": {c: list(d) for c, d in self.distances.items()},
        }
        if self.last_round is not None and self.last_update is not None:
            state["last_round"] = self.last_round
            state["last_update"] = torch.from_numpy(self.last_update)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        def array(t: Any) -> np.ndarray:
            return np.asarray(t, dtype=np.float64)

        self.models = {int(r): array(m) for r, m in state.get("models", {}).items()}
        self.pairs = [
            (array(s), array(y))
            for s, y in zip(
                state.get("pairs_w", []), state.get("pairs_g", []), strict=True
            )
        ]
        rounds = state.get("update_rounds", {})
        self.updates = {
            str(c): (int(rounds[c]), array(g))
            for c, g in state.get("updates", {}).items()
        }
        self.distances = {
            str(c): [float(x) for x in d] for c, d in state.get("distances", {}).items()
        }
        self.last_round = state.get("last_round")
        last = state.get("last_update")
        self.last_update = None if last is None else array(last)

    # -- one round -----------------------------------------------------------

    def predicted_distances(
        self, start: np.ndarray, ids: list[str], updates: np.ndarray
    ) -> dict[str, float]:
        """``||ghat_i - g_i||`` of the clients with a usable previous update."""
        if not self.pairs:
            return {}
        s = np.stack([p[0] for p in self.pairs])
        y = np.stack([p[1] for p in self.pairs])
        products: dict[int, np.ndarray] = {}  # one H v per previous round
        out = {}
        for cid, g in zip(ids, updates, strict=True):
            if cid not in self.updates:
                continue
            then, previous = self.updates[cid]
            if then not in products:
                products[then] = lbfgs_hvp(s, y, start - self.models[then])
            out[cid] = float(np.linalg.norm(previous + products[then] - g))
        return out

    def remember_distances(self, distances: dict[str, float]) -> None:
        """Append the round's normalised distances to each client's window."""
        total = sum(distances.values())
        for cid, d in distances.items():
            share = d / total if total > 0 else 1.0 / len(distances)
            self.distances[cid] = [*self.distances.get(cid, []), share][
                -self.params.window :
            ]

    def detect(
        self, rnd: RoundInput, suspicion: dict[str, float]
    ) -> tuple[list[str], int | None]:
        """The flagged clients and the gap statistic's cluster count (None when
        detection is not on yet)."""
        if rnd.server_round <= self.params.warmup or len(suspicion) < 2:
            return [], None
        cids = list(suspicion)
        values = np.array([suspicion[c] for c in cids])
        rng = np.random.default_rng(
            derive_seed(self.context.seed, "fldetector", rnd.server_round)
        )
        clusters, _ = gap_statistic(
            values, self.params.max_k, self.params.references, rng
        )
        if clusters < 2:
            return [], clusters
        high = split_high(values, int(rng.integers(2**31)))
        return [c for c, h in zip(cids, high, strict=True) if h], clusters

    def aggregate(
        self,
        rnd: RoundInput,
        keys: list[str],
        start: np.ndarray,
        updates: np.ndarray,
        flagged: list[str],
    ) -> tuple[dict[str, float], np.ndarray, ArrayRecord | None]:
        """Weights, the global update G_t and (median only) the new model."""
        kept = np.array([c not in flagged for c in rnd.ids])
        if self.params.aggregation == "median":
            return median_of_kept(rnd, keys, start, updates, kept)
        fedavg = self.params.aggregation == "fedavg"
        base = np.array([u.num_examples if fedavg else 1.0 for u in rnd.updates])
        base = np.where(kept, base, 0.0)
        total = base.sum()
        step = base @ updates / total if total > 0 else np.zeros_like(start)
        return dict(zip(rnd.ids, base.tolist(), strict=True)), step, None

    def remember_round(
        self,
        server_round: int,
        start: np.ndarray,
        step: np.ndarray,
        ids: list[str],
        updates: np.ndarray,
    ) -> None:
        """Record the pair (dW, dG), the global model and update, the clients'
        updates; forget what has aged out of the window."""
        if self.last_round is not None and self.last_update is not None:
            dw = start - self.models[self.last_round]
            dg = step - self.last_update
            if np.all(np.isfinite(dw)) and np.all(np.isfinite(dg)) and dw @ dw > 0:
                self.pairs = [*self.pairs, (dw, dg)][-self.params.window :]
        self.models[server_round] = start
        self.last_round, self.last_update = server_round, step
        for cid, g in zip(ids, updates, strict=True):
            self.updates[cid] = (server_round, g)
        oldest = server_round + 1 - self.params.window
        self.updates = {c: (r, g) for c, (r, g) in self.updates.items() if r >= oldest}
        used = {r for r, _ in self.updates.values()} | {server_round}
        self.models = {r: m for r, m in self.models.items() if r in used}

    def verdict(self, rnd: RoundInput) -> Verdict:
        keys, start, updates = update_matrix(rnd)
        pairs = len(self.pairs)  # those the predictions use
        distances = self.predicted_distances(start, rnd.ids, updates)
        self.remember_distances(distances)
        suspicion = {
            c: float(np.mean(self.distances[c]))
            for c in rnd.ids
            if self.distances.get(c)
        }
        flagged, clusters = self.detect(rnd, suspicion)
        weights, step, model = self.aggregate(rnd, keys, start, updates, flagged)
        self.remember_round(rnd.server_round, start, step, rnd.ids, updates)
        top = max(suspicion.values(), default=0.0)
        scores = {c: suspicion.get(c, 0.0) / top if top > 0 else 0.0 for c in rnd.ids}
        return Verdict(
            weights=weights,
            flagged=flagged,
            # before detection starts nobody is judged: no detection metrics
            # (a recall of 0 would count rounds it cannot see as misses)
            scores=scores if clusters is not None else None,
            model=model,
            details={
                "detecting": clusters is not None,
                "clusters": clusters,
                "pairs": pairs,
                "suspicion": suspicion,
                # the raw ||ghat_i - g_i|| (before normalising), how well the
                # L-BFGS prediction predicts
                "distances": distances,
            },
        )
