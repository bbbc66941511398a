"""The robust FedDefender's full development runs side by side, one row per run.

Reads every ``results.json`` under the given folders (the ``robust_dev`` sweeps
of ``launch/matrix.sh``, development seeds only) and prints a markdown table:
per run the lever set (the run folder's overrides), max ASR in any round and
after round 1, final clean accuracy, mean recall and precision over the rounds
where defined, benign client-rounds flagged, the attackers' share of the
aggregate after round 1, and the defence's seconds per round; a scheduled
attacker counts only in the rounds it attacks, as in ``fedlight.report``.

    python benchmarks/robust_dev_runs.py multirun/dev/robust_dev \\
        multirun/<commit>/robust_dev
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from fedlight.report import recount


def row(path: Path) -> dict[str, object]:
    """One run's figures."""
    d = json.loads(path.read_text())
    mal = {str(c) for c in d.get("malicious_clients") or []}
    config_path = path.parent / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.exists() else {}
    # a scheduled attacker counts only in the rounds it attacks (as the report)
    rounds = recount(d["rounds"], sorted(mal), config or {})
    asr = [r["asr"] for r in rounds if r.get("asr") is not None]
    recall = [r["recall"] for r in rounds if r.get("recall") is not None and mal]
    precision = [r["precision"] for r in rounds if r.get("precision") is not None]
    benign_flags = sum(len(set(r.get("flagged") or []) - mal) for r in rounds)
    benign_rounds = sum(len(set(r.get("participants") or []) - mal) for r in rounds)
    aw = [r.get("attacker_weight") or 0.0 for r in rounds[1:]] if mal else []
    secs = sorted(r.get("defense_seconds", 0.0) for r in rounds)
    overrides = path.parent.name.split(",")
    return {
        "run": ", ".join(o for o in overrides if not o.startswith("defense=")),
        "max_asr": max(asr) if asr else None,
        "max_asr_after_1": max(asr[1:]) if len(asr) > 1 else None,
        "accuracy": rounds[-1]["accuracy"],
        "recall": sum(recall) / len(recall) if recall else None,
        "precision": sum(precision) / len(precision) if precision else None,
        "benign_flags": f"{benign_flags}/{benign_rounds}",
        "attacker_weight_after_1": max(aw) if aw else None,
        "defense_s": secs[len(secs) // 2],
        "commit": (d.get("code") or {}).get("commit", "?")[:7],
    }


def fmt(v: object) -> str:
    return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def main(argv: list[str]) -> int:
    rows = [
        row(p) for folder in argv for p in sorted(Path(folder).rglob("results.json"))
    ]
    keys = list(rows[0]) if rows else []
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(fmt(r[k]) for k in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
