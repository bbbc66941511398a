"""``defense=deepsight``: DeepSight (Rieger, Nguyen, Miettinen, Sadeghi, NDSS 2022,
"DeepSight: Mitigating backdoor attacks in federated learning through deep model
inspection").

DeepSight labels models by how their output layer changed, clusters them by what
their updates and outputs look like, drops every cluster where too many models
are suspicious, then clips the rest (the paper's Algorithm 1):

1. **NEUPs and Threshold Exceedings.** For output neuron ``i`` the update energy
   is ``e_i = |Δb_i| + sum_j |Δw_ij|`` (the output layer's bias and weight
   changes against the global model) and the normalised energy update is
   ``NEUP_i = e_i^2 / sum_k e_k^2``. Its Threshold Exceedings count the NEUPs
   above ``xi = max(0.01, 1/P) * max_k NEUP_k`` (``P`` output neurons). A
   backdoor concentrates the energy on few labels, hence few exceedings.
2. **Labels.** With the classification boundary ``median(TEs) / 2`` a model is
   suspicious when ``TE <= boundary`` (``<=`` as BackFed and FLPoison code it).
3. **Features.** DDifs: the client model ``W`` and the global model ``G`` run on
   ``num_samples`` random images per seed (``num_seeds`` seeds, the paper's 3);
   ``DDif_i = 1/N sum_x p_W(i|x) / p_G(i|x)`` with softmax probabilities ``p``,
   one vector per client and seed. The NEUP vectors. The cosine distances of the
   output-layer bias updates.
4. **Ensemble clustering.** HDBSCAN (``sklearn.cluster.HDBSCAN``) clusters each
   feature on its own: the precomputed cosine distances, the NEUPs and each
   seed's DDifs (Euclidean, as the peers' hdbscan default). Each clustering gives
   a distance matrix, 0 for two models in the same cluster and 1 otherwise (a
   noise point shares a cluster with nobody, as in BackFed);
   the DDif matrices are averaged over the seeds, then the three averaged; a
   final HDBSCAN on that matrix gives the clusters.
5. **Poisoned-cluster identification.** A cluster is accepted when its fraction
   of suspicious models is below ``tau`` (1/3); HDBSCAN's noise points are
   clusters of one, accepted exactly when not suspicious (as BackFed does;
   FLPoison drops every noise point).
6. **Clipping and aggregation.** Every accepted update ``w - global`` is clipped
   to the median L2 norm of all the round's updates; the server averages the
   clipped models equally, as the paper, BackFed and FLPoison do (``replaced`` +
   weights), so an attacker that passes the clustering gains nothing from a
   boosted example count; ``weighted=true`` averages by reported counts.

Scores are each client's cluster's suspicious fraction (a noise point: its own
label), so ``score >= tau`` exactly for the excluded clients, who are flagged.

Choices the paper leaves open or where we deviate:

- **Random inputs.** Each pixel uniform in [0, 1], normalised with the data's
  mean and std (the inputs FedDefender uses too, :func:`synthetic_inputs`), so
  the noise images live where the data does; the peers feed raw ``torch.rand``.
  Seeded per round and seed with ``derive_seed``.
- **N = 200 inputs per seed** (``num_samples``), not the peers' 20,000: the
  server runs this every round on its CPU, one forward of 3 x 200 images per
  client; the DDifs are noisier means, raise ``num_samples`` to trade time for
  it. The ratio is ``exp(log p_W - log p_G)``, exactly 1 for an unchanged model
  and without the peers' ``+ eps`` in the denominator; the log-ratio is capped
  at 100 so that ratios against near one-hot outputs stay finite.
- **HDBSCAN parameters.** ``min_cluster_size=2`` (two colluding attackers can form
  their own cluster, which the cluster vote needs) and ``allow_single_cluster``
  so that a round of similar benign models is one cluster rather than all
  noise (FLPoison allows it for the final clustering). BackFed keeps the
  hdbscan library defaults (``min_cluster_size=5``, no single cluster): on a
  constructed round of 17 similar models and 3 colluders those label every
  model noise, and the verdict falls back to the labels alone. ``min_samples``
  is HDBSCAN's default (``min_cluster_size``), capped at the number of clients.
- **Threshold details** follow FLPoison's code: ``xi = max(0.01, 1/P) * max
  NEUP`` and NEUPs strictly above it count (BackFed uses ``1/P * max NEUP`` and
  ``>=``); ``threshold_factor`` is the 0.01.
- **A model whose energy is all zero** (it returned the global model) has NEUPs
  0 and no Threshold Exceedings, so it is suspicious whenever the median is > 0.
- **No recognisable model.** The output layer is the last float weight/bias
  pair whose first dimension is ``num_classes`` (:func:`output_layer`). If the
  replies have none (e.g. flat test vectors), every float coordinate of the
  update counts as one output neuron's bias: NEUPs, TEs and bias cosines come
  from the whole flat update. If the global model does not load into
  ``context.model`` (strict), the DDifs are skipped and the ensemble averages
  the other two features. ``details`` records both (``output_layer``,
  ``ddifs``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.cluster import HDBSCAN
from sklearn.metrics import pairwise_distances
from sklearn.metrics.pairwise import cosine_distances

from fedlight.defenses.base import DEFENSES, Defense, RoundInput, Verdict, to_record
from fedlight.defenses.fingerprint import synthetic_inputs
from fedlight.defenses.normclip import clip, vector_norm
from fedlight.defenses.vectors import flatten, float_keys
from fedlight.models.zoo import build_model
from fedlight.params import Params, param
from fedlight.seeding import derive_seed


@dataclass
class DeepSightParams(Params):
    tau: float = param(
        1 / 3,
        low=0.0,
        high=1.0,
        low_open=True,
        doc="accept a cluster whose fraction of suspicious models is below tau",
    )
    num_seeds: int = param(3, low=1, doc="random input sets for the DDifs")
    num_samples: int = param(200, low=1, doc="random images per seed")
    threshold_factor: float = param(
        0.01,
        low=0.0,
        high=1.0,
        doc="NEUP threshold xi = max(threshold_factor, 1/P) * max NEUP",
    )
    min_cluster_size: int = param(2, low=2, doc="HDBSCAN's smallest cluster")
    weighted: bool = param(
        False, doc="average the accepted clients by reported counts (paper: equally)"
    )


# ------------------------------------------------------------- output layer
def output_layer(arrays: Mapping[str, np.ndarray], num_classes: int) -> str | None:
    """The prefix of the output layer: the last ``<prefix>weight`` (float, 2-D or
    more, first dimension ``num_classes``) whose ``<prefix>bias`` is a float
    vector of ``num_classes``; None when there is none."""
    found = None
    for key, weight in arrays.items():
        if not key.endswith("weight"):
            continue
        prefix = key[: -len("weight")]
        bias = arrays.get(prefix + "bias")
        weight = np.asarray(weight)
        if (
            bias is not None
            and weight.dtype.kind == "f"
            and weight.ndim >= 2
            and weight.shape[0] == num_classes
            and np.asarray(bias).dtype.kind == "f"
            and np.shape(bias) == (num_classes,)
        ):
            found = prefix
    return found


def layer_update(
    arrays: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    prefix: str | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The output layer's update ``(Δw as (P, fan_in), Δb as (P,))`` in float64;
    with no output layer (``prefix`` None) the flat float update as ``P`` biases
    without weights."""
    if prefix is None:
        keys = float_keys(reference)
        db = flatten(arrays, keys) - flatten(reference, keys)
        return np.zeros((db.size, 0)), db
    w, b = prefix + "weight", prefix + "bias"
    dw = np.asarray(arrays[w], np.float64) - np.asarray(reference[w], np.float64)
    db = np.asarray(arrays[b], np.float64) - np.asarray(reference[b], np.float64)
    return dw.reshape(dw.shape[0], -1), db


