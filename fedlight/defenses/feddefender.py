"""``defense=feddefender``: FedDefender (Gill, Anwar, Gulzar, arXiv 2307.08672).

Each round every client's model runs on the same ``num_inputs`` seeded synthetic
inputs; leave-one-out differential testing over their neuron-activation
fingerprints votes, per input, for the client that behaves unlike the others.
A client's confidence is the share of inputs that voted for it: above ``theta``
it is excluded, otherwise its FedAvg weight is multiplied by ``1 - confidence``.
The maths lives in :mod:`fedlight.defenses.fingerprint`; this class converts
Flower messages and calls it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from fedlight.defenses.base import (
    DEFENSES,
    Defense,
    DefenseContext,
    RoundInput,
    Verdict,
    assumed_attackers,
    scaled_weights,
)
from fedlight.defenses.fingerprint import ENGINES
from fedlight.defenses.remote import DefenderJob, RemoteDefender, run_job
from fedlight.params import Params, RunFacts, fail, param
from fedlight.seeding import derive_seed


@dataclass
class FedDefenderParams(Params):
    theta: float = param(0.5, low=0.0, high=1.0, doc="exclude a client above this")
    num_inputs: int = param(10, low=1, doc="synthetic inputs per round")
    na_t: float = param(0.0, doc="a neuron is on when its output exceeds this")
    num_attackers: int | None = param(
        None, low=1, doc="leave-one-out repetitions; null: server.max_attackers"
    )
    engine: str = param(
        "batched", choices=ENGINES, doc="batched (the engine) | loop (the oracle)"
    )
    max_memory_mb: float = param(1024.0, low=1.0, doc="the engine's working memory")
    remote: bool = param(True, doc="score in a Ray task on the simulation's cluster")
    num_cpus: float = param(0.0, low=0.0, doc="the task's CPU reservation")
    num_gpus: float = param(0.0, low=0.0, doc="> 0 runs the task on a GPU")
    inference_guided: bool = param(
        False, doc="FedDebug's input selection from a candidate pool"
    )
    eta: int = param(4, low=1, doc="keep a candidate when at least eta clients agree")
    pool_size: int = param(100, low=1, doc="candidates drawn for inference_guided")

    def check(self, facts: RunFacts, key: str, owner: str) -> None:
        if self.num_attackers is not None and self.num_attackers >= max(
            facts.num_clients, 2
        ):
            fail(
                f"{key}.num_attackers",
                self.num_attackers,
                f"an integer in [1, {max(facts.num_clients - 1, 1)}]",
                owner,
            )
        if self.inference_guided:
            if self.eta > facts.clients_per_round:
                fail(
                    f"{key}.eta",
                    self.eta,
                    f"an integer in [1, {facts.clients_per_round}]",
                    owner,
                )
            if self.pool_size < self.num_inputs:
                fail(
                    f"{key}.pool_size",
                    self.pool_size,
                    f"an integer >= num_inputs ({self.num_inputs})",
                    owner,
                )


@DEFENSES.register(
    "feddefender",
    params=FedDefenderParams,
    order=80,
    paper="Gill, Anwar, Gulzar, arXiv 2307.08672",
)
class FedDefender(Defense):
    """Differential testing of client models on synthetic inputs.

    Scoring runs as a task on a Ray actor (``num_cpus``/``num_gpus``) when Ray
    is running and ``remote`` is true, else in-process; ``engine`` picks the
    batched engine or the plain oracle; ``inference_guided`` selects inputs as
    FedDebug does.
    """

    params: FedDefenderParams

    def __init__(self, params: FedDefenderParams, context: DefenseContext) -> None:
        super().__init__(params, context)
        p = params
        self.num_attackers = assumed_attackers(p.num_attackers, context)
        self.remote = RemoteDefender(p.num_cpus, p.num_gpus) if p.remote else None
        self.job = DefenderJob(
            model=context.model,
            num_classes=context.num_classes,
            input_shape=context.input_shape,
            mean=context.mean,
            std=context.std,
            seed=context.seed,
            num_inputs=p.num_inputs,
            na_t=p.na_t,
            num_attackers=self.num_attackers,
            engine=p.engine,
            max_memory_mb=p.max_memory_mb,
            device="cuda" if p.num_gpus > 0 else context.device,
            inference_guided=p.inference_guided,
            eta=p.eta,
            pool_size=p.pool_size,
        )

    def job_for_round(self, server_round: int, num_clients: int) -> DefenderJob:
        """The round's job: inputs seeded by (seed, round), so distinct per round."""
        seed = derive_seed(self.context.seed, "feddefender-inputs", server_round)
        attackers = min(self.num_attackers, max(num_clients - 1, 0))
        return replace(self.job, seed=seed, num_attackers=attackers)

    def confidences(
        self, server_round: int, states: list[dict[str, torch.Tensor]]
    ) -> torch.Tensor:
        job = self.job_for_round(server_round, len(states))
        if self.remote is not None and ray_running():
            return self.remote.score(job, states)
        return run_job(job, states)

    def warm_up(self) -> None:
        if self.remote is not None and ray_running():
            self.remote.start()

    def verdict(self, rnd: RoundInput) -> Verdict:
        confidence = self.confidences(rnd.server_round, [u.state for u in rnd.updates])
        scores = dict(zip(rnd.ids, confidence.tolist(), strict=True))
        flagged = [cid for cid in rnd.ids if scores[cid] > self.params.theta]
        return Verdict(
            weights=scaled_weights(rnd.counts(), scores, flagged),
            flagged=flagged,
            scores=scores,
            details={"num_inputs": self.params.num_inputs},
        )


def ray_running() -> bool:
    """Whether this process is connected to Ray (without importing it needlessly)."""
    import sys

    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()
