"""What a run prints: a FedDefender block per round and a summary table."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("fedlight")


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def log_round(
    record: dict[str, Any], malicious: list[str], num_inputs: int | None
) -> None:
    """Log one round like the seed README's FedDefender output, then the metrics."""
    r = record["round"]
    if record["malicious_confidence"] is not None:
        predicted = {
            cid: round(c, 3)
            for cid, c in sorted(
                record["malicious_confidence"].items(), key=lambda kv: -kv[1]
            )
            if c > 0
        }
        log.info("***FedDefender Output Round %d ***", r)
        log.info("True Malicious Clients (Ground Truth) = %s", malicious)
        log.info("Total Random Inputs = %s", num_inputs)
        log.info("Predicted Malicious Clients = %s", predicted)
        log.info("Flagged (excluded) = %s", record["flagged"])
        log.info("Localisation accuracy (recall) = %s", _fmt(record["recall"], ".0%"))
    failures = f", {len(record['failures'])} failed" if record["failures"] else ""
    log.info(
        "[round %d] accuracy %s  loss %s  ASR %s  precision %s  recall %s  (%.1f s%s)",
        r,
        _fmt(record["accuracy"]),
        _fmt(record["loss"]),
        _fmt(record["asr"]),
        _fmt(record["precision"], ".2f"),
        _fmt(record["recall"], ".2f"),
        record["seconds"],
        failures,
    )


def summary_table(rounds: list[dict[str, Any]]) -> str:
    """A fixed-width table of every round, printed at the end of a run."""
    header = (
        f"{'round':>5} {'accuracy':>9} {'ASR':>7} {'prec':>5} {'recall':>6} "
        f"{'sec':>6}  flagged"
    )
    lines = ["[SUMMARY]", header, "-" * len(header)]
    for r in rounds:
        flagged = "-" if r["flagged"] is None else ",".join(r["flagged"]) or "none"
        lines.append(
            f"{r['round']:>5} {_fmt(r['accuracy']):>9} {_fmt(r['asr']):>7} "
            f"{_fmt(r['precision'], '.2f'):>5} {_fmt(r['recall'], '.2f'):>6} "
            f"{r['seconds']:>6.1f}  {flagged}"
        )
    return "\n".join(lines)