# ------------------------------------------------- NEUPs and threshold exceedings
def neups(dw: np.ndarray, db: np.ndarray) -> np.ndarray:
    """Normalised energy updates: ``e_i = |Δb_i| + sum_j |Δw_ij|``, then
    ``NEUP_i = e_i^2 / sum_k e_k^2`` (all 0 for a model without energy)."""
    energy = np.abs(db) + np.abs(dw).sum(axis=1)
    squared = energy**2
    total = squared.sum()
    return squared / total if total > 0 else np.zeros_like(squared)


def threshold_exceedings(neup: np.ndarray, factor: float) -> int:
    """The NEUPs above ``xi = max(factor, 1/P) * max NEUP`` (strictly)."""
    xi = max(factor, 1.0 / neup.size) * neup.max()
    return int((neup > xi).sum())


def suspicious_labels(tes: np.ndarray) -> np.ndarray:
    """True where ``TE <= median(TEs) / 2``, the classification boundary."""
    return tes <= np.median(tes) / 2.0


# --------------------------------------------------------------------- DDifs
LOG_RATIO_CAP = 100.0  # e^100: far past any ratio that matters, finite squared


def division_differences(
    model: torch.nn.Module,
    global_state: Mapping[str, torch.Tensor],
    states: list[Mapping[str, torch.Tensor]],
    inputs: torch.Tensor,
) -> np.ndarray:
    """DDifs (seeds, clients, classes): the mean over each seed's inputs
    (``inputs`` is (seeds, N, C, H, W)) of ``p_client / p_global`` per class.

    One forward per model over all seeds' inputs; the ratio is
    ``exp(log_softmax_client - log_softmax_global)``, so an unchanged model
    gives exactly 1, with the log-ratio capped at ``LOG_RATIO_CAP`` so that a
    scaled (boosted) model's ratios stay finite for the clustering.
    """
    seeds, n = inputs.shape[:2]
    batch = inputs.reshape(seeds * n, *inputs.shape[2:])

    def log_probs(state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        model.load_state_dict(state, strict=True)
        out = torch.log_softmax(model(batch), dim=1)
        return out.reshape(seeds, n, -1)

    model.eval()
    with torch.no_grad():
        base = log_probs(global_state)
        ratios = [
            torch.exp(
                (log_probs(s) - base).double().clamp(-LOG_RATIO_CAP, LOG_RATIO_CAP)
            ).mean(dim=1)
            for s in states
        ]
    return torch.stack(ratios, dim=1).numpy()


# ---------------------------------------------------------------- clustering
def hdbscan_labels(distances: np.ndarray, min_cluster_size: int) -> np.ndarray:
    """HDBSCAN's labels (-1 noise) on a precomputed distance matrix; a single
    cluster allowed, ``min_samples`` capped at the number of points."""
    n = distances.shape[0]
    if n < 2:
        return np.full(n, -1)
    return HDBSCAN(
        min_cluster_size=min_cluster_size,
        min_samples=min(min_cluster_size, n),
        metric="precomputed",
        allow_single_cluster=True,
        copy=True,
    ).fit_predict(np.clip(distances, 0.0, None))


def co_cluster_distances(labels: np.ndarray) -> np.ndarray:
    """0 for two models in the same cluster (and on the diagonal), else 1; a
    noise point (-1) shares a cluster with nobody."""
    same = (labels[:, None] == labels[None, :]) & (labels[:, None] >= 0)
    out = np.where(same, 0.0, 1.0)
    np.fill_diagonal(out, 0.0)
    return out


def ensemble_clusters(
    cosines: np.ndarray,
    neup_matrix: np.ndarray,
    ddifs: np.ndarray | None,
    min_cluster_size: int,
) -> np.ndarray:
    """The final clusters: each feature clustered alone, their co-cluster
    matrices averaged (DDifs first over the seeds), HDBSCAN on the average.

    A model that no view put in a cluster with any other is noise (judged by its
    own label, :func:`final_clusters`): HDBSCAN would merge such equidistant
    points into one cluster (every view all noise: one cluster of everybody,
    whose suspicious members a benign majority would carry).
    """

    def euclid(x: np.ndarray) -> np.ndarray:
        return pairwise_distances(x, metric="euclidean")

    views = [
        co_cluster_distances(hdbscan_labels(cosines, min_cluster_size)),
        co_cluster_distances(hdbscan_labels(euclid(neup_matrix), min_cluster_size)),
    ]
    if ddifs is not None:
        per_seed = [
            co_cluster_distances(hdbscan_labels(euclid(d), min_cluster_size))
            for d in ddifs
        ]
        views.append(np.mean(per_seed, axis=0))
    return final_clusters(np.mean(views, axis=0), min_cluster_size)


def final_clusters(combined: np.ndarray, min_cluster_size: int) -> np.ndarray:
    """HDBSCAN on the averaged co-cluster distances, a model at distance 1 from
    every other (no view clustered it with anybody) noise."""
    labels = hdbscan_labels(combined, min_cluster_size)
    alone = (combined + np.eye(len(combined)) >= 1.0).all(axis=1)
    return np.where(alone, -1, labels)


def cluster_suspicion(labels: np.ndarray, suspicious: np.ndarray) -> np.ndarray:
    """Each model's cluster's fraction of suspicious models; a noise point is a
    cluster of one (its own label)."""
    out = suspicious.astype(np.float64)
    for cluster in set(labels.tolist()) - {-1}:
        members = labels == cluster
        out[members] = suspicious[members].mean()
    return out


# --------------------------------------------------------------------- defence
@DEFENSES.register(
    "deepsight",
    params=DeepSightParams,
    order=78,
    paper="Rieger et al., NDSS 2022",
)
class DeepSight(Defense):
    """Drop clusters of backdoor-looking models, clip the rest to the median norm.

    The clusters come from the output layers' NEUPs, bias updates and DDifs.
    """

    params: DeepSightParams

    def noise(self, server_round: int) -> torch.Tensor:
        """The round's random images, (seeds, N, C, H, W)."""
        ctx, p = self.context, self.params
        return torch.stack(
            [
                synthetic_inputs(
                    p.num_samples,
                    tuple(ctx.input_shape),
                    ctx.mean,
                    ctx.std,
                    derive_seed(ctx.seed, "deepsight", server_round, seed),
                )
                for seed in range(p.num_seeds)
            ]
        )

    def ddifs(self, rnd: RoundInput) -> np.ndarray | None:
        """The DDifs, or None when the global model is not ``context.model``."""
        ctx = self.context
        model = build_model(ctx.model, ctx.num_classes, ctx.input_shape[0])
        try:
            model.load_state_dict(rnd.global_state, strict=True)
        except RuntimeError:
            return None
        states = [u.state for u in rnd.updates]
        return division_differences(
            model, rnd.global_state, states, self.noise(rnd.server_round)
        )

    def verdict(self, rnd: RoundInput) -> Verdict:
        p = self.params
        reference = {
            k: np.asarray(v, np.float64) if v.dtype.kind == "f" else v
            for k, v in rnd.global_numpy.items()
        }
        prefix = output_layer(reference, self.context.num_classes)
        layers = [layer_update(u.numpy, reference, prefix) for u in rnd.updates]
        neup_matrix = np.stack([neups(dw, db) for dw, db in layers])
        tes = np.array(
            [threshold_exceedings(row, p.threshold_factor) for row in neup_matrix]
        )
        suspicious = suspicious_labels(tes)
        cosines = cosine_distances(np.stack([db for _, db in layers]))
        ddifs = self.ddifs(rnd)
        labels = ensemble_clusters(cosines, neup_matrix, ddifs, p.min_cluster_size)
        suspicion = cluster_suspicion(labels, suspicious)
        accepted = suspicion < p.tau

        norms = [vector_norm(u.numpy, reference) for u in rnd.updates]
        bound = float(np.median(norms))
        weights, replaced, clipped = {}, {}, []
        for u, ok, norm in zip(rnd.updates, accepted, norms, strict=True):
            share = float(u.num_examples) if p.weighted else 1.0
            weights[u.cid] = share if ok else 0.0
            if ok and norm > bound:
                replaced[u.cid] = to_record(clip(u.numpy, reference, bound)[0])
                clipped.append(u.cid)
        ids = rnd.ids
        excluded = [c for c, ok in zip(ids, accepted, strict=True) if not ok]
        return Verdict(
            weights=weights,
            flagged=excluded,
            scores=dict(zip(ids, suspicion.tolist(), strict=True)),
            replaced=replaced,
            details={
                "output_layer": None if prefix is None else prefix.rstrip("."),
                "ddifs": ddifs is not None,
                "threshold_exceedings": dict(zip(ids, tes.tolist(), strict=True)),
                "classification_boundary": float(np.median(tes) / 2.0),
                "suspicious": [c for c, s in zip(ids, suspicious, strict=True) if s],
                "clusters": dict(zip(ids, labels.tolist(), strict=True)),
                "num_clusters": len(set(labels.tolist()) - {-1}),
                "excluded": excluded,
                "clip_norm": bound,
                "clipped": clipped,
            },
        )
