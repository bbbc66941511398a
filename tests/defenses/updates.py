"""Hand-built client replies for the defence tests: known arrays in, the
round a defence sees out (:class:`RoundInput` of :class:`ClientUpdate`, each
holding its Flower reply), and helpers that build a registered defence and
apply its verdict as the server does."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from fedlight.defenses import (
    DEFENSES,
    ClientUpdate,
    Defense,
    DefenseContext,
    RoundInput,
    Verdict,
)
from fedlight.params import build_params
from fedlight.server import apply_verdict

CTX = DefenseContext("convnet", 10, (1, 4, 4), 0.1, 0.3, seed=0, max_attackers=1)


def make_replies(
    models: list[dict[str, np.ndarray]], examples: list[float] | None = None
) -> list[Message]:
    """One reply per model, partition ids 0..n-1, ``examples`` as num-examples."""
    examples = examples or [100.0] * len(models)
    out = []
    for cid, (model, count) in enumerate(zip(models, examples, strict=True)):
        content = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in model.items()}),
                "metrics": MetricRecord(
                    {"num-examples": float(count), "partition-id": cid}
                ),
            }
        )
        msg = Message(content, dst_node_id=cid + 1, message_type="train")
        out.append(Message(content, reply_to=msg))
    return out


def clustered(
    num_clients: int, outliers: dict[int, float], seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """Models near 1.0 (noise 0.01); client ``i`` in ``outliers`` is shifted by
    ``outliers[i]`` in every weight. An int buffer rides along."""
    rng = np.random.default_rng(seed)
    models = []
    for cid in range(num_clients):
        w = 1.0 + 0.01 * rng.standard_normal((3, 4)).astype(np.float32)
        b = 1.0 + 0.01 * rng.standard_normal(4).astype(np.float32)
        shift = np.float32(outliers.get(cid, 0.0))
        models.append(
            {"w": w + shift, "b": b + shift, "count": np.array(7, dtype=np.int64)}
        )
    return models


def result(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: a.numpy() for k, a in arrays.items()}


def make_round(
    models: list[dict[str, np.ndarray]],
    examples: list[float] | None = None,
    global_model: dict[str, np.ndarray] | None = None,
    server_round: int = 1,
) -> RoundInput:
    """The round a defence sees: ``models`` as clients 0..n-1 around
    ``global_model`` (default: the first model with every float weight 0)."""
    replies = make_replies(models, examples)
    if global_model is None:
        global_model = {
            k: np.zeros_like(v) if v.dtype.kind == "f" else v
            for k, v in models[0].items()
        }
    updates = [
        ClientUpdate(
            cid=str(i),
            arrays=r.content["arrays"],
            num_examples=float(r.content["metrics"]["num-examples"]),
            metrics={k: float(v) for k, v in r.content["metrics"].items()},
            reply=r,
        )
        for i, r in enumerate(replies)
    ]
    arrays = ArrayRecord({k: Array(np.asarray(v)) for k, v in global_model.items()})
    return RoundInput(server_round, arrays, updates)


def build(name: str, context: DefenseContext = CTX, **params: object) -> Defense:
    """The registered defence ``name`` with ``params`` checked as a config's."""
    plugin = DEFENSES.get(name)
    made = build_params(plugin.params, params, key="defense", owner=name)
    return plugin.cls(made, context)


def judge(defense: Defense, rnd: RoundInput) -> tuple[Verdict, ArrayRecord | None]:
    """The defence's verdict and the model the server makes of it."""
    verdict = defense.verdict(rnd)
    return verdict, apply_verdict(rnd, verdict, defense.label)
