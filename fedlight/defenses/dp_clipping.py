"""``defense=dp_fixed`` and ``defense=dp_adaptive``: central differential
privacy on the server, Flower's own DP strategy wrappers around Flower's
``FedAvg``.

``dp_fixed`` is DP-FedAvg (McMahan, Ramage, Talwar, Zhang, ICLR 2018, "Learning
differentially private recurrent language models") as Flower's
``DifferentialPrivacyServerSideFixedClipping``: every update ``w_i - global`` is
scaled down to L2 norm ``clipping_norm`` if longer, the clipped models are
averaged, and Gaussian noise of std ``noise_multiplier * clipping_norm / n`` is
added to every weight of the average (``n`` the round's participants). Backdoor
papers use it as "weak DP" (Sun, Kairouz, Suresh, McMahan, arXiv 1911.07963,
2019, "Can you really backdoor federated learning?"): clipping bounds what one
client can move, the noise blurs what little a backdoor adds. The defaults are
the weak DP of BackFed's WeakDP: clipping norm 5 (our ConvNet's benign updates
measure about 6.6 in round 1 and 3.5 to 4 from round 2 on, so only the first
round and outsized updates are clipped) and Sun et al.'s noise std 0.025 per
weight, which Flower's formula gives at 20 clients with
``noise_multiplier=0.1`` (0.017 at 30); it cost about one point of MNIST
accuracy in a 4-round probe. ``noise_multiplier=0`` is clipping only.

``dp_adaptive`` is adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy,
NeurIPS 2021, "Differentially private learning with adaptive clipping") as
Flower's ``DifferentialPrivacyServerSideAdaptiveClipping``: the same clipping
and noise, but the clipping norm follows a quantile of the update norms, ``C <-
C * exp(-clip_norm_lr * (b - target_clipped_quantile))`` with ``b`` the noised
fraction of updates left unclipped; Flower's defaults (quantile 0.5, rate 0.2,
count noise n/20) are the paper's, except the initial norm: Flower's (and the
paper's) 0.1 grows by at most exp(0.1) a round, to about 0.45 in our 15
rounds, far below the ConvNet's benign update norms (6.6 in round 1, 3.5-4
after, on MNIST), so every update would be shrunk to near nothing for the whole
run. fedlight starts at 5.0, dp_fixed's norm, and lets the quantile rule move
it from there. The norm is carried across rounds
(``state_dict``). ``noise_multiplier`` is the total one: Flower splits it
between the update noise and the count noise as the paper's Theorem 1 does.

Wiring. Flower's wrappers clip relative to ``current_arrays``, which their
``configure_train`` stores; the server sends the model itself, so each round
sets that attribute to the round's global model and calls ``aggregate_train``
on copies of the replies (Flower replaces the arrays of the messages it clips;
the server's replies stay untouched). The copies carry the float weights only:
Flower would count integer buffers (BatchNorm's ``num_batches_tracked``) into
the update norm, fail to scale them (a vector of them crashes) and add noise to
them, so they pass through unchanged from the global model. DP-FedAvg caps
every client's weight (``min(n_k / w_hat, 1)``) and Flower's noise ``z C / n``
assumes equal shares (its accounted mode refuses unequal weights), so the
copies' weight metric is 1 for everyone and a boosted example count buys
nothing; ``n`` is the number of copies; ``weighted=true`` weights by the reported
counts as plain FedAvg does, which voids the privacy calibration. The verdict's
weights are those shares of the average (the noise comes on top). Flower draws
its noise from numpy's global generator: it is seeded from ``derive_seed(seed,
name, round)`` for the call and its previous state restored after, so a run
is reproducible per seed and round.

Deviations, all where Flower 1.42 cannot run the paper's rule as is:

* Flower's adaptive rule counts the *clipped* updates and puts that fraction
  where the paper has the unclipped one, so its norm shrinks when every update
  is clipped and grows when none is (away from the target quantile). A
  one-method subclass gives Flower's update the unclipped fraction, the
  paper's ``b``; everything else is Flower's. Flower scales the noise with the
  norm after that update, not the one it clipped with; that stays.
* An update equal to the global model (norm 0) makes Flower's clipping divide
  by zero; such a client is left out (weight 0, listed as ``held_out``): it
  would add nothing but a share of the denominator.
* ``dp_adaptive``'s count noise n/20 with fewer replies than planned can fall
  below what ``noise_multiplier`` needs (Flower refuses ``z >= 2 sigma_b``);
  that round uses ``sigma_b = noise_multiplier`` instead of stopping the run.

Neither excludes a client: no scores, no detection metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
)
from flwr.supercore.differential_privacy import compute_stdv, get_norm

from fedlight.defenses.base import (
    DEFENSES,
    Defense,
    DefenseContext,
    RoundInput,
    Verdict,
    to_record,
)
from fedlight.defenses.vectors import float_keys
from fedlight.params import Params, RunFacts, fail, param
from fedlight.seeding import derive_seed

DP_WEIGHT = "dp-weight"  # the weight metric of the copies Flower's FedAvg reads


@dataclass
class DPFixedParams(Params):
    noise_multiplier: float = param(
        0.1,
        low=0.0,
        doc="z: noise std z*clipping_norm/n per weight; 0.1 gives Sun et al.'s "
        "0.025 at 20 clients; 0 clips only",
    )
    clipping_norm: float = param(
        5.0, low=0.0, low_open=True, doc="L2 bound of every update w - global"
    )
    weighted: bool = param(
        False, doc="average by reported counts (plain FedAvg; voids the DP noise)"
    )


@dataclass
class DPAdaptiveParams(Params):
    noise_multiplier: float = param(
        0.1,
        low=0.0,
        doc="z of the whole mechanism; Flower splits it between updates and count",
    )
    initial_clipping_norm: float = param(
        5.0, low=0.0, low_open=True, doc="the clipping norm of round 1 (Flower: 0.1)"
    )
    target_clipped_quantile: float = param(
        0.5,
        low=0.0,
        high=1.0,
        doc="gamma: the quantile of update norms the clipping norm tracks",
    )
    clip_norm_lr: float = param(
        0.2, low=0.0, low_open=True, doc="eta_C: the geometric update's rate"
    )
    clipped_count_stddev: float | None = param(
        None, low=0.0, doc="sigma_b, the count noise; null: n/20 (Flower's)"
    )
    weighted: bool = param(
        False, doc="average by reported counts (plain FedAvg; voids the DP noise)"
    )

    def check(self, facts: RunFacts, key: str, owner: str) -> None:
        """Flower refuses ``noise_multiplier >= 2 * clipped_count_stddev``."""
        stddev = self.clipped_count_stddev
        if stddev is None:
            stddev = facts.clients_per_round / 20
        if self.noise_multiplier > 0 and self.noise_multiplier >= 2 * stddev:
            fail(
                f"{key}.noise_multiplier",
                self.noise_multiplier,
                f"a number < 2 x clipped_count_stddev = {2 * stddev:g} "
                "(or raise clipped_count_stddev)",
                owner,
            )


class PaperAdaptiveClipping(DifferentialPrivacyServerSideAdaptiveClipping):
    """Flower's server-side adaptive clipping with Andrew et al.'s ``b``: the
    noised fraction of updates left unclipped, not Flower's clipped one."""

    def _noisy_fraction(self, count: int, total: int) -> float:
        # 1 - N(clipped, s) / n is N(n - clipped, s) / n: the paper's noised b.
        return 1.0 - super()._noisy_fraction(count, total)


