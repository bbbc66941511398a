"""The wrapper every defence builds on: screen the replies, then let the inner
strategy aggregate what is left.

Like Flower's DP wrappers, a defence is a :class:`flwr.serverapp.strategy.Strategy`
holding another one (FedAvg by default), so any defence composes with any
aggregation rule. A defence only decides which replies survive and with what
weight, and reports per-client scores for the detection metrics. A defence that
is an aggregation rule of its own (Bulyan, the coordinate-wise median)
overrides :meth:`DefenseStrategy.aggregate` instead of passing to ``inner``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

WEIGHT_KEY = "num-examples"
CLIENT_KEY = "partition-id"


@dataclass(frozen=True)
class DefenseContext:
    """What a defence may know about the task besides the replies."""

    model: str
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: float
    std: float
    seed: int
    num_attackers: int = 1
    device: str = "cpu"


@dataclass
class DefenseReport:
    """One round's verdict: per-client scores (None if the defence scores none),
    the clients excluded from aggregation, and the defence's own wall time."""

    confidence: dict[str, float] | None = None
    flagged: list[str] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    details: dict[str, object] = field(default_factory=dict)


def client_id(reply: Message) -> str:
    """The partition id a client reported, as the string used in results."""
    return str(int(reply.content["metrics"][CLIENT_KEY]))


class DefenseStrategy(Strategy):
    """Delegate everything to ``inner``; subclasses override :meth:`screen`."""

    def __init__(self, inner: Strategy, context: DefenseContext) -> None:
        self.inner = inner
        self.context = context
        self.last_report = DefenseReport()
        # The round's global model, for defences that look at updates (w - global):
        # set by the server loop before aggregation, and by configure_train as
        # Flower's DP wrappers record it.
        self.global_arrays: ArrayRecord | None = None

    def warm_up(self) -> None:
        """Start whatever the defence needs before the first round (no-op here)."""

    def state_dict(self) -> dict[str, Any]:
        """What the defence carries across rounds (checkpointed with the run)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` when a run resumes."""

    def screen(
        self, server_round: int, replies: list[Message]
    ) -> tuple[list[Message], DefenseReport]:
        """Return the replies to aggregate (possibly reweighted) and a report."""
        return replies, DefenseReport()

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid = [r for r in replies if not r.has_error()]
        if not valid:
            self.last_report = DefenseReport()
            return None, None
        start = time.perf_counter()
        kept, report = self.screen(server_round, valid)
        report.seconds = time.perf_counter() - start
        self.last_report = report
        if not kept:
            return None, None
        return self.aggregate(server_round, kept)

    def aggregate(
        self, server_round: int, kept: list[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the screened replies: the inner strategy's rule by default."""
        return self.inner.aggregate_train(server_round, kept)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.global_arrays = arrays
        return self.inner.configure_train(server_round, arrays, config, grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.inner.summary()


def reweight(replies: list[Message], weights: dict[str, float]) -> list[Message]:
    """Scale each reply's example count by its client's weight; drop weight 0.

    FedAvg weighs by the reported count, so scaling it is exactly a per-client
    aggregation weight. Returns no replies if every weight is 0.
    """
    kept = []
    for reply in replies:
        w = weights.get(client_id(reply), 1.0)
        if w <= 0.0:
            continue
        metrics = reply.content["metrics"]
        metrics[WEIGHT_KEY] = float(metrics[WEIGHT_KEY]) * w
        kept.append(reply)
    return kept


def resolve_num_malicious(value: int | None, context: DefenseContext) -> int:
    """A defence's assumed number of attackers: ``value``, else the attack's
    (``context.num_attackers``, at least 1), as FedDefender's ``num_attackers``."""
    return int(value) if value is not None else max(1, context.num_attackers)


def cast_like(arrays: ArrayRecord, dtypes: dict[str, Any]) -> ArrayRecord:
    """``arrays`` with every array cast back to the clients' dtype.

    Flower's aggregation rules (FedAvg's weighted sum, median, trimmed mean)
    return float64 for integer buffers such as BatchNorm's
    ``num_batches_tracked``; the next round's screening expects the model's own
    dtypes.
    """
    return ArrayRecord(
        {
            k: Array(np.asarray(a.numpy()).astype(dtypes[k], copy=False))
            for k, a in arrays.items()
        }
    )


class OwnRuleDefense(DefenseStrategy):
    """A defence that is an aggregation rule: Flower's ``rule`` strategy
    aggregates the screened replies in place of ``inner``.

    ``inner`` still configures rounds. The rule's time counts as defence time;
    the server restores the model's dtypes after every aggregation.
    """

    rule: Strategy

    def aggregate(
        self, server_round: int, kept: list[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        start = time.perf_counter()
        arrays, metrics = self.rule.aggregate_train(server_round, kept)
        self.last_report.seconds += time.perf_counter() - start
        return arrays, metrics
