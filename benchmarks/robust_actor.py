"""The robust FedDefender's round as a run pays it: in the Ray actor that
``remote=true`` (the default) uses, beside the same job in-process, per OpenMP
wait policy, measured side by side in one run.

``robust_cost.py`` times the scoring job in-process; a run sends it to a
long-lived actor (``fedlight.defenses.remote``) started with
``OMP_WAIT_POLICY=PASSIVE``, because on cores that other processes hold
spinning OpenMP threads wait for descheduled ones. This prints the medians of:

- ``inprocess``: ``run_robust_job`` in this process (2 threads);
- ``passive`` (what runs use), ``default`` (no policy set), ``spin20k``
  (``GOMP_SPINCOUNT=20000``): the same job through ``DefenderService`` actors;
- ``passive_1thread``: the passive actor with one torch thread.

The reference runs in the model config's ``memory_format``, as in a run.

Run it once on a quiet machine and once while the cores are busy (e.g. beside a
training run) to see why runs use ``passive``.

    python benchmarks/robust_actor.py --repeats 9 --label quiet

Appends to ``benchmarks/results/robust_actor.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import ray
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from robust_cost import (  # noqa: E402
    CLASSES,
    SHAPE,
    client_states,
    interleaved_seconds,
    model_layout,
    shipped_job,
)

from fedlight.defenses.feddefender_robust import (  # noqa: E402
    run_robust_job,
)
from fedlight.defenses.remote import DefenderService  # noqa: E402
from fedlight.models import build_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "robust_actor.json"
ENVS = {
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "default": {},
    "spin20k": {"GOMP_SPINCOUNT": "20000"},
}


def measure(repeats: int, clients: int) -> dict[str, float]:
    """Median seconds per variant over interleaved repeats."""
    model = build_model("convnet", CLASSES, SHAPE[0])
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    states = client_states(model, clients)
    job = replace(
        shipped_job("convnet", clients, model_layout("convnet")), num_threads=2
    )
    one = replace(job, num_threads=1)
    actors = {
        name: ray.remote(DefenderService)
        .options(num_cpus=0, runtime_env={"env_vars": env})
        .remote()
        for name, env in ENVS.items()
    }
    torch.set_num_threads(2)
    calls = {"inprocess": lambda: run_robust_job(job, global_state, states)}
    for name, actor in actors.items():
        calls[name] = lambda a=actor: ray.get(
            a.call.remote(run_robust_job, job, global_state, states)
        )
    calls["passive_1thread"] = lambda: ray.get(
        actors["passive"].call.remote(run_robust_job, one, global_state, states)
    )
    seconds = interleaved_seconds(calls, repeats, warmups=2)
    return {name: statistics.median(ts) for name, ts in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--label", default="quiet", help="what else the cores ran")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flray-") as tmp:
        ray.init(
            num_cpus=2, _temp_dir=tmp, include_dashboard=False, log_to_driver=False
        )
        try:
            median = measure(args.repeats, args.clients)
        finally:
            ray.shutdown()
    row = {
        "label": args.label,
        "clients": args.clients,
        "repeats": args.repeats,
        "median_s": median,
        "actor_over_inprocess": median["passive"] / median["inprocess"],
    }
    print(json.dumps(row, indent=1))
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    args.out.write_text(json.dumps([*rows, row], indent=1) + "\n")


if __name__ == "__main__":
    main()
