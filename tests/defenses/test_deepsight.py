"""DeepSight (Rieger et al., NDSS 2022) on hand-made output layers and a real
ConvNet round: NEUPs, Threshold Exceedings, labels, cluster votes, DDifs, the
exclusion and the median-norm clipping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from updates import build, clustered, judge, make_round, result

from fedlight.defenses import DefenseContext
from fedlight.defenses.deepsight import (
    cluster_suspicion,
    co_cluster_distances,
    division_differences,
    final_clusters,
    hdbscan_labels,
    neups,
    output_layer,
    suspicious_labels,
    threshold_exceedings,
)
from fedlight.models.zoo import build_model

CONVNET = DefenseContext("convnet", 10, (1, 32, 32), 0.13, 0.31, seed=0)


def test_neups_and_threshold_exceedings_of_a_hand_made_output_layer():
    # Energies e = |db| + sum|dw| = [2, 2, 1, 0]; e^2 = [4, 4, 1, 0] / 9.
    dw = np.array([[1.0, -1.0], [0.0, 0.0], [0.5, 0.0], [0.0, 0.0]])
    db = np.array([0.0, 2.0, -0.5, 0.0])
    neup = neups(dw, db)
    np.testing.assert_allclose(neup, [4 / 9, 4 / 9, 1 / 9, 0.0], rtol=1e-15)
    # xi = max(0.01, 1/4) * 4/9 = 1/9: the third NEUP equals xi, not above it.
    assert threshold_exceedings(neup, 0.01) == 2
    # A model that returned the global model has no energy: NEUPs 0, no TE.
    assert neups(np.zeros((4, 2)), np.zeros(4)).tolist() == [0.0] * 4
    assert threshold_exceedings(np.zeros(4), 0.01) == 0


def test_the_threshold_floor_is_one_percent_of_the_largest_neup():
    # 200 classes: 1/P = 0.005 < 0.01, so xi = 0.01 * max NEUP. The neuron
    # with 0.9^2/10^2 = 0.0081 of the max is under it, 1.1^2/10^2 = 0.0121 over.
    db = np.zeros(200)
    db[:3] = [10.0, 1.1, 0.9]
    assert threshold_exceedings(neups(np.zeros((200, 0)), db), 0.01) == 2


def test_a_model_is_suspicious_at_or_below_half_the_median_threshold_exceedings():
    tes = np.array([10, 10, 10, 5, 4, 10])  # median 10, boundary 5
    assert suspicious_labels(tes).tolist() == [False] * 3 + [True, True, False]
    assert not suspicious_labels(np.array([3, 3, 3])).any()


def test_cluster_votes_and_co_cluster_distances():
    labels = np.array([0, 0, 0, 1, 1, -1, -1])
    suspicious = np.array([False, False, True, True, False, True, False])
    votes = cluster_suspicion(labels, suspicious)
    np.testing.assert_allclose(votes, [1 / 3] * 3 + [0.5, 0.5, 1.0, 0.0])
    # tau = 1/3: a third suspicious is not below it; noise points stand alone.
    assert (votes < 1 / 3).tolist() == [False] * 6 + [True]
    np.testing.assert_array_equal(
        co_cluster_distances(np.array([0, 0, -1, 1, -1])),
        [
            [0, 0, 1, 1, 1],
            [0, 0, 1, 1, 1],
            [1, 1, 0, 1, 1],
            [1, 1, 1, 0, 1],
            [1, 1, 1, 1, 0],
        ],
    )


def test_the_output_layer_is_the_last_weight_bias_pair_of_num_classes():
    convnet = {k: v.numpy() for k, v in build_model("convnet").state_dict().items()}
    assert output_layer(convnet, 10) == "classifier.5."
    # A trailing BatchNorm of 10 channels has a 1-D weight: not an output layer.
    state = {
        "fc.weight": np.zeros((10, 4), np.float32),
        "fc.bias": np.zeros(10, np.float32),
        "bn.weight": np.ones(10, np.float32),
        "bn.bias": np.zeros(10, np.float32),
        "bn.num_batches_tracked": np.array(3),
    }
    assert output_layer(state, 10) == "fc."
    assert output_layer(state, 7) is None
    assert output_layer({"w": np.zeros(6, np.float32)}, 10) is None


def _convnet_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return build_model("convnet", 10, 1).state_dict()


def test_ddifs_are_one_for_an_unchanged_model_and_favour_a_raised_class():
    global_state = _convnet_state()
    raised = {k: v.clone() for k, v in global_state.items()}
    raised["classifier.5.bias"][3] += 2.0
    inputs = torch.rand(2, 16, 1, 32, 32)
    model = build_model("convnet")
    ddifs = division_differences(model, global_state, [global_state, raised], inputs)
    assert ddifs.shape == (2, 2, 10)
    np.testing.assert_array_equal(ddifs[:, 0], np.ones((2, 10)))
    assert (ddifs[:, 1, 3] > 1).all()
    assert (np.delete(ddifs[:, 1], 3, axis=1) < 1).all()
    # Against a scaled global model (near one-hot outputs) the ratios of the
    # other classes would overflow; the capped log-ratio keeps them finite.
    boosted = {k: v * 100 for k, v in global_state.items()}
    capped = division_differences(model, boosted, [global_state], inputs)
    assert np.isfinite(capped).all() and capped.max() > 1e40


def _backdoor_round() -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    """8 ConvNets around a common benign step; client 3 also moves output
    neuron 7 a long way (a backdoor's target label)."""
    g = {k: v.numpy() for k, v in _convnet_state().items()}
    rng = np.random.default_rng(1)
    step = {k: 0.01 * rng.standard_normal(v.shape) for k, v in g.items()}
    models = [
        {
            k: (g[k] + step[k] + 0.003 * rng.standard_normal(v.shape)).astype(
                np.float32
            )
            for k, v in g.items()
        }
        for _ in range(8)
    ]
    models[3]["classifier.5.weight"][7] += 0.3
    models[3]["classifier.5.bias"][7] += 0.3
    return g, models


def test_a_backdoored_convnet_is_excluded_and_the_rest_clipped_to_the_median():
    g, models = _backdoor_round()
    counts = [100.0, 50.0, 200.0, 2000.0, 100.0, 80.0, 120.0, 100.0]
    rnd = make_round(models, counts, global_model=g)
    verdict, arrays = judge(build("deepsight", CONVNET, num_samples=32), rnd)

    details = verdict.details
    assert details["output_layer"] == "classifier.5" and details["ddifs"]
    tes = details["threshold_exceedings"]
    assert tes["3"] == 1 and all(tes[c] == 10 for c in tes if c != "3")
    assert details["suspicious"] == ["3"] and verdict.flagged == ["3"]
    assert verdict.scores["3"] == 1.0
    assert all(verdict.scores[c] < 1 / 3 for c in verdict.scores if c != "3")
    # the accepted clients equally, as the paper: the counts (the attacker's
    # boosted 2,000 among them) buy nothing
    assert verdict.weights == {str(i): 0.0 if i == 3 else 1.0 for i in range(8)}

    # Expected: the plain mean of the benign updates clipped to the median L2
    # norm of all eight updates (the attacker's counts in the median too).
    keys = list(g)
    updates = [
        np.concatenate([(m[k].astype(np.float64) - g[k]).ravel() for k in keys])
        for m in models
    ]
    norms = np.array([np.linalg.norm(u) for u in updates])
    bound = np.median(norms)
    assert details["clip_norm"] == pytest.approx(bound)
    assert sorted(details["clipped"]) == sorted(
        str(i) for i in range(8) if i != 3 and norms[i] > bound
    )
    kept = [i for i in range(8) if i != 3]
    step = sum(updates[i] * min(1.0, bound / norms[i]) for i in kept) / len(kept)
    new = result(arrays)
    got = np.concatenate([(new[k].astype(np.float64) - g[k]).ravel() for k in keys])
    np.testing.assert_allclose(got, step, atol=2e-6)


def test_models_without_an_output_layer_use_the_flat_update_as_biases():
    # Flat vectors are not ConvNets: no DDifs, every coordinate one "neuron".
    models = clustered(7, {})  # w (3, 4), b (4,) near 1, an int buffer
    models[2] = {k: v.copy() for k, v in models[2].items()}
    models[2]["w"][:] = 0.0
    models[2]["b"][:] = 0.0
    models[2]["w"][0, 0] = 20.0  # all its energy in one coordinate
    verdict, _ = judge(build("deepsight"), make_round(models))
    assert verdict.details["output_layer"] is None
    assert verdict.details["ddifs"] is False
    assert verdict.details["threshold_exceedings"]["2"] == 1
    assert verdict.flagged == ["2"] and verdict.weights["2"] == 0.0
    assert verdict.details["clipped"]  # integer buffers ride along unchanged
    for record in verdict.replaced.values():
        assert result(record)["count"].dtype == np.int64
        assert result(record)["count"] == 7


def test_the_random_images_are_seeded_per_round():
    defense = build("deepsight", CONVNET, num_samples=4)
    first = defense.noise(1)
    assert first.shape == (3, 4, 1, 32, 32)
    assert torch.equal(first, defense.noise(1))
    assert not torch.equal(first, defense.noise(2))
    assert not torch.equal(first[0], first[1])  # the seeds differ


def test_weighted_averages_the_accepted_clients_by_their_counts():
    g, models = _backdoor_round()
    counts = [100.0, 50.0, 200.0, 2000.0, 100.0, 80.0, 120.0, 100.0]
    rnd = make_round(models, counts, global_model=g)
    verdict, _ = judge(build("deepsight", CONVNET, num_samples=32, weighted=True), rnd)
    assert verdict.weights == {
        str(i): 0.0 if i == 3 else n for i, n in enumerate(counts)
    }


def test_models_no_view_clusters_with_another_are_noise_not_one_cluster():
    # every view all noise: HDBSCAN alone makes one cluster of all six, and the
    # suspicious model passes the vote (1/6 < 1/3); its own label judges it
    all_noise = co_cluster_distances(np.full(6, -1))
    assert hdbscan_labels(all_noise, 2).tolist() == [0] * 6
    labels = final_clusters(all_noise, 2)
    assert labels.tolist() == [-1] * 6
    suspicious = np.array([True, False, False, False, False, False])
    assert cluster_suspicion(labels, suspicious).tolist() == [1, 0, 0, 0, 0, 0]
    # a model some view clustered with another keeps HDBSCAN's label
    pairs = co_cluster_distances(np.array([0, 0, 1, 1, -1, -1]))
    assert final_clusters(pairs, 2).tolist()[4:] == [-1, -1]
    assert len(set(final_clusters(pairs, 2).tolist()[:4])) == 2
