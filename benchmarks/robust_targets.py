"""The robust FedDefender's targets (issue 17) judged run by run on its test table.

Reads every ``results.json`` under the given folders, keeps the
``defense=feddefender_robust`` runs, and for each target prints in how many runs
it held and, per setting that missed it, the seeds and values that missed. A
bimodal setting shows its failure rate (k of n seeds) instead of a mean that no
seed had. The clean-accuracy target compares each run's final accuracy with the
mean of the FedAvg runs without attacker (``defense=none``, no malicious client)
on the same dataset, split and client count, found in the same folders.

    python benchmarks/robust_targets.py docs/results/runs/f8657a5/robust_test \\
        docs/results/runs/4bfa0b8/robust_test

Per-run figures come from ``robust_dev_runs.row`` (a scheduled attacker counts
only in the rounds it attacks); the targets are issue 17's, on the test settings.
"""

from __future__ import annotations

import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import yaml
from robust_dev_runs import row

# (figure, direction, threshold): "<=" holds when the run's figure is at most it
TARGETS = (
    ("max_asr", "<=", 0.10),
    ("max_asr_after_1", "<=", 0.05),
    ("recall", ">=", 0.95),
    ("precision", ">=", 0.90),
    ("attacker_weight_after_1", "<=", 0.02),
    ("fpr", "<=", 0.05),
    ("accuracy_drop", "<=", 0.01),
)
# the test attack every test run shares: left out of the setting's name
SHARED = re.compile(
    r"(attack\.malicious_clients=\[7\]|attack\.target_label=3|attack\.trigger_size=8"
    r"|defense=\w+|seed=\d+|partition=dirichlet)"
)


def task(config: dict) -> tuple:
    """What the clean reference must share with a run: data, split, clients."""
    part = config["partition"]
    return (
        config["dataset"]["name"],
        part["name"],
        part.get("alpha") if part["name"] == "dirichlet" else None,
        config["num_clients"],
    )


def setting(folder: Path) -> str:
    """The run folder's overrides without the seed, defence and shared attack."""
    parts = [p for p in folder.name.split(",") if not SHARED.fullmatch(p)]
    return f"{folder.parent.name}: " + ", ".join(parts).replace("\\", "")


def load(folders: list[str]) -> tuple[list[dict], dict[tuple, float]]:
    """The robust runs' figures, and FedAvg's clean accuracy per task."""
    runs, clean = [], defaultdict(list)
    for folder in folders:
        for path in sorted(Path(folder).rglob("results.json")):
            config = yaml.safe_load((path.parent / "config.yaml").read_text())
            attacked = bool(config["attack"].get("malicious_clients")) and (
                config["attack"]["name"] != "none"
            )
            figures = row(path)
            if config["defense"]["name"] == "none" and not attacked:
                clean[task(config)].append(figures["accuracy"])
            if config["defense"]["name"] != "feddefender_robust":
                continue
            flagged, benign = (int(x) for x in figures["benign_flags"].split("/"))
            figures.update(
                setting=setting(path.parent),
                seed=config["seed"],
                attacked=attacked,
                task=task(config),
                fpr=None if attacked else flagged / benign,
            )
            runs.append(figures)
    return runs, {k: statistics.mean(v) for k, v in clean.items()}


def judge(runs: list[dict], clean: dict[tuple, float]) -> list[str]:
    """Markdown lines: per target, runs that held, and the settings that missed."""
    for r in runs:
        ref = clean.get(r["task"])
        r["accuracy_drop"] = None if ref is None else ref - r["accuracy"]
    lines = [f"{len(runs)} runs of feddefender_robust"]
    for key, direction, limit in TARGETS:
        judged = [r for r in runs if r.get(key) is not None]
        if key not in ("fpr", "accuracy_drop"):
            judged = [r for r in judged if r["attacked"]]
        missed = [
            r
            for r in judged
            if (r[key] > limit if direction == "<=" else r[key] < limit)
        ]
        lines.append(
            f"\n**{key} {direction} {limit}**: held in "
            f"{len(judged) - len(missed)} of {len(judged)} runs"
        )
        seeds = defaultdict(int)
        for r in judged:
            seeds[r["setting"]] += 1
        by_setting = defaultdict(list)
        for r in missed:
            by_setting[r["setting"]].append(r)
        for name, rs in sorted(by_setting.items()):
            values = ", ".join(
                f"seed {r['seed']} {r[key]:.3f}"
                for r in sorted(rs, key=lambda r: r["seed"])
            )
            lines.append(f"- {name}: missed in {len(rs)} of {seeds[name]} ({values})")
    return lines


def main(argv: list[str]) -> int:
    runs, clean = load(argv)
    print("\n".join(judge(runs, clean)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
