"""Norm clipping on updates with known norms."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import FedAvg
from updates import CTX, make_replies, result

from fedlight.defenses import NormClip
from fedlight.defenses.normclip import clip, vector_norm

GLOBAL = {"w": np.ones((2, 2), dtype=np.float32), "n": np.array(5, dtype=np.int64)}


def model(update_norm: float) -> dict[str, np.ndarray]:
    """Global + an update of the given L2 norm (all four entries equal)."""
    step = np.float32(update_norm / 2.0)  # sqrt(4) entries
    return {"w": GLOBAL["w"] + step, "n": np.array(5, dtype=np.int64)}


def strategy(**kwargs) -> NormClip:
    s = NormClip(FedAvg(), CTX, **kwargs)
    s.global_arrays = ArrayRecord({k: Array(v) for k, v in GLOBAL.items()})
    return s


def test_clip_scales_long_updates_only():
    ref = {k: v.astype(np.float64) for k, v in GLOBAL.items()}
    short, norm = clip(model(1.0), ref, max_norm=2.0)
    assert norm == pytest.approx(1.0) and np.allclose(short["w"], 1.5)
    long, norm = clip(model(8.0), ref, max_norm=2.0)
    assert norm == pytest.approx(8.0)
    assert vector_norm(long, ref) == pytest.approx(2.0, rel=1e-5)
    assert long["w"].dtype == np.float32 and long["n"] == 5


def test_update_variant_clips_to_max_norm_and_flags_nobody():
    s = strategy(max_norm=2.0)
    arrays, _ = s.aggregate_train(1, make_replies([model(1.0), model(1.0), model(8.0)]))
    report = s.last_report
    assert report.confidence is None and report.flagged == []
    assert report.details["clipped"] == ["2"]
    assert report.details["norms"]["2"] == pytest.approx(8.0)
    # FedAvg of updates with norms 1, 1, 2 (equal weights): norm 4/3.
    np.testing.assert_allclose(result(arrays)["w"], 1.0 + (4 / 3) / 2, rtol=1e-5)


def test_null_max_norm_is_the_median_norm():
    s = strategy()
    s.aggregate_train(1, make_replies([model(1.0), model(3.0), model(9.0)]))
    assert s.last_report.details["max_norm"] == pytest.approx(3.0)
    assert s.last_report.details["clipped"] == ["2"]


def test_weights_variant_clips_the_whole_vector():
    s = NormClip(FedAvg(), CTX, max_norm=1.0, variant="weights")  # no global needed
    arrays, _ = s.aggregate_train(1, make_replies([model(0.0)]))
    w = result(arrays)["w"]
    assert np.linalg.norm(w) == pytest.approx(1.0, rel=1e-5)  # |ones(2,2)| = 2 -> 1


def test_update_variant_without_global_model_says_so():
    s = NormClip(FedAvg(), CTX, max_norm=1.0)
    with pytest.raises(RuntimeError, match="global"):
        s.aggregate_train(1, make_replies([model(1.0)]))


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="variant"):
        NormClip(FedAvg(), CTX, variant="layers")
