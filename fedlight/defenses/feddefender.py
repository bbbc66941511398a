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

from dataclasses import replace

import torch
from flwr.app import Message
from flwr.serverapp.strategy import Strategy

from fedlight.defenses.base import (
    DefenseContext,
    DefenseReport,
    DefenseStrategy,
    client_id,
    reweight,
)
from fedlight.defenses.remote import DefenderJob, RemoteDefender, run_job
from fedlight.seeding import derive_seed


class FedDefender(DefenseStrategy):
    """Differential testing of client models on synthetic inputs.

    Scoring runs as a task on a Ray actor (``num_cpus``/``num_gpus``) when Ray
    is running and ``remote`` is true, else in-process; ``engine`` picks the
    batched engine or the plain oracle; ``inference_guided`` selects inputs as
    FedDebug does.
    """

    def __init__(
        self,
        inner: Strategy,
        context: DefenseContext,
        theta: float = 0.5,
        num_inputs: int = 10,
        na_t: float = 0.0,
        num_attackers: int | None = None,
        engine: str = "batched",
        max_memory_mb: float = 1024.0,
        remote: bool = True,
        num_cpus: float = 0.0,
        num_gpus: float = 0.0,
        inference_guided: bool = False,
        eta: int = 4,
        pool_size: int = 100,
    ) -> None:
        super().__init__(inner, context)
        self.theta = theta
        self.num_inputs = num_inputs
        self.num_attackers = num_attackers or max(1, context.num_attackers)
        self.remote = RemoteDefender(num_cpus, num_gpus) if remote else None
        self.job = DefenderJob(
            model=context.model,
            num_classes=context.num_classes,
            input_shape=context.input_shape,
            mean=context.mean,
            std=context.std,
            seed=context.seed,
            num_inputs=num_inputs,
            na_t=na_t,
            num_attackers=self.num_attackers,
            engine=engine,
            max_memory_mb=max_memory_mb,
            device="cuda" if num_gpus > 0 else context.device,
            inference_guided=inference_guided,
            eta=eta,
            pool_size=pool_size,
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

    def screen(
        self, server_round: int, replies: list[Message]
    ) -> tuple[list[Message], DefenseReport]:
        ids = [client_id(r) for r in replies]
        states = [r.content["arrays"].to_torch_state_dict() for r in replies]
        confidence = self.confidences(server_round, states)
        scores = dict(zip(ids, confidence.tolist(), strict=True))
        flagged = [cid for cid in ids if scores[cid] > self.theta]
        weights = {cid: 0.0 if cid in flagged else 1.0 - scores[cid] for cid in ids}
        report = DefenseReport(
            confidence=scores,
            flagged=flagged,
            weights=weights,
            details={"num_inputs": self.num_inputs},
        )
        return reweight(replies, weights), report


def ray_running() -> bool:
    """Whether this process is connected to Ray (without importing it needlessly)."""
    import sys

    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()
