"""What every attack can do to a client's data and report.

An attack is a plain, picklable dataclass that is also its own parameter
schema: its fields, with their ranges and docs (:func:`fedlight.params.param`),
are the keys of ``attack=NAME``. The driver validates it and uses it to build
the ASR test set; every Ray actor gets a copy and applies it to the partitions
of the clients it names. A new attack is one module: a subclass registered with
``@ATTACKS.register(name)`` (docs/extending.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from fedlight.params import Params, RunFacts, fail, param
from fedlight.registry import Registry
from fedlight.schedule import last_attacked_round, parse_rounds, scheduled

log = logging.getLogger("fedlight")

ATTACKS = Registry("attack", "fedlight.attacks")

State = dict[str, torch.Tensor]
# The reply record that carries an attacker's published trigger (measurement only).
MEASUREMENT_KEY = "attack-measurement"


@dataclass
class TrainingHooks:
    """What an attacker changes in its own local training (model poisoning).

    ``extra_loss(model, x, y, logits)`` is added to the batch's cross-entropy
    (constrain-and-scale's anomaly term, a white-box evasion term);
    ``before_step(model)`` runs after ``backward`` and before the optimiser
    step (Neurotoxin's gradient mask); ``after_step(model)`` after the step
    (PGD's projection onto a ball around the global model). The Lightning
    client and the plain reference loop call them at the same points.
    """

    extra_loss: Callable[..., torch.Tensor] | None = None
    before_step: Callable[[nn.Module], None] | None = None
    after_step: Callable[[nn.Module], None] | None = None


@dataclass
class Attack(Params):
    """No attack: the base class every attack overrides in part.

    ``malicious_clients`` are partition ids; ``num_malicious`` (when not None)
    replaces them by the first N partition ids, so a sweep can vary the number of
    attackers with one key. ``boost`` is the factor by which a malicious client
    inflates its reported example count (FedAvg weighs clients by that count).
    ``scale`` is model replacement (Bagdasaryan et al., AISTATS 2020, "How to
    backdoor federated learning"): the attacker sends
    ``global + scale * (trained - global)``, so that averaging with the benign
    updates leaves (about) its own model; ``scale = num_clients`` replaces the
    global model under FedAvg with equal weights. It composes with every attack,
    since it acts on the weights and not on the data.
    """

    malicious_clients: list[int] = param(
        factory=lambda: [0], low=0, doc="the attackers' partition ids"
    )
    num_malicious: int | None = param(
        None, low=0, doc="N: the first N partition ids instead of malicious_clients"
    )
    boost: float = param(
        1.0, low=0.0, low_open=True, doc="factor on the reported example count"
    )
    scale: float = param(
        1.0, low=0.0, low_open=True, doc="model replacement: global + scale * update"
    )
    rounds: str = param(
        "1:",
        doc="rounds the attackers attack, start:stop:every (1-based, stop "
        "inclusive): 1: always, 5: from round 5, 1:10 until 10, 1::3 one in three",
    )

    target_label: ClassVar[int | None] = None
    plugin_name: ClassVar[str] = "none"
    # True for an attack whose clients keep memory across rounds (A3FL's trigger,
    # IBA's generator, Neurotoxin's last global model): it lives with the client,
    # not in the server's checkpoint; a simulation also writes it to disk so that
    # a resumed run reads it back (fedlight.checkpoint).
    remembers: ClassVar[bool] = False

    @property
    def name(self) -> str:
        """The registered name (``attack=NAME``)."""
        return self.plugin_name

    def __post_init__(self) -> None:
        if self.num_malicious is not None:
            if int(self.num_malicious) < 0:
                raise ValueError(
                    f"attack.num_malicious={self.num_malicious} must be >= 0"
                )
            self.malicious_clients = list(range(int(self.num_malicious)))
        self.malicious_clients = sorted(int(c) for c in self.malicious_clients)

    def check(self, facts: RunFacts, key: str, owner: str) -> None:
        try:
            parse_rounds(self.rounds)
        except ValueError:
            fail(
                f"{key}.rounds",
                self.rounds,
                "start:stop:every with 1 <= start <= stop and every >= 1, parts "
                "optional (1: every round, 5: from round 5, 1::3 one in three)",
                owner,
            )
        # num_malicious first: it has already replaced malicious_clients, so a
        # too-large N must be reported under the key the user set.
        if self.num_malicious is not None and self.num_malicious > facts.num_clients:
            fail(
                f"{key}.num_malicious",
                self.num_malicious,
                f"an integer in [0, {facts.num_clients}]",
                owner,
            )
        ids = list(self.malicious_clients)
        if any(not 0 <= c < facts.num_clients for c in ids) or len(set(ids)) < len(ids):
            fail(
                f"{key}.malicious_clients",
                ids,
                f"distinct partition ids in [0, {facts.num_clients})",
                owner,
            )
        if self.target_label is not None and not (
            0 <= self.target_label < facts.num_classes
        ):
            fail(
                f"{key}.target_label",
                self.target_label,
                f"an integer in [0, {facts.num_classes - 1}]",
                owner,
            )

    def is_malicious(self, client_id: int) -> bool:
        return client_id in self.malicious_clients

    def attacks_in(self, server_round: int) -> bool:
        """Whether ``server_round`` is one of the rounds the attackers attack."""
        return scheduled(self.rounds, server_round)

    def last_round(self) -> int | None:
        """The last round the schedule attacks in; None: to the end of the run."""
        return last_attacked_round(self.rounds)

    def is_active(self, client_id: int, server_round: int) -> bool:
        """Whether ``client_id`` attacks in ``server_round``; in other rounds a
        malicious client trains and reports exactly as a benign one."""
        return self.is_malicious(client_id) and self.attacks_in(server_round)

    def prepare(
        self,
        client_id: int,
        server_round: int,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        pixel_max: float,
        memory: State,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The data an active attacker trains on this round; default unchanged.

        Runs in every active round after :meth:`poison` (whose result may be
        cached across rounds) and before :meth:`training_hooks`, for poisoning
        that depends on the global model or on a trigger that changes over the
        rounds (A3FL optimises its trigger here). ``model`` holds the global
        weights and is the model about to be trained: work on a copy, never
        change it. ``x, y`` are what :meth:`poison` returned (do not modify them
        in place); ``memory`` is as in :meth:`training_hooks`; ``generator`` is
        seeded by (seed, client, round).
        """
        return x, y

    def training_hooks(
        self, client_id: int, server_round: int, global_state: State, memory: State
    ) -> TrainingHooks | None:
        """How an active attacker changes its local training; None: it does not.

        ``memory`` is the client's own storage across rounds (tensors; kept in
        Flower's per-node context state), e.g. the last global model it saw.
        """
        return None

    def observe(
        self, client_id: int, server_round: int, global_state: State, memory: State
    ) -> None:
        """Called after every fit of a malicious client, attacking or not: what
        it wants to remember of this round goes into ``memory``."""

    def published(self, memory: State) -> State:
        """The attacker's current trigger, for measuring the ASR only.

        An attack whose trigger changes over the rounds (A3FL optimises it)
        returns it here; the client sends it beside its update under
        :data:`MEASUREMENT_KEY`, and the server takes it out before any
        defence sees the reply (as it uses the attacker ids only for metrics).
        Fixed-trigger attacks publish nothing.
        """
        return {}

    def poison(
        self,
        client_id: int,
        x: torch.Tensor,
        y: torch.Tensor,
        pixel_max: float,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the client's training data as the attacker would train on it."""
        return x, y

    def reported_examples(self, client_id: int, num_examples: int) -> float:
        """The example count the client reports to the server."""
        if self.is_malicious(client_id):
            return float(num_examples) * float(self.boost)
        return float(num_examples)

    def tamper(
        self,
        client_id: int,
        global_state: dict[str, torch.Tensor],
        state: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """The weights the client sends after training (model poisoning hook).

        Subclasses that tamper further call this first, so scaling composes.
        """
        if not self.is_malicious(client_id) or self.scale == 1.0:
            return state
        return scale_update(global_state, state, self.scale)

    def asr_set(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        pixel_max: float,
        published: State | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Inputs and attacker-wanted labels for the attack success rate.

        None when the attack has no success criterion (no attack, label flip).
        ``published``: the attacker's latest trigger (:meth:`published`), for
        attacks whose trigger changes.
        """
        return None


def scale_update(
    global_state: dict[str, torch.Tensor],
    state: dict[str, torch.Tensor],
    scale: float,
) -> dict[str, torch.Tensor]:
    """``global + scale * (state - global)`` for float tensors; others unchanged.

    Integer buffers (e.g. BatchNorm's ``num_batches_tracked``) are counters, not
    weights, and are sent as trained.
    """
    return {
        k: global_state[k] + scale * (v - global_state[k])
        if v.is_floating_point()
        else v
        for k, v in state.items()
    }
