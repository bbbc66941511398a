"""What a round record becomes in W&B, on a hand-written record."""

from __future__ import annotations

import dataclasses

from tracking_sample import record

from fedlight.record import RoundRecord
from fedlight.tracking.rows import (
    CONFIDENCE_COLUMNS,
    confidence_rows,
    round_row,
    run_summary,
)


def test_a_round_row_holds_every_metric_of_the_record():
    row = round_row(record())
    assert row["round"] == 1
    assert (row["accuracy"], row["loss"], row["asr"]) == (0.9, 0.3, 0.05)
    assert row["detection/precision"] == row["detection/recall"] == 1.0
    assert row["detection/fpr"] == 0.0
    assert row["detection/flagged"] == ["0"] and row["detection/num_flagged"] == 1
    assert [row[f"confidence/{c}"] for c in "012"] == [1.0, 0.0, 0.2]
    assert row["client/0/train_loss"] == 0.5
    assert row["client/1/train_accuracy"] == 0.9
    assert row["client/0/num_examples"] == 2000.0
    assert "client/0/partition_id" not in row
    assert (row["time/train"], row["time/defense"], row["time/eval"]) == (
        2.0,
        0.5,
        0.25,
    )
    assert row["time/round"] == 2.8
    assert row["participants"] == ["0", "1", "2"]
    assert row["num_failures"] == 1 and row["failed_clients"] == ["3"]
    assert row["rejected_clients"] == []
    assert row["attacker_weight"] == 0.0
    assert [row[f"weight/{c}"] for c in "012"] == [0.0, 0.25, 0.75]


def test_nulls_stay_null_so_every_row_has_every_key():
    row = round_row(
        record(
            asr=None,
            malicious_confidence=None,
            flagged=None,
            precision=None,
            weights=None,
            attacker_weight=None,
        )
    )
    assert row["asr"] is None and row["detection/precision"] is None
    assert row["detection/flagged"] is None and row["detection/num_flagged"] is None
    assert row["attacker_weight"] is None
    assert not any(k.startswith(("confidence/", "weight/")) for k in row)
    assert set(round_row(record())) - set(row) == {
        *(f"confidence/{c}" for c in "012"),
        *(f"weight/{c}" for c in "012"),
    }


# Where each field of the round record goes in a W&B row (a key, or the prefix
# of one key per client); defense_details, a defence's free-form record, stays in
# results.json.
LOGGED_AS = {
    "round": "round",
    "accuracy": "accuracy",
    "loss": "loss",
    "asr": "asr",
    "malicious_confidence": "confidence/",
    "flagged": "detection/flagged",
    "rejected": "rejected_clients",
    "precision": "detection/precision",
    "recall": "detection/recall",
    "fpr": "detection/fpr",
    "weights": "weight/",
    "attacker_weight": "attacker_weight",
    "participants": "participants",
    "failures": "failed_clients",
    "clients": "client/",
    "train_seconds": "time/train",
    "defense_seconds": "time/defense",
    "eval_seconds": "time/eval",
    "seconds": "time/round",
}


def test_a_metric_added_to_the_record_later_is_logged():
    # The record is typed: a field added to it must be given a W&B key here and
    # in round_row, or this fails.
    fields = {f.name for f in dataclasses.fields(RoundRecord)} - {"defense_details"}
    assert fields == set(LOGGED_AS)
    row = round_row(record())
    for name, key in LOGGED_AS.items():
        if key.endswith("/"):
            assert any(k.startswith(key) for k in row), name
        else:
            assert key in row, name
    # A key an older or newer fedlight wrote is dropped when read back.
    data = {**record().to_dict(), "norm_median": 3.5}
    assert RoundRecord.from_dict(data) == record()
    assert (
        RoundRecord.from_dict({"round": 1, "accuracy": 0.5, "loss": 1.0}).weights
        is None
    )


def test_confidence_rows_list_every_scored_client_of_every_round():
    rounds = [record(1), record(2, flagged=[], malicious_confidence={"0": 0.4})]
    rows = confidence_rows(rounds, malicious=["0"])
    assert CONFIDENCE_COLUMNS == [
        "round",
        "client",
        "confidence",
        "flagged",
        "malicious",
    ]
    assert rows == [
        [1, "0", 1.0, True, True],
        [1, "1", 0.0, False, False],
        [1, "2", 0.2, False, False],
        [2, "0", 0.4, False, True],
    ]
    assert confidence_rows([record(malicious_confidence=None)], ["0"]) == []


def test_the_summary_is_the_final_model_and_the_last_verdict():
    last = record(2, precision=None, recall=0.0, attacker_weight=0.125)
    results = {
        "rounds": [record(1).to_dict(), last.to_dict()],
        "final": {"accuracy": 0.9, "loss": 0.3, "asr": 0.05},
        "seconds": 12.5,
        "malicious_clients": ["0"],
        "data_source": "local:/data/mnist",
    }
    summary = run_summary(results)
    assert summary["final/accuracy"] == 0.9 and summary["final/asr"] == 0.05
    assert summary["final/precision"] is None and summary["final/recall"] == 0.0
    assert summary["final/attacker_weight"] == 0.125
    assert summary["rounds"] == 2 and summary["seconds"] == 12.5
    assert summary["malicious_clients"] == ["0"]
    assert summary["data_source"] == "local:/data/mnist"
