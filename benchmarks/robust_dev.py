"""Development study of the robust FedDefender's search levers, on fixed client
models from the development settings only (docs/results/robust/PROTOCOL.md).

The client states come from :mod:`robust_levers`' clean-trajectory cache (each
round's 20 or 30 trained client models, attackers included, the global model
being FedAvg of the benign clients). Every variant scores the same states; per
round it records each attacker's robust z-score and the highest benign one, so
a lever is judged by its margin (lowest attacker z over highest benign z), not
only by whether one cut happens to fall between them.

    python benchmarks/robust_dev.py --settings mnist_20_dirichlet05_3attackers \\
        --seeds 100 --rounds 5 --variants gen1 k10_s8 universal_k10_s8

Writes ``benchmarks/results/robust_dev.json`` (``--out`` overrides), and
refuses a seed or attacker set of the test settings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from robust_levers import collect, compose_setting  # noqa: E402

from fedlight.defenses.feddefender_robust import (  # noqa: E402
    RobustJob,
    run_robust_job,
)
from fedlight.defenses.robust_fingerprint import robust_z  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "robust_dev.json"
DEV_SEEDS = (100, 101)
DEV_SETTINGS = (
    "mnist_20",
    "fmnist_30",
    "mnist_20_dirichlet05",
    "mnist_20_dirichlet05_3attackers",
)

# name -> the search's settings; round 1 compares with the clients' median
# unless "ref1" says otherwise
VARIANTS: dict[str, dict[str, object]] = {
    "gen1": {"k": 20, "steps": 15, "lr": 0.1},
    "k10_s15": {"k": 10, "steps": 15, "lr": 0.1},
    "k10_s8": {"k": 10, "steps": 8, "lr": 0.2},
    "k10_s5": {"k": 10, "steps": 5, "lr": 0.3},
    "universal_k10_s8": {"k": 10, "steps": 8, "lr": 0.2, "universal": True},
    "universal_k10_s5": {"k": 10, "steps": 5, "lr": 0.3, "universal": True},
    "universal_k20_s8": {"k": 20, "steps": 8, "lr": 0.2, "universal": True},
    "universal_k10_s15": {"k": 10, "steps": 15, "lr": 0.1, "universal": True},
    "universal_k20_s15": {"k": 20, "steps": 15, "lr": 0.1, "universal": True},
    "noise_k10_s8": {"k": 10, "steps": 8, "lr": 0.2, "inputs": "noise"},
    "k10_s8_ref1_mean": {"k": 10, "steps": 8, "lr": 0.2, "ref1": "mean"},
}
Z_CUT = 5.0


def score(saved: dict, server_round: int, variant: dict[str, object]) -> dict:
    """One variant on one round's states, scored by the defence's own job: z
    per client and the seconds taken."""
    ids = sorted(saved["states"])
    states = [saved["states"][c] for c in ids]
    job = RobustJob(
        model=saved["model"],
        num_classes=saved["num_classes"],
        input_shape=tuple(saved["input_shape"]),
        mean=saved["mean"],
        std=saved["std"],
        seed=11,
        num_inputs=int(variant["k"]),
        inputs=str(variant.get("inputs", "class_impressions")),
        fingerprint="disagreement",
        z_cut=Z_CUT,
        steps=int(variant["steps"]),
        lr=float(variant["lr"]),
        na_t=0.0,
        num_attackers=1,
        # round 1 against the clients' median unless "ref1" says otherwise
        reference=str(variant.get("ref1", "median")) if server_round == 1 else "global",
        universal=bool(variant.get("universal", False)),
    )
    start = time.perf_counter()
    found = run_robust_job(job, saved["global"], states)
    kl, aim, z = found.kl, found.aim, found.statistic
    seconds = time.perf_counter() - start
    malicious = set(saved["malicious"])
    attackers = [float(z[i]) for i, c in enumerate(ids) if c in malicious]
    benign = [float(z[i]) for i, c in enumerate(ids) if c not in malicious]
    # the same statistic on a log scale (a multiple of the typical KL, not a
    # difference): robust z of log KL
    z_log = robust_z(kl.clamp_min(1e-12).log())
    return {
        "round": server_round,
        "kl": kl.tolist(),
        "aim": aim.tolist(),
        "malicious_index": [i for i, c in enumerate(ids) if c in malicious],
        "attacker_z_log": [
            float(z_log[i]) for i, c in enumerate(ids) if c in malicious
        ],
        "benign_max_z_log": max(
            float(z_log[i]) for i, c in enumerate(ids) if c not in malicious
        ),
        "attacker_z": attackers,
        "benign_max_z": max(benign),
        "recall": sum(a > Z_CUT for a in attackers) / max(len(attackers), 1),
        "false_flags": sum(b > Z_CUT for b in benign),
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(DEV_SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[100])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--cache", type=Path, default=HERE / "results" / ".levers-cache"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    for seed in args.seeds:
        if seed not in DEV_SEEDS:
            parser.error(f"--seeds: {seed} is not a development seed {DEV_SEEDS}")
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {unknown}; known: {sorted(VARIANTS)}")
    rows = []
    for setting in args.settings:
        for seed in args.seeds:
            cfg = compose_setting(setting, seed)
            paths = collect(setting, cfg, args.rounds, args.cache)
            torch.set_num_threads(args.threads)
            saved = [torch.load(p) for p in paths]
            for name in args.variants:
                rounds = [score(s, r, VARIANTS[name]) for r, s in enumerate(saved, 1)]
                att = min(min(r["attacker_z"]) for r in rounds)
                ben = max(r["benign_max_z"] for r in rounds)
                row = {
                    "setting": setting,
                    "seed": seed,
                    "variant": name,
                    "settings": VARIANTS[name],
                    "min_attacker_z": att,
                    "max_benign_z": ben,
                    "round1_min_attacker_z": min(rounds[0]["attacker_z"]),
                    "round1_max_benign_z": rounds[0]["benign_max_z"],
                    "recall": sum(r["recall"] for r in rounds) / len(rounds),
                    "false_flags": sum(r["false_flags"] for r in rounds),
                    "median_s": sorted(r["seconds"] for r in rounds)[len(rounds) // 2],
                    "rounds": rounds,
                }
                rows.append(row)
                print(
                    f"{setting:32s} s{seed} {name:18s} attacker z min {att:7.1f} "
                    f"(r1 {row['round1_min_attacker_z']:6.1f})  benign z max "
                    f"{ben:5.1f} (r1 {row['round1_max_benign_z']:5.1f})  recall "
                    f"{row['recall']:.2f} false {row['false_flags']}  "
                    f"{row['median_s']:.2f} s",
                    flush=True,
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = (
        json.loads(args.out.read_text()).get("rows", []) if args.out.is_file() else []
    )
    keep = {(r["setting"], r["seed"], r["variant"]) for r in rows}
    merged = [
        r for r in previous if (r["setting"], r["seed"], r["variant"]) not in keep
    ]
    payload = {
        "note": "development settings only; clean trajectory; z = robust z of the "
        "final KL; round 1 against the clients' median unless ref1 says otherwise",
        "threads": args.threads,
        "rows": merged + rows,
    }
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
