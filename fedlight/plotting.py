"""The per-round picture: clean accuracy and ASR of the global model."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fedlight.record import RoundRecord  # noqa: E402


def plot_rounds(rounds: list[RoundRecord], path: Path, title: str) -> Path:
    """Write a PNG of accuracy and ASR per round; flagged rounds get markers."""
    xs = [r.round for r in rounds]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    ax.plot(xs, [r.accuracy for r in rounds], "o-", label="clean accuracy")
    if any(r.asr is not None for r in rounds):
        ax.plot(
            xs,
            [r.asr if r.asr is not None else float("nan") for r in rounds],
            "s-",
            color="tab:red",
            label="attack success rate",
        )
    ax.set_xlabel("round")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="center right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
