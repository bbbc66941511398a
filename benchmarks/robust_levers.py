"""Which of the robust FedDefender's detection levers find the attacker, on fixed
client models.

For a setting, trains every client for ``--rounds`` rounds along the *clean*
trajectory (the global model is FedAvg of the benign clients only, as a perfect
defence would leave it) with the plain reference training loop, and saves each
round's client states. Then every (fingerprint, inputs) pair scores the same
states, so the levers are compared on identical models: per round, whether each
attacker is flagged (confidence > 0.5) and how many benign clients are. Memory
and the count cap act across rounds through the aggregation, so they are
measured by full runs (``launch/matrix.sh ablation``), not here.

    python benchmarks/robust_levers.py   # fmnist_20, mnist_20_dirichlet05_3attackers
    python benchmarks/robust_levers.py --settings mnist_20 --rounds 4

States are cached under ``--cache`` (default ``benchmarks/results/.levers-cache``,
not committed); results go to ``benchmarks/results/robust_levers.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from fedlight.defenses.feddefender_robust import (
    FINGERPRINTS,
    INPUTS,
    RobustJob,
    round_reference,
    run_robust_job,
)
from fedlight.models import build_model
from fedlight.reference import fedavg, train_clients
from fedlight.simulate import prepare_experiment

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "robust_levers.json"
DEFAULT_SETTINGS = ("fmnist_20", "mnist_20_dirichlet05_3attackers")


def compose_setting(setting: str, seed: int) -> DictConfig:
    """The experiment ``setting``'s config with ``seed``."""
    with initialize_config_module("fedlight.configs", version_base="1.3"):
        return compose("config", [f"+experiment={setting}", f"seed={seed}"])


def collect(setting: str, cfg: DictConfig, rounds: int, cache: Path) -> list[Path]:
    """Train ``rounds`` rounds of ``setting`` (composed as ``cfg``) on the clean
    trajectory; one file of client states per round (reused when already in
    ``cache``)."""
    seed = cfg.seed
    paths = [cache / f"{setting}-s{seed}-r{r:02d}.pt" for r in range(1, rounds + 1)]
    if all(p.is_file() for p in paths):
        return paths
    torch.set_num_threads(1)
    exp = prepare_experiment(cfg)
    data, malicious = exp.data, {int(m) for m in exp.malicious}
    channels = data.input_shape[0]
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model.name, data.num_classes, channels)
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    spec = exp.client_spec(cfg, exp.bundle(), num_threads=1)
    cache.mkdir(parents=True, exist_ok=True)
    chosen = list(range(cfg.num_clients))
    tensors: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for r, path in enumerate(paths, start=1):
        start = time.perf_counter()
        trained, fits = train_clients(
            cfg, spec, model, global_state, exp.attack, chosen, r, tensors
        )
        states = {int(c): state for c, state in trained.items()}
        counts = {int(c): fit["num-examples"] for c, fit in fits.items()}
        torch.save(
            {
                "global": global_state,
                "states": states,
                "counts": counts,  # reported, with any boost
                "malicious": sorted(malicious),
                "mean": data.mean,
                "std": data.std,
                "num_classes": data.num_classes,
                "input_shape": tuple(data.input_shape),
                "model": cfg.model.name,
            },
            path,
        )
        benign = [c for c in states if c not in malicious]
        global_state = fedavg([states[c] for c in benign], [counts[c] for c in benign])
        print(f"{setting} round {r}: {time.perf_counter() - start:.1f} s", flush=True)
    return paths


Z_CUT = 5.0  # the shipped default (RobustParams.z_cut)


def score(
    path: Path, fingerprint: str, inputs: str, server_round: int, max_attackers: int
) -> dict[str, object]:
    """One lever pair on one round's states: who is flagged, and how long it took.

    The disagreement's reference follows ``reference=auto`` (see
    :func:`round_reference`); the boolean fingerprint's leave-one-out repetitions
    are the setting's ``server.max_attackers``, as in a run, not the attack's
    ground truth.
    """
    saved = torch.load(path)
    ids = sorted(saved["states"])
    states = [saved["states"][c] for c in ids]
    malicious = [ids.index(m) for m in saved["malicious"]]
    job = RobustJob(
        model=saved["model"],
        num_classes=saved["num_classes"],
        input_shape=saved["input_shape"],
        mean=saved["mean"],
        std=saved["std"],
        seed=11,
        num_inputs=10 if fingerprint == "boolean" else 20,  # the paper's K
        inputs=inputs,
        fingerprint=fingerprint,
        z_cut=Z_CUT,
        steps=15,
        lr=0.1,
        na_t=0.0,
        num_attackers=max_attackers,
        reference=round_reference("auto", server_round),
        num_threads=1,
    )
    start = time.perf_counter()
    confidence = run_robust_job(job, saved["global"], states).confidence
    seconds = time.perf_counter() - start
    flagged = {i for i in range(len(ids)) if confidence[i] > 0.5}
    return {
        "recall": len(flagged & set(malicious)) / max(len(malicious), 1),
        "false_flags": len(flagged - set(malicious)),
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cache", type=Path, default=HERE / "results" / ".levers-cache"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    rows = []
    for setting in args.settings:
        cfg = compose_setting(setting, args.seed)
        paths = collect(setting, cfg, args.rounds, args.cache)
        max_attackers = int(cfg.server.max_attackers)
        for fingerprint in FINGERPRINTS:
            for inputs in INPUTS:
                per_round = [
                    score(p, fingerprint, inputs, r, max_attackers)
                    for r, p in enumerate(paths, 1)
                ]
                later = per_round[1:]
                row = {
                    "setting": setting,
                    "fingerprint": fingerprint,
                    "inputs": inputs,
                    "recall": sum(r["recall"] for r in per_round) / len(per_round),
                    "false_flags": sum(r["false_flags"] for r in per_round),
                    "recall_r2_on": sum(r["recall"] for r in later) / len(later),
                    "false_flags_r2_on": sum(r["false_flags"] for r in later),
                    "seconds_per_round": sorted(r["seconds"] for r in per_round)[
                        len(per_round) // 2
                    ],
                    "rounds": per_round,
                }
                rows.append(row)
                print(
                    f"{setting:34s} {fingerprint:13s} {inputs:18s} "
                    f"recall {row['recall']:.2f} (r>=2 {row['recall_r2_on']:.2f})  "
                    f"benign flags {row['false_flags']:2d} "
                    f"(r>=2 {row['false_flags_r2_on']:2d})  "
                    f"{row['seconds_per_round']:.2f} s/round",
                    flush=True,
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "rounds": args.rounds,
        "seed": args.seed,
        "threads": 1,
        "note": "clean trajectory; z_cut 5, K 20 (boolean: 10), 15 search steps, "
        "disagreement against the clients' coordinate-wise median in round 1",
        "rows": rows,
    }
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
