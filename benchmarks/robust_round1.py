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

from fedlight.aggregation import fedavg
from fedlight.defenses.fedavg_cap import cap_counts
from fedlight.defenses.rfa import geometric_median_shares
from fedlight.defenses.vectors import flatten
from fedlight.simulate import prepare_experiment

sys.path.insert(0, str(Path(__file__).resolve().parent))
from robust_levers import HERE, collect, compose_setting  # noqa: E402

RESULTS = HERE / "results" / "robust_round1.json"
States = list[dict[str, np.ndarray]]  # the clients' float arrays, in client order


def weighted(states: States, counts: np.ndarray) -> dict[str, np.ndarray]:
    return fedavg(states, counts.tolist())


def capped(states: States, counts: np.ndarray) -> dict[str, np.ndarray]:
    limit = cap_counts(dict(enumerate(counts.tolist())), 2.0)  # the robust default
    return fedavg(states, [limit[i] for i in range(len(states))])


def median(states: States, counts: np.ndarray) -> dict[str, np.ndarray]:
    return {k: np.median([s[k] for s in states], axis=0) for k in states[0]}


def trimmed_mean(states: States, counts: np.ndarray) -> dict[str, np.ndarray]:
    cut = int(0.2 * len(states))
    return {
        k: np.sort([s[k] for s in states], axis=0)[cut : len(states) - cut].mean(0)
        for k in states[0]
    }


def geometric_median(states: States, counts: np.ndarray) -> dict[str, np.ndarray]:
    keys = list(states[0])
    shares = geometric_median_shares(np.stack([flatten(s, keys) for s in states]))
    return fedavg(states, shares.tolist())


RULES: dict[str, Callable[[States, np.ndarray], dict[str, np.ndarray]]] = {
    "fedavg": weighted,
    "fedavg_cap": capped,
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
    arrays = [{k: s[k].numpy() for k in floats} for s in states]
    evaluator = exp.evaluator(cfg)
    out = {}
    for name, rule in RULES.items():
        state = {k: v.clone() for k, v in saved["global"].items()}
        for k, v in rule(arrays, counts).items():
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
