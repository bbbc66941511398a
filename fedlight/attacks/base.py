"""What every attack can do to a client's data and report.

An attack is a plain, picklable object: the driver validates it and uses it to
build the ASR test set; every Ray actor gets a copy and applies it to the
partitions of the clients it names.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Any

import torch

log = logging.getLogger("fedlight")


def _attack_parameters(cls: type) -> set[str]:
    """Every dataclass field of ``cls`` and of all its subclasses."""
    names = {f.name for f in fields(cls)}
    for sub in cls.__subclasses__():
        names |= _attack_parameters(sub)
    return names


class AttackMeta(type):
    """Drop keyword arguments that are parameters of *other* attacks.

    An experiment file sets the threat model once (``attack.trigger_size: 12``,
    ``poison_fraction``...), and a sweep such as ``attack=backdoor,label_flip,none``
    merges those values into every attack's config; an attack ignores (and logs)
    the ones it does not have. A key that is no attack's parameter still fails.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        own = {f.name for f in fields(cls)}
        foreign = sorted(
            k for k in kwargs if k not in own and k in _attack_parameters(Attack)
        )
        if foreign:
            log.info(
                "attack %s ignores %s (parameters of other attacks)",
                cls.name,
                ", ".join(foreign),
            )
        kept = {k: v for k, v in kwargs.items() if k not in foreign}
        return super().__call__(*args, **kept)


@dataclass
class Attack(metaclass=AttackMeta):
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

    malicious_clients: list[int] = field(default_factory=list)
    target_label: int | None = None
    boost: float = 1.0
    scale: float = 1.0
    num_malicious: int | None = None

    name = "none"

    def __post_init__(self) -> None:
        if self.num_malicious is not None:
            if int(self.num_malicious) < 0:
                raise ValueError(
                    f"attack.num_malicious={self.num_malicious} must be >= 0"
                )
            self.malicious_clients = list(range(int(self.num_malicious)))
        self.malicious_clients = sorted(int(c) for c in self.malicious_clients)

    def is_malicious(self, client_id: int) -> bool:
        return client_id in self.malicious_clients

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
        self, x: torch.Tensor, y: torch.Tensor, pixel_max: float
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Inputs and attacker-wanted labels for the attack success rate.

        None when the attack has no success criterion (no attack, label flip).
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
