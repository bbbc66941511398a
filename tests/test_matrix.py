"""launch/matrix.sh refuses an unknown chunk before any job of any chunk starts."""

from __future__ import annotations

import subprocess
from pathlib import Path

MATRIX = Path(__file__).resolve().parents[1] / "launch" / "matrix.sh"


def test_unknown_chunk_fails_before_any_job(tmp_path: Path) -> None:
    out = tmp_path / "multirun"
    done = subprocess.run(
        ["bash", str(MATRIX), "robust_test_paper", "robust_test_papr"],
        env={"PATH": "/usr/bin:/bin", "MATRIX_DIR": str(out)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "unknown chunk 'robust_test_papr'" in lines[0]
    assert "robust_test_paper" in lines[0]  # the allowed values are named
    assert "== " not in done.stdout  # no chunk started
    assert not out.exists()
