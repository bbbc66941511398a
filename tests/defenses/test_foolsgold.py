"""FoolsGold (Fung et al. 2020) on constructed histories with hand-computed
weights."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from updates import build, judge, make_round, result

from fedlight.defenses import DEFENSES
from fedlight.defenses.foolsgold import feature_keys, foolsgold_weights


def _models(rows: list[list[float]]) -> list[dict[str, np.ndarray]]:
    """One model per row around a zero global model (so the update is the row),
    an int buffer riding along."""
    return [
        {"w": np.array(r, dtype=np.float32), "n": np.array(3, dtype=np.int64)}
        for r in rows
    ]


# Sybils 0 and 1 are identical; 2 resembles the sybils (cos 0.6) and 3 (cos
# 0.48); 3 resembles only 2; 4 is orthogonal to all.
ROWS = [
    [1.0, 0.0, 0.0, 0.0],
    [1.0, 0.0, 0.0, 0.0],
    [0.6, 0.8, 0.0, 0.0],
    [0.0, 0.6, 0.8, 0.0],
    [0.0, 0.0, 0.0, 1.0],
]


def _expected(kappa: float) -> list[float]:
    # v = (1, 1, 0.6, 0.48, 0). Pardoning: cs_20 = 0.6 * 0.6/1 = 0.36 (so 2's
    # max is cs_23 = 0.48), cs_32 = 0.48 * 0.48/0.6 = 0.384, 4's are 0.
    # alpha = 1 - max = (0, 0, 0.52, 0.616, 1); max is 1; 1 -> 0.99.
    def logit(a: float) -> float:
        return min(max(kappa * (math.log(a / (1 - a)) + 0.5), 0.0), 1.0)

    return [0.0, 0.0, logit(0.52), logit(0.616), logit(0.99)]


@pytest.mark.parametrize("kappa", [1.0, 0.5])
def test_identical_sybils_get_weight_zero_and_honest_clients_the_papers_alpha(kappa):
    rnd = make_round(_models(ROWS), examples=[2000.0, 2000.0, 100.0, 100.0, 100.0])
    verdict, arrays = judge(build("foolsgold", kappa=kappa), rnd)
    expected = _expected(kappa)
    assert [verdict.weights[str(i)] for i in range(5)] == pytest.approx(expected)
    if kappa == 1.0:  # ln(13/12) + 0.5, ln(77/48) + 0.5, and 1
        assert expected[2:] == pytest.approx([0.5800427, 0.9726044, 1.0])
    assert verdict.flagged == ["0", "1"]
    assert verdict.scores == pytest.approx(
        {str(i): 1 - a for i, a in enumerate(expected)}
    )
    # The server's FedAvg uses alpha, not the (boosted) counts.
    mean = np.array(expected) @ np.array(ROWS) / sum(expected)
    np.testing.assert_allclose(result(arrays)["w"], mean, rtol=1e-6)
    assert result(arrays)["n"] == 3


def test_a_lone_client_and_dissimilar_clients_keep_full_weight():
    assert foolsgold_weights(np.array([[1.0, 2.0]])).tolist() == [1.0]
    # Opposite directions: similarity -1, alpha 1 -> 0.99 -> weight 1.
    assert foolsgold_weights(np.array([[1.0, 0.0], [-1.0, 0.0]])).tolist() == [1, 1]


def test_all_clients_identical_keep_the_global_model():
    rnd = make_round(_models([[1.0, 2.0]] * 3))
    verdict, arrays = judge(build("foolsgold"), rnd)
    assert set(verdict.weights.values()) == {0.0} and arrays is None
    assert verdict.flagged == ["0", "1", "2"]


def _round_two_sybils_look_different(defense, server_round: int = 2):
    # Sybils 0 and 1 move in new, orthogonal directions; honest 2, 3 too.
    rows = [
        [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
    ]
    return defense.verdict(make_round(_models(rows), server_round=server_round))


ROUND_ONE = [
    [10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # sybils: the same big step
    [10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
]


def test_the_history_catches_sybils_that_look_different_in_one_round():
    alone = _round_two_sybils_look_different(build("foolsgold"), server_round=1)
    assert alone.flagged == [] and set(alone.weights.values()) == {1.0}
    defense = build("foolsgold")
    defense.verdict(make_round(_models(ROUND_ONE)))
    verdict = _round_two_sybils_look_different(defense)
    # Histories (10, 1, 0, ...) and (10, 0, 1, ...): cos 100/101, alpha 1/101;
    # the honest histories are orthogonal to all: alpha 1 -> weight 1.
    assert verdict.flagged == ["0", "1"]
    assert verdict.weights == {"0": 0.0, "1": 0.0, "2": 1.0, "3": 1.0}
    np.testing.assert_allclose(defense.history["0"], [10, 1, 0, 0, 0, 0, 0, 0])


def test_the_state_round_trips_through_torch_save_with_weights_only():
    defense = build("foolsgold")
    defense.verdict(make_round(_models(ROUND_ONE)))
    buffer = io.BytesIO()
    torch.save(defense.state_dict(), buffer)
    buffer.seek(0)
    resumed = build("foolsgold")
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert _round_two_sybils_look_different(resumed).weights == (
        _round_two_sybils_look_different(defense).weights
    )
    assert resumed.history.keys() == defense.history.keys()


def test_output_features_compare_only_the_last_weight_matrix():
    # Sybils 0, 1 agree on the output layer but not on the first layer.
    def model(first: list[float], out: list[float]) -> dict[str, np.ndarray]:
        return {
            "first.weight": np.array(first, dtype=np.float32).reshape(2, 2),
            "out.weight": np.array(out, dtype=np.float32).reshape(1, 3),
            "out.bias": np.array([1.0], dtype=np.float32),
        }

    models = [
        model([1, 0, 0, 0], [1, 0, 0]),
        model([0, 1, 0, 0], [1, 0, 0]),
        model([0, 0, 1, 0], [0, 1, 0]),
        model([0, 0, 0, 1], [0, 0, 1]),
    ]
    assert feature_keys(models[0], "output") == ["out.weight"]
    # On all weights every pair differs (the shared bias step is small).
    everything = build("foolsgold").verdict(make_round(models))
    output = build("foolsgold", features="output").verdict(make_round(models))
    assert everything.flagged == []
    assert output.flagged == ["0", "1"]


def test_foolsgold_is_registered_with_its_paper_and_place():
    plugin = DEFENSES.get("foolsgold")
    assert plugin.order == 45 and "RAID 2020" in plugin.paper
