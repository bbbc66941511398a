"""The robust FedDefender's cost per round, beside the paper's method and the
first generation's per-client loop, measured side by side in one run.

Per model (ConvNet, ResNet-18) and client count, each engine scores the same
client states ``--repeats`` times, the engines interleaved so that a noisy
neighbour slows them alike; the median is reported and the ratios are taken
between medians of this one run:

- ``paper``: FedDefender as published (noise inputs, K=10, boolean
  fingerprints, leave-one-out), the batched engine of ``defense=feddefender``;
- ``gen1_loop``: the first generation's disagreement search, a model copy and
  one Adam search per client (class impressions, K=20, 15 steps);
- ``gen2_same``: the vmapped search over stacked client weights with the first
  generation's K and steps (the engine alone);
- ``shipped``: the whole scoring job with ``defense=feddefender_robust``'s
  shipped defaults (inputs, K, steps, everything a round runs), the reference
  in the model config's ``memory_format`` as a run has it;
- ``shipped_contiguous``: the same job with the reference in the contiguous
  layout (before the model's layout reached the defence).

Client states are the model's initial weights plus seeded noise (the cost does
not depend on what the clients learned).

    python benchmarks/robust_cost.py                 # convnet and resnet18, 20 clients
    python benchmarks/robust_cost.py --cases convnet:20 --repeats 3

Writes ``benchmarks/results/robust_cost.json`` (``--out`` overrides).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch
from omegaconf import OmegaConf

from fedlight.defenses.base import DefenseContext
from fedlight.defenses.feddefender_robust import (
    RobustFedDefender,
    RobustJob,
    RobustParams,
    run_robust_job,
)
from fedlight.defenses.fingerprint import score_clients, synthetic_inputs
from fedlight.defenses.robust_fingerprint import (
    class_impressions,
    disagreement,
    disagreement_per_client,
)
from fedlight.models import build_model

RESULTS = Path(__file__).resolve().parent / "results" / "robust_cost.json"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHAPE, MEAN, STD, CLASSES = (1, 32, 32), 0.1309, 0.2892, 10
BOUNDS = ((0.0 - MEAN) / STD, (1.0 - MEAN) / STD)
GEN1 = {"num_inputs": 20, "steps": 15, "lr": 0.1}


def client_states(model: torch.nn.Module, clients: int, seed: int = 0) -> list:
    """``clients`` states: the model's weights plus seeded noise (floats only)."""
    gen = torch.Generator().manual_seed(seed)
    base = model.state_dict()
    return [
        {
            k: v + 0.01 * torch.randn(v.shape, generator=gen)
            if v.is_floating_point()
            else v.clone()
            for k, v in base.items()
        }
        for _ in range(clients)
    ]


def model_layout(model_name: str) -> str:
    """The ``memory_format`` of ``configs/model/<model_name>.yaml``."""
    config = OmegaConf.load(CONFIGS / "model" / f"{model_name}.yaml")
    return str(config.get("memory_format") or "contiguous")


def shipped_defaults() -> dict[str, object]:
    """``defense=feddefender_robust``'s shipped parameter values."""
    return asdict(RobustParams())


def shipped_job(model_name: str, clients: int, layout: str) -> RobustJob:
    """The job the defence itself builds for a round after the first (reference:
    the global model, in ``layout``), so every shipped lever is in it."""
    context = DefenseContext(
        model_name, CLASSES, SHAPE, MEAN, STD, seed=7, memory_format=layout
    )
    defense = RobustFedDefender(RobustParams(remote=False), context)
    return defense.job_for_round(2, clients)


def engines(
    model_name: str, clients: int, layout: str
) -> dict[str, Callable[[], torch.Tensor]]:
    """One callable per engine, each scoring the same states."""
    model = build_model(model_name, CLASSES, SHAPE[0])
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    states = client_states(model, clients)
    noise = synthetic_inputs(10, SHAPE, MEAN, STD, 7)

    def impressions() -> torch.Tensor:
        return class_impressions(
            model,
            global_state,
            GEN1["num_inputs"],
            SHAPE,
            MEAN,
            STD,
            7,
            num_classes=CLASSES,
            steps=GEN1["steps"],
            lr=GEN1["lr"],
        )

    def search(engine: Callable[..., torch.Tensor]) -> Callable[[], torch.Tensor]:
        """The first generation's search (its K, steps, lr) run by ``engine``."""
        return lambda: engine(
            model,
            global_state,
            states,
            impressions(),
            BOUNDS,
            steps=GEN1["steps"],
            lr=GEN1["lr"],
        )

    job = shipped_job(model_name, clients, layout)
    contiguous = replace(job, memory_format="contiguous")
    return {
        "paper": lambda: score_clients(model, states, noise, na_t=0.0),
        "gen1_loop": search(disagreement_per_client),
        "gen2_same": search(disagreement),
        "shipped": lambda: run_robust_job(job, global_state, states).confidence,
        "shipped_contiguous": lambda: (
            run_robust_job(contiguous, global_state, states).confidence
        ),
    }


def interleaved_seconds(
    calls: dict[str, Callable[[], object]], repeats: int, warmups: int = 1
) -> dict[str, list[float]]:
    """Seconds of every call per repeat, the calls interleaved so that a noisy
    neighbour slows them alike, after ``warmups`` untimed calls each
    (allocator, thread pools, worker start: first-call costs)."""
    for fn in calls.values():
        for _ in range(warmups):
            fn()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def measure(model_name: str, clients: int, repeats: int) -> dict[str, object]:
    """Median seconds per engine over interleaved repeats, and the ratios."""
    layout = model_layout(model_name)
    seconds = interleaved_seconds(engines(model_name, clients, layout), repeats)
    median = {name: statistics.median(ts) for name, ts in seconds.items()}
    row = {
        "model": model_name,
        "clients": clients,
        "median_s": median,
        "all_s": seconds,
        "gen1_over_gen2_same": median["gen1_loop"] / median["gen2_same"],
        "gen1_over_shipped": median["gen1_loop"] / median["shipped"],
        "shipped_over_paper": median["shipped"] / median["paper"],
        "contiguous_over_shipped": median["shipped_contiguous"] / median["shipped"],
        "memory_format": layout,
    }
    print(
        f"{model_name:9s} {clients:3d} clients: "
        + "  ".join(f"{n} {s:.3f}s" for n, s in median.items())
        + f"  | gen1/gen2 same settings {row['gen1_over_gen2_same']:.1f}x,"
        f" gen1/shipped {row['gen1_over_shipped']:.1f}x,"
        f" contiguous/shipped {row['contiguous_over_shipped']:.2f}x",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["convnet:20", "resnet18:20"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for case in args.cases:
        name, clients = case.split(":")
        rows.append(measure(name, int(clients), args.repeats))
    payload = {
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{args.threads} torch threads, CPU",
        "torch": torch.__version__,
        "repeats": args.repeats,
        "gen1": GEN1,
        "shipped": {k: v for k, v in shipped_defaults().items() if k != "remote"},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
