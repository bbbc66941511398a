"""fedlight.detection: one round's precision, recall and FPR."""

from fedlight.detection import detection_metrics


def test_detection_metrics():
    m = detection_metrics(["0", "3"], ["0", "1"], ["0", "1", "2", "3"])
    assert m == {"precision": 0.5, "recall": 0.5, "fpr": 0.5}
    none_flagged = detection_metrics([], ["0"], ["0", "1"])
    assert none_flagged["precision"] is None and none_flagged["recall"] == 0.0
    absent = detection_metrics(["1"], ["0"], ["1", "2"])
    assert absent["recall"] is None and absent["fpr"] == 0.5
