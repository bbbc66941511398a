"""The defence contract: the round's updates in, a verdict out.

A defence sees what a real server has: every reply of the round (weights,
reported example count, metrics), the global model the clients started from,
and the task (:class:`DefenseContext`). It returns a :class:`Verdict`: the
aggregation weight of every client (0 excludes it), the clients it flags, its
per-client scores and a details record. The server applies the verdict: FedAvg
with exactly those weights, so a down-weighted client is visible as such
(``attacker_weight`` in every round record). A defence that is an aggregation
rule of its own (median, Bulyan) returns the new model too, and states each
client's share of it as its weights.

A new defence is one module: a parameter dataclass, a :class:`Defense` subclass
with :meth:`Defense.verdict`, and ``@DEFENSES.register(name, params=...)``
(docs/extending.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message

from fedlight.params import Params, RunFacts, fail
from fedlight.registry import Registry

DEFENSES = Registry("defense", "fedlight.defenses")

WEIGHT_KEY = "num-examples"


@dataclass(frozen=True)
class DefenseContext:
    """What the server knows besides the replies: the task and its assumptions.

    ``max_attackers`` is the number of malicious clients a defence assumes at
    most (``server.max_attackers``, a setting of the server, never the attack's
    ground truth); a defence's own bound (Krum's f) overrides it.
    """

    model: str
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: float
    std: float
    seed: int
    max_attackers: int = 1
    device: str = "cpu"
    memory_format: str = "contiguous"  # the model's kernel layout (model.memory_format)


@dataclass(frozen=True)
class ClientUpdate:
    """One client's reply as the server holds it."""

    cid: str
    arrays: ArrayRecord
    num_examples: float
    metrics: dict[str, float]
    reply: Message | None = None  # the Flower message, for Flower's own rules
    node_id: int | None = None  # the node Flower delivered it from

    @property
    def identity(self) -> str:
        """Who sent it, for memory across rounds: the node id Flower delivered
        the reply from (authenticated when node authentication is on), else the
        client id (the reference loop and hand-built rounds have no nodes)."""
        return f"node:{self.node_id}" if self.node_id is not None else self.cid

    @cached_property
    def state(self) -> dict[str, torch.Tensor]:
        """The weights as torch tensors."""
        return self.arrays.to_torch_state_dict()

    @cached_property
    def numpy(self) -> dict[str, np.ndarray]:
        """The weights as numpy arrays."""
        return {k: a.numpy() for k, a in self.arrays.items()}


@dataclass(frozen=True)
class RoundInput:
    """Everything a defence gets in a round."""

    server_round: int
    global_arrays: ArrayRecord
    updates: list[ClientUpdate]

    @property
    def ids(self) -> list[str]:
        return [u.cid for u in self.updates]

    @property
    def identities(self) -> list[str]:
        """:attr:`ClientUpdate.identity` of each update, in order."""
        return [u.identity for u in self.updates]

    def counts(self) -> dict[str, float]:
        """The example counts the clients reported (FedAvg's weights)."""
        return {u.cid: u.num_examples for u in self.updates}

    @cached_property
    def global_state(self) -> dict[str, torch.Tensor]:
        return self.global_arrays.to_torch_state_dict()

    @cached_property
    def global_numpy(self) -> dict[str, np.ndarray]:
        return {k: a.numpy() for k, a in self.global_arrays.items()}


@dataclass
class Verdict:
    """A defence's decision for one round.

    ``weights``: every client's aggregation weight (0 excludes it). Without
    ``model`` the server averages the clients' arrays (``replaced`` ones where
    given, e.g. clipped) with these weights; with ``model`` (a rule of its own)
    they state each client's share of it. ``scores``: per-client suspicion in
    [0, 1] for defences that score (None otherwise); ``flagged`` the clients it
    counts as detected; ``details`` anything else worth recording.
    """

    weights: dict[str, float]
    flagged: list[str] = field(default_factory=list)
    scores: dict[str, float] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    model: ArrayRecord | None = None
    replaced: dict[str, ArrayRecord] = field(default_factory=dict)


class Defense:
    """FedAvg: every client weighted by its reported count, nobody scored.

    Subclasses override :meth:`verdict`; ``params`` is the plug-in's parameter
    dataclass, checked before the run starts.
    """

    plugin_name: ClassVar[str] = "?"

    def __init__(self, params: Params, context: DefenseContext) -> None:
        self.params = params
        self.context = context

    @property
    def label(self) -> str:
        """The registered name: log label, W&B tag and report label."""
        return self.plugin_name

    def warm_up(self) -> None:
        """Start whatever the defence needs before the first round."""

    def state_dict(self) -> dict[str, Any]:
        """What the defence carries across rounds (checkpointed with the run)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` when a run resumes."""

    def verdict(self, rnd: RoundInput) -> Verdict:
        """The round's decision; FedAvg by reported counts here."""
        return Verdict(weights=rnd.counts())


def assumed_attackers(value: int | None, context: DefenseContext) -> int:
    """A defence's bound on the attackers: its own ``value``, else the server's
    ``max_attackers``."""
    return int(value) if value is not None else context.max_attackers


def check_bound(f: int | None, facts: RunFacts, key: str, owner: str) -> None:
    """Refuse an assumed attacker count ``num_malicious_nodes`` of n or more."""
    most = max(facts.num_clients - 1, 0)
    if f is not None and f > most:
        fail(f"{key}.num_malicious_nodes", f, f"an integer in [0, {most}]", owner)


def scaled_weights(
    counts: dict[str, float], scores: dict[str, float], flagged: list[str]
) -> dict[str, float]:
    """FedDefender's weights: flagged clients 0, the others their count times
    ``1 - score``."""
    return {
        cid: 0.0 if cid in flagged else float(n) * (1.0 - scores[cid])
        for cid, n in counts.items()
    }


def selection_weights(counts: dict[str, float], kept: set[str]) -> dict[str, float]:
    """The weights of a selection rule: kept clients their count, others 0."""
    return {cid: float(n) if cid in kept else 0.0 for cid, n in counts.items()}


def to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    """numpy arrays as Flower's ArrayRecord."""
    # np.require keeps 0-d arrays (BatchNorm's counters) 0-d; ascontiguousarray
    # would make them (1,) and the next round's screening would reject them all.
    return ArrayRecord(
        {k: Array(np.require(v, requirements="C")) for k, v in arrays.items()}
    )


def cast_like(arrays: ArrayRecord, dtypes: dict[str, Any]) -> ArrayRecord:
    """``arrays`` with every array cast back to the clients' dtype.

    Flower's aggregation rules (median, trimmed mean) return float64 for integer
    buffers such as BatchNorm's ``num_batches_tracked``; the next round's
    screening expects the model's own dtypes.
    """
    return ArrayRecord(
        {
            k: Array(np.asarray(a.numpy()).astype(dtypes[k], copy=False))
            for k, a in arrays.items()
        }
    )
