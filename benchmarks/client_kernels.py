"""A client's Lightning fit per training-kernel choice, side by side in one run.

Each case fits the same partition from the same global model with
:func:`fedlight.client.fit_client` (the Lightning Trainer every client actor
runs, one thread as ``simulation.client_resources.num_cpus=1`` gives it), once
per kernel choice: the tensors' memory layout (``model.memory_format``) and the
optimiser's implementation (``client.fused_optimizer``). The choices are
interleaved per repeat so that a noisy neighbour slows them alike; the median
seconds per step (the whole ``fit_client`` call: model, Trainer, fit) and the
ratios to the plain kernels are reported.

    python benchmarks/client_kernels.py   # convnet 3,000 images, resnet18 256
    python benchmarks/client_kernels.py --cases convnet:3000 --repeats 3

Writes ``benchmarks/results/client_kernels.json`` (``--out`` overrides).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from robust_cost import interleaved_seconds

from fedlight.attacks.backdoor import Backdoor
from fedlight.client import ClientSpec, fit_client
from fedlight.models import build_model

RESULTS = Path(__file__).resolve().parent / "results" / "client_kernels.json"
CHOICES = {
    "plain": ("contiguous", False),
    "fused": ("contiguous", True),
    "channels_last": ("channels_last", False),
    "channels_last+fused": ("channels_last", True),
}


def client(model: str, images: int, memory_format: str, fused: bool) -> ClientSpec:
    """A benign client of ``images`` random 1x32x32 images (the cost does not
    depend on the pixels), batch 32, one epoch, Adam."""
    rng = np.random.default_rng(0)
    bundle = {
        "train_x": rng.standard_normal((images, 1, 32, 32)).astype(np.float32),
        "train_y": rng.integers(0, 10, images).astype(np.int64),
        "partitions": [np.arange(images)],
        "pixel_max": 2.0,
    }
    return ClientSpec(
        data=bundle,
        model=model,
        num_classes=10,
        in_channels=1,
        attack=Backdoor(malicious_clients=[]),
        epochs=1,
        batch_size=32,
        memory_format=memory_format,
        fused_optimizer=fused,
    )


def measure(model: str, images: int, repeats: int) -> dict[str, object]:
    """Median seconds per training step of each choice, interleaved repeats."""
    torch.manual_seed(0)
    state = build_model(model, 10, 1).state_dict()
    specs = {name: client(model, images, *c) for name, c in CHOICES.items()}
    steps = -(-images // 32)
    calls = {n: partial(fit_client, spec, 0, state, 1) for n, spec in specs.items()}
    seconds = {
        name: [t / steps for t in ts]
        for name, ts in interleaved_seconds(calls, repeats).items()
    }
    median = {name: statistics.median(ts) for name, ts in seconds.items()}
    row = {
        "model": model,
        "images": images,
        "median_s_per_step": median,
        "all_s_per_step": seconds,
        "plain_over": {n: median["plain"] / s for n, s in median.items()},
    }
    print(
        f"{model:9s} {images:5d} images, ms/step: "
        + "  ".join(f"{n} {1e3 * s:.2f}" for n, s in median.items())
        + " | plain/x: "
        + "  ".join(f"{n} {r:.2f}x" for n, r in row["plain_over"].items()),
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["convnet:3000", "resnet18:256"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = []
    for case in args.cases:
        name, images = case.split(":")
        rows.append(measure(name, int(images), args.repeats))
    payload = {
        "machine": f"{platform.processor() or platform.machine()}, 1 torch thread, CPU",
        # the widest vector kernels torch's CPU dispatch uses here (AVX512 or
        # AVX2): the choice's ratios differ between the two
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "repeats": args.repeats,
        "what": "fit_client (Lightning, 1 epoch, batch 32, Adam): seconds per step",
        "rows": rows,
        "wall_s": time.perf_counter() - start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
