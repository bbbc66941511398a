"""What W&B receives, derived from fedlight's own records.

Every value comes from a round record of :mod:`fedlight.server` or from
``results.json``, so the W&B history and the results file cannot disagree.
Keys group into W&B's panel sections by their prefix (``detection/``,
``time/``, ``confidence/``, ``client/<id>/``). A null (no ASR for an attack
without a target, no precision when nothing was flagged) is logged as null, so
every round row has every key.
"""

from __future__ import annotations

from typing import Any

from fedlight.record import RoundRecord

CONFIDENCE_COLUMNS = ["round", "client", "confidence", "flagged", "malicious"]

_SKIPPED_CLIENT_METRICS = ("partition-id",)  # already the key of the client


def client_metric_key(cid: str, name: str) -> str:
    """The W&B key of a client metric: ``train-loss`` -> ``client/3/train_loss``."""
    return f"client/{cid}/{name.replace('-', '_')}"


def _client_ids(value: dict[str, Any] | list[str] | None) -> list[str]:
    """Client ids of a ``{client: reason}`` mapping (or a list), in id order."""
    ids = list(value or [])
    return sorted(ids, key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else c))


def round_row(record: RoundRecord) -> dict[str, Any]:
    """One round record flattened into a ``wandb.log`` row."""
    flagged = record.flagged
    row: dict[str, Any] = {
        "round": record.round,
        "accuracy": record.accuracy,
        "loss": record.loss,
        "asr": record.asr,
        "attacker_weight": record.attacker_weight,
        "detection/precision": record.precision,
        "detection/recall": record.recall,
        "detection/fpr": record.fpr,
        "detection/flagged": flagged,
        "detection/num_flagged": None if flagged is None else len(flagged),
        "participants": record.participants,
        "num_failures": len(record.failures),
        "failed_clients": _client_ids(record.failures),
        "rejected_clients": _client_ids(record.rejected),
        "time/train": record.train_seconds,
        "time/defense": record.defense_seconds,
        "time/eval": record.eval_seconds,
        "time/round": record.seconds,
    }
    for cid, conf in (record.malicious_confidence or {}).items():
        row[f"confidence/{cid}"] = conf
    for cid, share in (record.weights or {}).items():
        row[f"weight/{cid}"] = share
    for cid, metrics in record.clients.items():
        for name, value in metrics.items():
            if name not in _SKIPPED_CLIENT_METRICS:
                row[client_metric_key(cid, name)] = value
    return row


def confidence_rows(rounds: list[RoundRecord], malicious: list[str]) -> list[list[Any]]:
    """The defender's verdict per (round, client), rows of :data:`CONFIDENCE_COLUMNS`.

    Empty for a defence that scores nobody.
    """
    rows = []
    for record in rounds:
        flagged = set(record.flagged or [])
        for cid, conf in (record.malicious_confidence or {}).items():
            rows.append([record.round, cid, conf, cid in flagged, cid in malicious])
    return rows


def run_summary(results: dict[str, Any]) -> dict[str, Any]:
    """The run's W&B summary: the final model, the last verdict and the totals."""
    last = results["rounds"][-1]
    return {
        "final/accuracy": results["final"]["accuracy"],
        "final/loss": results["final"]["loss"],
        "final/asr": results["final"]["asr"],
        "final/precision": last.get("precision"),
        "final/recall": last.get("recall"),
        "final/fpr": last.get("fpr"),
        "final/attacker_weight": last.get("attacker_weight"),
        "rounds": len(results["rounds"]),
        "seconds": results["seconds"],
        "malicious_clients": results["malicious_clients"],
        "data_source": results["data_source"],
    }
