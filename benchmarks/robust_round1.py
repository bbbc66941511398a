"""Round 1 without a detector: which aggregation keeps the backdoor out.

In round 1 every client has moved far from the random initial model, and on
non-IID splits no search tells the attacker from benign clients (DEV.md,
section 1). Whatever aggregates round 1 then has every client in it. This
script trains round 1 of a setting (``robust_levers.collect``: the same client
states a run would get), aggregates all clients with each rule, and measures
the aggregate's clean accuracy and ASR on the test set:

- ``fedavg``: weighted by the reported counts (the attacker's boosted 20x);
- ``fedavg_cap``: counts capped at 2x the median (the robust defence's cap);
- ``median``: coordinate-wise median (what ``median_rounds`` does; Flower's
  ``FedMedian`` takes ``np.median``);
- ``trimmed_mean``: the coordinate-wise mean of the middle 60% (beta 0.2);
- ``geometric_median``: RFA's smoothed Weiszfeld (unweighted).

Development settings and seeds only (docs/results/robust/PROTOCOL.md).

    python benchmarks/robust_round1.py --settings mnist_20_dirichlet05_3attackers \\
        --seeds 100 101 102 103

Writes ``benchmarks/results/robust_round1.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fedlight.defenses.rfa import weiszfeld_weights
from fedlight.simulate import prepare_experiment

sys.path.insert(0, str(Path(__file__).resolve().parent))
from robust_levers import HERE, collect, compose_setting  # noqa: E402

RESULTS = HERE / "results" / "robust_round1.json"
Stack = dict[str, np.ndarray]  # key -> (clients, ...) float array


def _mean(stack: Stack, weights: np.ndarray) -> dict[str, np.ndarray]:
    w = weights / weights.sum()
    return {k: np.tensordot(w, v, axes=1) for k, v in stack.items()}


def fedavg(stack: Stack, counts: np.ndarray) -> dict[str, np.ndarray]:
    return _mean(stack, counts.astype(float))


def fedavg_cap(stack: Stack, counts: np.ndarray) -> dict[str, np.ndarray]:
    return _mean(stack, np.minimum(counts, 2.0 * np.median(counts)).astype(float))


def median(stack: Stack, counts: np.ndarray) -> dict[str, np.ndarray]:
    return {k: np.median(v, axis=0) for k, v in stack.items()}


def trimmed_mean(stack: Stack, counts: np.ndarray) -> dict[str, np.ndarray]:
    cut = int(0.2 * len(counts))
    return {
        k: np.sort(v, axis=0)[cut : len(counts) - cut].mean(axis=0)
        for k, v in stack.items()
    }


def geometric_median(stack: Stack, counts: np.ndarray) -> dict[str, np.ndarray]:
    points = np.concatenate([v.reshape(len(counts), -1) for v in stack.values()], 1)
    weights, _ = weiszfeld_weights(
        points, np.ones(len(counts)), max_iter=100, nu=1e-6, ftol=1e-6
    )
    return _mean(stack, weights)


RULES: dict[str, Callable[[Stack, np.ndarray], dict[str, np.ndarray]]] = {
    "fedavg": fedavg,
    "fedavg_cap": fedavg_cap,
    "median": median,
    "trimmed_mean": trimmed_mean,
    "geometric_median": geometric_median,
}


def measure(setting: str, seed: int, cache: Path) -> dict[str, dict[str, float]]:
    """Clean accuracy and ASR of every rule's round-1 aggregate."""
    cfg = compose_setting(setting, seed)
    (path,) = collect(setting, cfg, 1, cache)
    saved = torch.load(path, weights_only=False)
    states = [saved["states"][c] for c in sorted(saved["states"])]
    exp = prepare_experiment(cfg)
    counts = np.array([saved["counts"][c] for c in sorted(saved["states"])], float)
    floats = [k for k, v in states[0].items() if v.is_floating_point()]
    stack = {k: np.stack([s[k].numpy() for s in states]) for k in floats}
    evaluator = exp.evaluator(cfg)
    out = {}
    for name, rule in RULES.items():
        state = {k: v.clone() for k, v in saved["global"].items()}
        for k, v in rule(stack, counts).items():
            state[k] = torch.as_tensor(v, dtype=state[k].dtype)
        m = evaluator(state)
        out[name] = {"accuracy": m["accuracy"], "asr": m["asr"]}
        print(
            f"{setting} s{seed} {name:17s} acc {m['accuracy']:.3f} asr {m['asr']:.3f}"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--settings", nargs="+", default=["mnist_20_dirichlet05_3attackers"]
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[100, 101])
    parser.add_argument(
        "--cache", type=Path, default=HERE / "results" / ".levers-cache"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for setting in args.settings:
        for seed in args.seeds:
            results[f"{setting}-s{seed}"] = measure(setting, seed, args.cache)
            args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
