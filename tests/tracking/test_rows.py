"""What a round record becomes in W&B, on a hand-written record."""

from __future__ import annotations

from tracking_sample import record

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


def test_nulls_stay_null_so_every_row_has_every_key():
    row = round_row(
        record(asr=None, malicious_confidence=None, flagged=None, precision=None)
    )
    assert row["asr"] is None and row["detection/precision"] is None
    assert row["detection/flagged"] is None and row["detection/num_flagged"] is None
    assert not any(k.startswith("confidence/") for k in row)
    assert set(round_row(record())) - set(row) == {f"confidence/{c}" for c in "012"}


def test_a_metric_added_to_the_record_later_is_logged_under_its_name():
    row = round_row(record(norm_median=3.5, note=None))
    assert row["norm_median"] == 3.5 and "note" not in row


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
    last = record(2, precision=None, recall=0.0)
    results = {
        "rounds": [record(1), last],
        "final": {"accuracy": 0.9, "loss": 0.3, "asr": 0.05},
        "seconds": 12.5,
        "malicious_clients": ["0"],
        "data_source": "local:/data/mnist",
    }
    summary = run_summary(results)
    assert summary["final/accuracy"] == 0.9 and summary["final/asr"] == 0.05
    assert summary["final/precision"] is None and summary["final/recall"] == 0.0
    assert summary["rounds"] == 2 and summary["seconds"] == 12.5
    assert summary["malicious_clients"] == ["0"]
    assert summary["data_source"] == "local:/data/mnist"
