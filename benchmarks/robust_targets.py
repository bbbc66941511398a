"""The robust FedDefender's targets (issue 17) judged run by run on its test table.

Reads every finished run under the given folders through ``fedlight.report``
(the reader the test table uses, so a scheduled attacker counts only in the
rounds it attacks), keeps the ``defense=feddefender_robust`` runs, and for each
target prints in how many runs it held and, per setting that missed it, the
seeds and values that missed. A bimodal setting shows its failure rate (k of n
seeds) instead of a mean that no seed had. The clean-accuracy target is the
report's ``accuracy_drop``: the mean final accuracy of FedAvg without attacker
on the run's task, found in the same folders, minus the run's.

    python benchmarks/robust_targets.py docs/results/runs/f8657a5/robust_test \\
        docs/results/runs/4bfa0b8/robust_test

The targets are issue 17's, on the test settings (docs/results/robust/PROTOCOL.md).
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

from fedlight.report import Run, Target, find_runs, set_accuracy_drop

# bounds on the report's per-run metrics
TARGETS = (
    Target("max_asr", "<=", 0.10),
    Target("max_asr_after_1", "<=", 0.05),
    Target("recall", ">=", 0.95),
    Target("precision", ">=", 0.90),
    Target("attacker_weight", "<=", 0.02),  # the largest share after round 1
    Target("fpr", "<=", 0.05),
    Target("accuracy_drop", "<=", 0.01),
)
# which runs a target judges: the FPR target is about runs without attack,
# clean accuracy about every run, the rest about attacked runs
WITHOUT_ATTACK = frozenset({"fpr"})
EVERY_RUN = frozenset({"accuracy_drop"})
# the test attack every test run shares: left out of the setting's name
SHARED = re.compile(
    r"(attack\.malicious_clients=\[7\]|attack\.target_label=3|attack\.trigger_size=8"
    r"|defense=\w+|seed=\d+|partition=dirichlet)"
)


def setting(folder: Path) -> str:
    """The run folder's overrides without the seed, defence and shared attack."""
    parts = [p for p in folder.name.split(",") if not SHARED.fullmatch(p)]
    return f"{folder.parent.name}: " + ", ".join(parts).replace("\\", "")


def load(folders: list[str]) -> list[Run]:
    """The robust runs, each with the report's metrics (``accuracy_drop``
    against FedAvg's clean runs in the same folders)."""
    runs = [run for folder in folders for run in find_runs(Path(folder))[0]]
    set_accuracy_drop(runs)
    # the label carries the run's own overrides: "feddefender_robust [max_attackers=3]"
    return [r for r in runs if r.defense.split(" [")[0] == "feddefender_robust"]


def judge(runs: list[Run]) -> list[str]:
    """Markdown lines: per target, runs that held, and the settings that missed."""
    names = {r.path: setting(r.path) for r in runs}
    lines = [f"{len(runs)} runs of feddefender_robust"]
    for target in TARGETS:
        key = target.metric
        judged = [
            r
            for r in runs
            if r.metrics.get(key) is not None
            and (
                key in EVERY_RUN
                or (not r.attacked if key in WITHOUT_ATTACK else r.attacked)
            )
        ]
        missed = [r for r in judged if not target.met(r.metrics[key])]
        lines.append(
            f"\n**{key} {target.op} {target.bound:g}**: held in "
            f"{len(judged) - len(missed)} of {len(judged)} runs"
        )
        seeds = defaultdict(int)
        for r in judged:
            seeds[names[r.path]] += 1
        by_setting = defaultdict(list)
        for r in missed:
            by_setting[names[r.path]].append(r)
        for name, rs in sorted(by_setting.items()):
            values = ", ".join(
                f"seed {r.seed} {r.metrics[key]:.3f}"
                for r in sorted(rs, key=lambda r: r.seed)
            )
            lines.append(f"- {name}: missed in {len(rs)} of {seeds[name]} ({values})")
    return lines


def main(argv: list[str]) -> int:
    print("\n".join(judge(load(argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
