"""Hand-built client replies for the defence tests: known arrays in, Flower
messages out, as the server loop hands them to a strategy."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from fedlight.defenses import DefenseContext

CTX = DefenseContext("convnet", 10, (1, 4, 4), 0.1, 0.3, seed=0, num_attackers=1)


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
