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
from fedlight.defenses.fingerprint import ENGINES, score_clients, synthetic_inputs
from fedlight.models import build_model
from fedlight.seeding import derive_seed


class FedDefender(DefenseStrategy):
    """Differential testing of client models on synthetic inputs."""

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
    ) -> None:
        super().__init__(inner, context)
        self.theta = theta
        self.num_inputs = num_inputs
        self.na_t = na_t
        self.num_attackers = num_attackers or max(1, context.num_attackers)
        self.engine = engine
        self.max_memory_mb = max_memory_mb
        self.template = build_model(
            context.model, context.num_classes, context.input_shape[0]
        )

    def inputs_for_round(self, server_round: int) -> torch.Tensor:
        """``num_inputs`` distinct inputs, reproducible per (seed, round)."""
        seed = derive_seed(self.context.seed, "feddefender-inputs", server_round)
        return synthetic_inputs(
            self.num_inputs,
            self.context.input_shape,
            self.context.mean,
            self.context.std,
            seed,
        )

    def screen(
        self, server_round: int, replies: list[Message]
    ) -> tuple[list[Message], DefenseReport]:
        ids = [client_id(r) for r in replies]
        states = [r.content["arrays"].to_torch_state_dict() for r in replies]
        confidence = score_clients(
            self.template,
            states,
            self.inputs_for_round(server_round),
            na_t=self.na_t,
            num_attackers=min(self.num_attackers, max(len(states) - 1, 0)),
            engine=self.engine,
            max_memory_mb=self.max_memory_mb,
            device=self.context.device,
        )
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
