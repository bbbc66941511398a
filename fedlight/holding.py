"""Which defences held against the plain attack in a setting: the defences the
adaptive table (docs/results/adaptive/) runs each adaptive attack against.

An adaptive attack is informative only against a defence that stops the plain
one: a defence the plain backdoor already breaks is reported as broken, not rerun
with a quieter attacker (docs/results/adaptive/README.md fixes this rule before
any adaptive run). The list is read from a report's ``table.csv`` (its ``held``
and ``judged`` columns, :func:`fedlight.report.holds`), and FedAvg (``none``)
always leads it: the attack's strength with no defence.

    python -m fedlight.holding docs/results/zoo/table.csv mnist_20
    # -> none,fedavg_cap,krum,...   (every defence that held in >= 1 of 3 seeds)
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path

FLOOR = "none"  # FedAvg: what the attack reaches with no defence


def holding_defenses(
    table: Path,
    setting: str,
    defenses: Sequence[str],
    attack: str = "backdoor",
    seeds: int = 3,
) -> list[str]:
    """``none`` and, in ``defenses``' order, each defence whose row for
    (``setting``, ``attack``) held in at least one of ``seeds`` judged seeds.

    Raises ValueError naming what is missing when a defence of ``defenses`` has
    no row there or fewer judged seeds than ``seeds``: the rule is applied to a
    finished zoo cell only, never to a partial one.
    """
    with table.open(newline="") as f:
        rows = {
            r["defense"]: r
            for r in csv.DictReader(f)
            if r["setting"] == setting and r["attack"] == attack
        }
    judged = {n: int(rows[n]["judged"] or 0) if n in rows else 0 for n in defenses}
    short = [f"{n} ({judged[n]})" for n in defenses if judged[n] < seeds]
    if short:
        raise ValueError(
            f"{table}: {setting} / {attack} needs {seeds} judged seeds per defence; "
            f"short: {', '.join(short)} (run the zoo cell first, or set ZOO_DEFENSES)"
        )
    held = [n for n in defenses if n != FLOOR and int(rows[n]["held"] or 0) > 0]
    return [FLOOR, *held]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fedlight.holding", description=__doc__.splitlines()[0]
    )
    parser.add_argument("table", type=Path, help="a report's table.csv")
    parser.add_argument("setting", help="the setting column, e.g. mnist_20")
    parser.add_argument(
        "--defenses",
        required=True,
        help="comma-separated defences to judge (the zoo's list), in output order",
    )
    parser.add_argument("--attack", default="backdoor")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    if not args.table.is_file():
        print(f"fedlight.holding: error: {args.table} is not a file", file=sys.stderr)
        return 2
    try:
        names = holding_defenses(
            args.table,
            args.setting,
            [d for d in args.defenses.split(",") if d],
            args.attack,
            args.seeds,
        )
    except ValueError as err:
        print(f"fedlight.holding: error: {err}", file=sys.stderr)
        return 2
    print(",".join(names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