@dataclass
class Round:
    """A round as Flower's wrappers get it: the float keys, the participants
    with a non-zero update, their replies (copies) and the global model."""

    keys: list[str]
    used: list[str]
    replies: list[Message]
    current: ArrayRecord
    norms: dict[str, float]


def prepare(rnd: RoundInput, weighted: bool) -> Round:
    """Copies of the replies that Flower's DP wrappers can clip: float weights
    only, the weight metric 1 (uniform) or the reported count."""
    keys = float_keys(rnd.global_numpy)
    start = [rnd.global_numpy[k] for k in keys]
    norms, used, replies = {}, [], []
    for u in rnd.updates:
        update = [np.subtract(u.numpy[k], g) for k, g in zip(keys, start, strict=True)]
        norms[u.cid] = get_norm(update)  # Flower's own norm, so "clipped" agrees
        if norms[u.cid] == 0.0:
            continue
        content = RecordDict(
            {
                "arrays": ArrayRecord({k: u.arrays[k] for k in keys}),
                "metrics": MetricRecord(
                    {DP_WEIGHT: float(u.num_examples) if weighted else 1.0}
                ),
            }
        )
        node = u.reply.metadata.src_node_id if u.reply is not None else 0
        replies.append(
            Message(content, dst_node_id=node, message_type=MessageType.TRAIN)
        )
        used.append(u.cid)
    current = ArrayRecord({k: rnd.global_arrays[k] for k in keys})
    return Round(keys, used, replies, current, norms)


@contextmanager
def seeded_numpy(seed: int) -> Iterator[None]:
    """numpy's global generator (Flower's noise) seeded for a block, then
    restored, so nothing else's stream changes."""
    saved = np.random.get_state()
    np.random.seed([seed & 0xFFFFFFFF, seed >> 32])
    try:
        yield
    finally:
        np.random.set_state(saved)


def shares(rnd: RoundInput, used: list[str], weighted: bool) -> dict[str, float]:
    """Each participant's share of Flower's average (0 for the held-out)."""
    raw = {u.cid: (u.num_examples if weighted else 1.0) for u in rnd.updates}
    total = sum(raw[cid] for cid in used)
    return {cid: raw[cid] / total if cid in used else 0.0 for cid in rnd.ids}


