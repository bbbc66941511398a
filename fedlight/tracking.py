"""Weights & Biases from the driver: one run per experiment, metrics per round.

Clients never open W&B runs; their metrics reach the driver in Flower replies.
``wandb.mode`` null means online where an API key is configured, else offline
(files under ``<run dir>/wandb``, uploadable later with ``wandb sync``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("fedlight")

MODES = ("online", "offline", "disabled")


def resolve_mode(mode: str | None) -> str:
    """The W&B mode to use: the configured one, else online only with a key."""
    if mode is not None:
        return mode
    if os.environ.get("WANDB_MODE") in MODES:
        return os.environ["WANDB_MODE"]
    has_key = (
        bool(os.environ.get("WANDB_API_KEY"))
        or (Path.home() / ".netrc").is_file()
        and "api.wandb.ai" in (Path.home() / ".netrc").read_text()
    )
    return "online" if has_key else "offline"


def round_row(record: dict[str, Any]) -> dict[str, Any]:
    """The scalar metrics of one round record, flattened for ``wandb.log``."""
    row: dict[str, Any] = {}
    for key in ("accuracy", "loss", "asr", "precision", "recall", "fpr", "seconds"):
        if record.get(key) is not None:
            row[key] = record[key]
    for key in ("train_seconds", "defense_seconds", "eval_seconds"):
        row[f"time/{key.removesuffix('_seconds')}"] = record[key]
    if record.get("flagged") is not None:
        row["num_flagged"] = len(record["flagged"])
    for cid, conf in (record.get("malicious_confidence") or {}).items():
        row[f"confidence/{cid}"] = conf
    for cid, metrics in record.get("clients", {}).items():
        row[f"client/{cid}/train_loss"] = metrics.get("train-loss")
        row[f"client/{cid}/num_examples"] = metrics.get("num-examples")
    return row


class Tracker:
    """A thin owner of the W&B run; every call is a no-op when disabled."""

    def __init__(
        self,
        config: dict[str, Any],
        out_dir: Path,
        mode: str | None,
        project: str = "fedlight",
        entity: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        name: str | None = None,
    ) -> None:
        import wandb

        self.mode = resolve_mode(mode)
        self.run = wandb.init(
            project=project,
            entity=entity,
            group=group,
            tags=tags or None,
            name=name,
            config=config,
            dir=str(out_dir),
            mode=self.mode,
            settings=wandb.Settings(silent=True, console="off"),
        )

    @property
    def run_dir(self) -> str | None:
        if self.mode == "disabled":
            return None
        return str(Path(self.run.dir).parent)

    def log_round(self, record: dict[str, Any]) -> None:
        self.run.log(round_row(record), step=record["round"])

    def finish(self, summary: dict[str, Any], images: list[Path]) -> None:
        import wandb

        for key, value in summary.items():
            self.run.summary[key] = value
        if self.mode != "disabled":
            self.run.log(
                {p.stem: wandb.Image(str(p)) for p in images if p.exists()},
                step=summary.get("rounds", 0),
            )
        self.run.finish()
