"""FedDefender scoring: the oracle (engine="loop") against the engine ("batched").

Each measurement runs in its own subprocess, so the engine's peak resident memory
(``ru_maxrss``, or ``torch.cuda.max_memory_allocated`` on CUDA) is its own and not
a previous case's. Times are medians of 3 runs when one run takes under 10 s.

Client states are cheap stand-ins: every client shares the template's tensors over
65,536 elements and perturbs the rest (BatchNorm, biases, early convs, classifier)
with noise sliced from one bank, built on access. So 500 resnet18 clients do not
need 22 GB of states, the peak memory is the engine's (plus the Python and torch
runtime, about 0.3 GB), and every client still has different activations. The
oracle (``fedlight.defenses.fingerprint_oracle``) always runs on the CPU.

    python benchmarks/defender.py                    # the full grid (long)
    python benchmarks/defender.py --quick            # a subset, under 2 minutes
    python benchmarks/defender.py --cases resnet18:200 --device cuda

Only the full grid writes ``results/defender.json``; ``--quick`` writes
``results/defender-quick.json`` and ``--cases`` ``results/defender-cases.json``
(``--out`` overrides), so a partial run never replaces the committed full result.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from fedlight.defenses.fingerprint import score_clients, synthetic_inputs
from fedlight.models import build_model

RESULTS_DIR = Path(__file__).resolve().parent / "results"
FULL = [
    (m, n) for m in ("convnet", "resnet18") for n in (10, 20, 30, 50, 100, 200, 500)
]
QUICK = [("convnet", 10), ("convnet", 30), ("resnet18", 10), ("resnet18", 30)]
SHAPE, MEAN, STD = (1, 32, 32), 0.1307, 0.3081
NUM_INPUTS, NA_T = 10, 0.0
ORACLE_LIMIT_S = 600.0
SHARED_OVER = 65_536


class PerturbedStates(Sequence[Mapping[str, Tensor]]):
    """``clients`` states near ``base``, made on access (see the module docstring)."""

    def __init__(self, base: Mapping[str, Tensor], clients: int, seed: int = 0) -> None:
        self.base, self.clients = dict(base), clients
        self.small = [
            k
            for k, v in base.items()
            if v.is_floating_point() and v.numel() <= SHARED_OVER
        ]
        g = torch.Generator().manual_seed(seed)
        self.bank = torch.randn(SHARED_OVER + 7 * clients, generator=g)

    def __len__(self) -> int:
        return self.clients

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.clients))]
        if not 0 <= i < self.clients:
            raise IndexError(i)
        state = dict(self.base)
        for key in self.small:
            value = self.base[key]
            noise = self.bank[7 * i : 7 * i + value.numel()].view_as(value)
            if key.endswith("running_var"):
                state[key] = value * torch.exp(0.05 * noise)
            else:
                state[key] = value + 0.01 * noise
        return state


def measure(model_name: str, clients: int, engine: str, device: str) -> dict:
    """Time ``score_clients`` in this process; report its peak memory."""
    torch.manual_seed(0)
    model = build_model(model_name).eval()
    states = PerturbedStates(model.state_dict(), clients)
    inputs = synthetic_inputs(NUM_INPUTS, SHAPE, MEAN, STD, seed=0)
    kwargs = {"engine": engine}
    if engine == "batched":
        kwargs["device"] = device
    score_clients(model, states[:2], inputs[:2], NA_T, **kwargs)  # warm-up
    cuda = engine == "batched" and device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times: list[float] = []
    while len(times) < 3:
        start = time.perf_counter()
        confidence = score_clients(model, states, inputs, NA_T, **kwargs)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        if times[0] >= 10.0:
            break
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    return {
        "seconds": statistics.median(times),
        "runs": len(times),
        "peak_mb": peak,
        "rss_before_mb": rss_before,
        "confidence": confidence.tolist(),
    }


def in_subprocess(model_name: str, clients: int, engine: str, device: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--measure",
        f"{model_name}:{clients}:{engine}",
        "--device",
        device,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def oracle_estimate(history: list[tuple[int, float]], clients: int) -> float | None:
    """Upper estimate from the largest measured N: the count grows as N^2."""
    if not history:
        return None
    n, seconds = max(history)
    return seconds * (clients / n) ** 2


def default_name(quick: bool, cases: bool) -> str:
    """The full grid's file, or a partial run's own (``--cases`` wins)."""
    if cases:
        return "defender-cases.json"
    return "defender-quick.json" if quick else "defender.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a subset, < 2 minutes")
    parser.add_argument("--device", default="cpu", help="engine device: cpu or cuda")
    parser.add_argument(
        "--cases", help="comma list of model:clients, e.g. resnet18:200"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="default: results/defender.json, -quick.json or -cases.json",
    )
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure:
        model_name, clients, engine = args.measure.split(":")
        print(json.dumps(measure(model_name, int(clients), engine, args.device)))
        return

    if args.cases:
        cases = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cases.split(",")]
    else:
        cases = QUICK if args.quick else FULL
    out = args.out or RESULTS_DIR / default_name(args.quick, bool(args.cases))
    rows, oracle_history = [], {}
    header = (
        f"{'model':<9} {'clients':>7} {'inputs':>6} {'oracle_s':>10} "
        f"{'engine_s':>9} {'ratio':>7} {'peak_mb':>8}  device"
    )
    print(header)
    for model_name, clients in cases:
        history = oracle_history.setdefault(model_name, [])
        estimate = oracle_estimate(history, clients)
        oracle = None
        if estimate is None or estimate <= ORACLE_LIMIT_S:
            oracle = in_subprocess(model_name, clients, "loop", "cpu")
            history.append((clients, oracle["seconds"]))
        engine = in_subprocess(model_name, clients, "batched", args.device)
        oracle_s = oracle["seconds"] if oracle else None
        row = {
            "model": model_name,
            "clients": clients,
            "inputs": NUM_INPUTS,
            "oracle_s": oracle_s,
            "engine_s": engine["seconds"],
            "ratio": oracle_s / engine["seconds"] if oracle_s else None,
            "engine_peak_mb": engine["peak_mb"],
            "device": args.device,
            "oracle_device": "cpu",
            "runs": {
                "oracle": oracle["runs"] if oracle else 0,
                "engine": engine["runs"],
            },
            "rss_before_engine_mb": engine["rss_before_mb"],
        }
        if oracle is None:
            row["oracle_estimate_s"] = estimate
            row["note"] = (
                f"oracle skipped: N^2 extrapolation from N={max(history)[0]} "
                f"predicts {estimate:.0f} s > {ORACLE_LIMIT_S:.0f} s"
            )
        elif oracle["confidence"] != engine["confidence"]:
            row["note"] = "oracle and engine confidences differ"
        rows.append(row)
        oracle_txt = (
            f"{oracle_s:10.3f}" if oracle_s else f"{'~' + f'{estimate:.0f}':>10}"
        )
        ratio_txt = f"{row['ratio']:7.1f}" if row["ratio"] else f"{'-':>7}"
        print(
            f"{model_name:<9} {clients:>7} {NUM_INPUTS:>6} {oracle_txt} "
            f"{engine['seconds']:9.3f} {ratio_txt} {engine['peak_mb']:8.0f}  "
            f"{args.device}",
            flush=True,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
