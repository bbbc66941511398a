"""The adaptive table's defence list: FedAvg and the zoo defences that held
against the plain attack in a finished zoo cell (fedlight.holding)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedlight.holding import holding_defenses

MATRIX = Path(__file__).resolve().parents[1] / "launch" / "matrix.sh"


def write_table(path: Path, rows: list[tuple[str, str, str, int, int]]) -> Path:
    """A report's table.csv with only the columns the rule reads."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["setting", "attack", "defense", "held", "judged"])
        writer.writerows(rows)
    return path


def test_held_in_one_seed_is_kept_and_never_held_is_left_out(tmp_path: Path) -> None:
    table = write_table(
        tmp_path / "table.csv",
        [
            ("mnist_20", "backdoor", "none", 0, 3),
            ("mnist_20", "backdoor", "krum", 3, 3),
            ("mnist_20", "backdoor", "rfa", 0, 3),
            ("mnist_20", "backdoor", "flame", 1, 3),  # bimodal: kept
            ("fmnist_20", "backdoor", "rfa", 3, 3),  # another setting
            ("mnist_20", "pgd", "rfa", 3, 3),  # another attack
        ],
    )
    got = holding_defenses(table, "mnist_20", ["none", "rfa", "flame", "krum"])
    assert got == ["none", "flame", "krum"]  # FedAvg first, then the given order


def test_an_unfinished_cell_is_refused_naming_what_is_short(tmp_path: Path) -> None:
    table = write_table(
        tmp_path / "table.csv",
        [
            ("mnist_20", "backdoor", "none", 0, 3),
            ("mnist_20", "backdoor", "krum", 1, 2),
        ],
    )
    with pytest.raises(ValueError, match=r"short: krum \(2\), rfa \(0\)"):
        holding_defenses(table, "mnist_20", ["none", "krum", "rfa"])


def test_matrix_adaptive_chunk_stops_before_any_job_on_a_short_zoo(
    tmp_path: Path,
) -> None:
    table = write_table(
        tmp_path / "table.csv", [("mnist_20", "backdoor", "none", 0, 1)]
    )
    out = tmp_path / "multirun"
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "MATRIX_DIR": str(out),
        "ZOO_TABLE": str(table),
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    done = subprocess.run(
        ["bash", str(MATRIX), "adaptive_pgd"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "fedlight.holding: error:" in done.stderr
    assert "needs 3 judged seeds" in done.stderr
    assert "== " not in done.stdout  # no sweep started
    assert not out.exists()
