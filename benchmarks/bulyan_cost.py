"""Bulyan's defence time: Flower's strategy path against fedlight's direct one.

The zoo (commit e7a29ed) measured Bulyan at ~5 s of defence a round in mnist_20
against 0.01-0.5 s for every other coordinate-wise rule. Flower's
``Bulyan.aggregate_train`` reads each kept client's arrays with
``ArrayRecord.to_numpy_ndarrays(keep_input=False)``, which calls
``gc.collect()`` once per client (a full collection of the driver's heap, large
once torch, Ray and Lightning are imported). fedlight's ``bulyan`` now calls
Flower's arithmetic (``aggregate_n_closest_weights``) directly on the arrays it
holds. This runs both on the same 20 replies of the ConvNet's size, checks the
aggregates are identical, and prints the median seconds, their ratio, and what
the old path costs with ``gc.collect`` made a no-op (the cause).

    python benchmarks/bulyan_cost.py [--clients 20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

import fedlight.simulate  # noqa: F401  (the driver's heap as in a run: torch, Ray, Lightning)
from fedlight.defenses import DEFENSES, ClientUpdate, DefenseContext, RoundInput
from fedlight.defenses.bulyan import flower_bulyan
from fedlight.models import build_model
from fedlight.params import build_params

OUT = Path(__file__).parent / "results" / "bulyan_cost.json"


def identity() -> None:
    """Messages need a run identity, as inside Flower's simulation engine."""
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id = 1, 1
    TaskIdentity.node_id = SUPERLINK_NODE_ID


def make_round(num_clients: int, seed: int) -> RoundInput:
    """``num_clients`` ConvNet-sized updates near one model (fresh arrays: Flower's
    Bulyan empties the records it reads)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    base = {k: v.numpy() for k, v in build_model("convnet", 10, 1).state_dict().items()}
    updates = []
    for cid in range(num_clients):
        arrays = ArrayRecord(
            {
                k: Array(
                    (v + 0.01 * rng.standard_normal(v.shape)).astype(v.dtype)
                    if v.dtype.kind == "f"
                    else v.copy()
                )
                for k, v in base.items()
            }
        )
        metrics = MetricRecord({"num-examples": 3000.0, "partition-id": cid})
        content = RecordDict({"arrays": arrays, "metrics": metrics})
        sent = Message(content, dst_node_id=cid + 1, message_type="train")
        reply = Message(content, reply_to=sent)
        updates.append(
            ClientUpdate(str(cid), arrays, 3000.0, {"num-examples": 3000.0}, reply)
        )
    glob = ArrayRecord({k: Array(np.asarray(v)) for k, v in base.items()})
    return RoundInput(1, glob, updates)


def defense(selection: str = "recursive") -> Any:
    plugin = DEFENSES.get("bulyan")
    context = DefenseContext(
        "convnet", 10, (1, 32, 32), 0.1, 0.3, seed=0, max_attackers=1
    )
    params = build_params(
        plugin.params, {"selection": selection}, key="defense", owner="bulyan"
    )
    return plugin.cls(params, context)


def as_numpy(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in arrays.items()}


def timed(path: str, num_clients: int, seed: int) -> tuple[float, dict]:
    """Seconds of one round's Bulyan by ``path`` and the model it makes."""
    rnd = make_round(num_clients, seed)
    replies = [u.reply for u in rnd.updates]
    start = time.perf_counter()
    if path == "fedlight":
        model = defense().verdict(rnd).model
    elif path == "flower":
        model, _ = flower_bulyan(replies, 1)
    else:  # Flower's path without its gc.collect calls
        with mock.patch.object(gc, "collect", lambda *a: 0):
            model, _ = flower_bulyan(replies, 1)
    seconds = time.perf_counter() - start
    return seconds, as_numpy(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    identity()
    paths = ("flower", "fedlight", "flower_without_gc_collect")
    runs: dict[str, list[float]] = {p: [] for p in paths}
    for rep in range(args.repeats):  # interleaved: every path sees the same load
        models = {}
        for path in paths:
            seconds, models[path] = timed(path, args.clients, rep)
            runs[path].append(seconds)
        for path in paths[1:]:
            assert models[path].keys() == models["flower"].keys()
            for k, v in models["flower"].items():
                assert np.array_equal(models[path][k], v), f"{path}: {k} differs"
    medians = {p: statistics.median(r) for p, r in runs.items()}
    ratio = medians["flower"] / medians["fedlight"]
    print(
        f"Bulyan, {args.clients} ConvNet replies, median of {args.repeats}: "
        f"Flower's strategy {medians['flower']:.3f} s, "
        f"fedlight {medians['fedlight']:.3f} s "
        f"(ratio {ratio:.1f}x), Flower's without gc.collect "
        f"{medians['flower_without_gc_collect']:.3f} s; aggregates identical"
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "clients": args.clients,
        "repeats": args.repeats,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "median_s": medians,
        "ratio_flower_over_fedlight": ratio,
        "runs_s": runs,
        "aggregates_identical": True,
    }
    OUT.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