class DPDefense(Defense):
    """Shared wiring: build Flower's wrapper, feed it the round, read its model."""

    params: DPFixedParams | DPAdaptiveParams

    def wrapper(self, n: int) -> Any:
        """Flower's DP strategy for a round of ``n`` participants."""
        raise NotImplementedError

    def verdict(self, rnd: RoundInput) -> Verdict:
        weighted = self.params.weighted
        prep = prepare(rnd, weighted)
        bound = self.clipping_norm
        clipped = [cid for cid, norm in prep.norms.items() if norm > bound]
        held_out = [cid for cid in rnd.ids if cid not in prep.used]
        details: dict[str, Any] = {
            "clipping_norm": bound,
            "num_clipped": len(clipped),
            "clipped": clipped,
            "held_out": held_out,
            "weighting": "counts" if weighted else "uniform",
        }
        if not prep.used:  # every update is the global model: keep it
            return Verdict(weights=dict.fromkeys(rnd.ids, 0.0), details=details)
        dp = self.wrapper(len(prep.used))
        dp.current_arrays = prep.current  # what configure_train would store
        with seeded_numpy(derive_seed(self.context.seed, self.label, rnd.server_round)):
            arrays, _ = dp.aggregate_train(rnd.server_round, prep.replies)
        if arrays is None:
            raise RuntimeError(f"Flower's {dp!r} returned no model")
        model = dict(rnd.global_numpy)  # integer buffers: the global model's
        for key in prep.keys:
            model[key] = arrays[key].numpy().astype(model[key].dtype, copy=False)
        details.update(self.after(dp))
        return Verdict(
            weights=shares(rnd, prep.used, weighted),
            model=to_record(model),
            details=details,
        )

    @property
    def clipping_norm(self) -> float:
        """The norm this round clips to."""
        raise NotImplementedError

    def after(self, dp: Any) -> dict[str, Any]:
        """Details from the wrapper after aggregation (noise std, new norm)."""
        raise NotImplementedError


@DEFENSES.register(
    "dp_fixed",
    params=DPFixedParams,
    order=12,
    paper="McMahan et al., ICLR 2018 (DP-FedAvg); weak DP of Sun et al., 2019",
)
class DPFixed(DPDefense):
    """Clip every update to a fixed norm, average, add Gaussian noise (Flower)."""

    params: DPFixedParams

    @property
    def clipping_norm(self) -> float:
        return float(self.params.clipping_norm)

    def wrapper(self, n: int) -> DifferentialPrivacyServerSideFixedClipping:
        return DifferentialPrivacyServerSideFixedClipping(
            FedAvg(weighted_by_key=DP_WEIGHT),
            noise_multiplier=self.params.noise_multiplier,
            clipping_norm=self.params.clipping_norm,
            num_sampled_clients=n,
        )

    def after(self, dp: DifferentialPrivacyServerSideFixedClipping) -> dict[str, Any]:
        std = compute_stdv(
            dp.noise_multiplier, dp.clipping_norm, dp.num_sampled_clients
        )
        return {"noise_std": std}


@DEFENSES.register(
    "dp_adaptive",
    params=DPAdaptiveParams,
    order=14,
    paper="Andrew et al., NeurIPS 2021",
)
class DPAdaptive(DPDefense):
    """Clip to a norm that tracks a quantile of the update norms, average, add
    Gaussian noise (Flower, with the paper's direction of the norm update)."""

    params: DPAdaptiveParams

    def __init__(self, params: DPAdaptiveParams, context: DefenseContext) -> None:
        super().__init__(params, context)
        self.norm = float(params.initial_clipping_norm)

    @property
    def clipping_norm(self) -> float:
        return self.norm

    def count_stddev(self, n: int) -> float | None:
        """sigma_b: the configured one, else Flower's n/20 unless that cannot
        hold ``noise_multiplier`` (then ``noise_multiplier`` itself)."""
        p = self.params
        if p.clipped_count_stddev is not None or p.noise_multiplier == 0:
            return p.clipped_count_stddev
        return None if p.noise_multiplier < n / 10 else p.noise_multiplier

    def wrapper(self, n: int) -> PaperAdaptiveClipping:
        p = self.params
        return PaperAdaptiveClipping(
            FedAvg(weighted_by_key=DP_WEIGHT),
            noise_multiplier=p.noise_multiplier,
            num_sampled_clients=n,
            initial_clipping_norm=self.norm,
            target_clipped_quantile=p.target_clipped_quantile,
            clip_norm_lr=p.clip_norm_lr,
            clipped_count_stddev=self.count_stddev(n),
        )

    def after(self, dp: PaperAdaptiveClipping) -> dict[str, Any]:
        self.norm = float(dp.clipping_norm)
        # Flower scales the noise with the norm after its update.
        std = compute_stdv(
            dp.noise_multiplier, dp.clipping_norm, dp.num_sampled_clients
        )
        return {
            "noise_std": std,
            "next_clipping_norm": self.norm,
            "update_noise_multiplier": dp.noise_multiplier,
            "clipped_count_stddev": dp.clipped_count_stddev,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"clipping_norm": self.norm}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.norm = float(state["clipping_norm"])
