import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from fedlight.sanitize import screen_updates, structural_problem, update_norm

REF = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)}


def rec(**arrays: np.ndarray) -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in arrays.items()})


def ok(scale: float = 1.0) -> ArrayRecord:
    return rec(w=np.full((2, 3), scale, np.float32), b=np.zeros(3, np.float32))


@pytest.mark.parametrize(
    ("update", "reason"),
    [
        (
            rec(w=np.full((2, 3), np.nan, np.float32), b=np.zeros(3, np.float32)),
            "non-finite",
        ),
        (
            rec(w=np.full((2, 3), np.inf, np.float32), b=np.zeros(3, np.float32)),
            "non-finite",
        ),
        (rec(w=np.zeros(7, np.float32), b=np.zeros(3, np.float32)), "shape"),
        (rec(w=np.zeros((2, 3), np.float64), b=np.zeros(3, np.float32)), "dtype"),
        (rec(w=np.zeros((2, 3), np.float32)), "names differ"),
    ],
)
def test_structural_problems_are_named(update, reason):
    assert reason in structural_problem(REF, update)


def test_update_norm():
    assert update_norm(REF, ok(1.0)) == pytest.approx(np.sqrt(6))


def test_screen_rejects_broken_and_absurd_keeps_the_rest():
    updates = {
        "0": ok(1.0),
        "1": ok(1.1),
        "2": ok(0.9),
        "3": ok(1e5),  # 1e5 x the median norm
        "4": rec(w=np.full((2, 3), np.nan, np.float32), b=np.zeros(3, np.float32)),
    }
    rejected = screen_updates(REF, updates, max_norm_ratio=1000)
    assert set(rejected) == {"3", "4"}
    assert "median" in rejected["3"] and "non-finite" in rejected["4"]
    assert screen_updates(REF, updates, max_norm_ratio=None, max_norm=10.0).keys() == {
        "3",
        "4",
    }
    assert screen_updates(REF, {"0": ok(20.0), "1": ok(1.0)}) == {}
