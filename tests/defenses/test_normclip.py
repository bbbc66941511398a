"""Norm clipping on updates with known norms."""

from __future__ import annotations

import numpy as np
import pytest
from updates import build, judge, make_round, result

from fedlight.defenses.normclip import clip, vector_norm
from fedlight.params import ConfigError

GLOBAL = {"w": np.ones((2, 2), dtype=np.float32), "n": np.array(5, dtype=np.int64)}
REF = {k: v.astype(np.float64) for k, v in GLOBAL.items()}


def model(update_norm: float) -> dict[str, np.ndarray]:
    """Global + an update of the given L2 norm (all four entries equal)."""
    step = np.float32(update_norm / 2.0)  # sqrt(4) entries
    return {"w": GLOBAL["w"] + step, "n": np.array(5, dtype=np.int64)}


def around_global(norms: list[float]):
    """The round of clients whose updates have ``norms``, from ``GLOBAL``."""
    return make_round([model(n) for n in norms], global_model=GLOBAL)


def test_clip_scales_long_updates_only():
    short, norm = clip(model(1.0), REF, max_norm=2.0)
    assert norm == pytest.approx(1.0) and np.allclose(short["w"], 1.5)
    long, norm = clip(model(8.0), REF, max_norm=2.0)
    assert norm == pytest.approx(8.0)
    assert vector_norm(long, REF) == pytest.approx(2.0, rel=1e-5)
    assert long["w"].dtype == np.float32 and long["n"] == 5


def test_update_variant_clips_to_max_norm_and_flags_nobody():
    rnd = around_global([1.0, 1.0, 8.0])
    verdict, arrays = judge(build("normclip", max_norm=2.0), rnd)
    assert verdict.scores is None and verdict.flagged == []
    assert verdict.details["clipped"] == ["2"]
    assert verdict.details["norms"]["2"] == pytest.approx(8.0)
    # only the clipped client's arrays are replaced, by its update at norm 2
    assert set(verdict.replaced) == {"2"}
    assert vector_norm(result(verdict.replaced["2"]), REF) == pytest.approx(
        2.0, rel=1e-5
    )
    # FedAvg's weights are the reported counts: clipping reweights nobody
    assert verdict.weights == {"0": 100.0, "1": 100.0, "2": 100.0}
    # FedAvg of updates with norms 1, 1, 2 (equal weights): norm 4/3.
    np.testing.assert_allclose(result(arrays)["w"], 1.0 + (4 / 3) / 2, rtol=1e-5)


def test_null_max_norm_is_the_median_norm():
    verdict, _ = judge(build("normclip"), around_global([1.0, 3.0, 9.0]))
    assert verdict.details["max_norm"] == pytest.approx(3.0)
    assert verdict.details["clipped"] == ["2"]


def test_weights_variant_clips_the_whole_vector():
    # The client did not move (update norm 0): only the weights variant, which
    # clips around zero rather than the global model, changes it.
    rnd = around_global([0.0])
    verdict, arrays = judge(build("normclip", max_norm=1.0, variant="weights"), rnd)
    w = result(arrays)["w"]
    assert np.linalg.norm(w) == pytest.approx(1.0, rel=1e-5)  # |ones(2,2)| = 2 -> 1
    assert verdict.details["clipped"] == ["0"]


def test_update_variant_clips_around_the_round_global_model():
    verdict, arrays = judge(build("normclip", max_norm=1.0), around_global([0.0]))
    assert verdict.details["clipped"] == [] and verdict.replaced == {}
    np.testing.assert_array_equal(result(arrays)["w"], GLOBAL["w"])


def test_unknown_variant_is_refused():
    with pytest.raises(ConfigError, match="variant='layers'"):
        build("normclip", variant="layers")
