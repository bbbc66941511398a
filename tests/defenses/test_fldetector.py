"""FLDetector (Zhang et al. 2022): the L-BFGS Hessian-vector product on a known
quadratic, the gap statistic on known clusters, and the detector on clients
of a quadratic objective."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from updates import build, judge, make_round, result

from fedlight.defenses import DEFENSES
from fedlight.defenses.fldetector import dispersions, gap_statistic, lbfgs_hvp


def _hessian(dim: int, seed: int = 0) -> np.ndarray:
    """A symmetric positive definite H with eigenvalues 0.2..0.9."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return q @ np.diag(np.linspace(0.2, 0.9, dim)) @ q.T


def _conjugate(h: np.ndarray, seed: int = 1) -> np.ndarray:
    """Rows: H-conjugate directions (s_i . H s_j = 0), Gram-Schmidt in H."""
    rows: list[np.ndarray] = []
    for r in np.random.default_rng(seed).standard_normal(h.shape):
        for c in rows:
            r = r - (r @ h @ c) / (c @ h @ c) * c
        rows.append(r)
    return np.array(rows)


def test_lbfgs_gives_the_exact_hessian_product_on_a_quadratic_after_dim_pairs():
    # On f = w.Hw/2 the gradient differences are y = H s. With dim H-conjugate
    # steps (those of conjugate gradients) BFGS recovers H exactly.
    h = _hessian(5)
    s = _conjugate(h)
    v = np.random.default_rng(2).standard_normal(5)
    np.testing.assert_allclose(lbfgs_hvp(s, s @ h, v), h @ v, atol=1e-12)
    # Our clients' updates are minus gradients: the product flips sign with y.
    np.testing.assert_allclose(lbfgs_hvp(s, -(s @ h), v), -(h @ v), atol=1e-12)
    # One pair short, a direction is unseen: not exact.
    assert np.abs(lbfgs_hvp(s[:4], s[:4] @ h, v) - h @ v).max() > 1e-3


def test_lbfgs_meets_the_newest_secant_equation_for_any_pairs():
    rng = np.random.default_rng(3)
    h = _hessian(6)
    s = rng.standard_normal((3, 6))
    np.testing.assert_allclose(lbfgs_hvp(s, s @ h, s[-1]), h @ s[-1], atol=1e-12)
    # A multiple of the identity is found from a single pair.
    v = rng.standard_normal(6)
    np.testing.assert_allclose(lbfgs_hvp(s[:1], 0.3 * s[:1], v), 0.3 * v)


def test_dispersions_are_the_least_within_cluster_sums_of_squares():
    # {0, 1, 10, 11, 30}: one cluster, {0,1,10,11}|{30}, {0,1}|{10,11}|{30}.
    x = np.array([10.0, 0.0, 30.0, 1.0, 11.0])
    mean = x.mean()
    np.testing.assert_allclose(
        dispersions(x, 3), [((x - mean) ** 2).sum(), 0.5 + 0.5 + 100.0, 1.0]
    )


def test_the_gap_statistic_finds_one_cluster_in_noise_and_two_in_two_groups():
    rng = np.random.default_rng(0)
    noise = rng.normal(1.0, 0.1, size=20)
    two = np.concatenate([rng.normal(1.0, 0.05, size=18), [2.0, 2.1]])
    assert gap_statistic(noise, 7, 10, np.random.default_rng(1))[0] == 1
    assert gap_statistic(two, 7, 10, np.random.default_rng(1))[0] == 2
    # Nothing to compare: equal values, or equal up to round-off.
    assert gap_statistic(np.full(9, 0.1), 7, 10, rng)[0] == 1
    # One value 1e-14 above eight equal ones would be two clusters once scaled.
    round_off = np.array([0.1] * 8 + [0.1 * (1 + 1e-14)])
    assert gap_statistic(round_off, 7, 10, rng)[0] == 1
    assert gap_statistic(np.array([0.1] * 8 + [0.2]), 7, 10, rng)[0] == 2


def _simulate(
    defense, rounds=7, attacker=None, noise=0.01, seed=0, n=10, dim=8, trajectory=None
):
    """FL on f_i(w) = (w - c_i).H(w - c_i)/2: client i returns the model after
    one gradient step, w - H(w - c_i), plus noise (SGD); ``attacker`` instead
    sends an update of the benign size in a random direction every round. The
    next global model is the one the server makes of the verdict; ``trajectory``
    (a list) receives each round's global model."""
    rng = np.random.default_rng(seed)
    h = _hessian(dim, seed)
    centres = rng.standard_normal((n, dim))
    w = np.zeros(dim)
    verdicts = []
    for t in range(1, rounds + 1):
        if trajectory is not None:
            trajectory.append(w)
        ups = [-h @ (w - c) + noise * rng.standard_normal(dim) for c in centres]
        if attacker is not None:
            direction = rng.standard_normal(dim)
            size = np.mean([np.linalg.norm(u) for u in ups])
            ups[attacker] = size * direction / np.linalg.norm(direction)
        models = [{"w": w + u, "n": np.array(1)} for u in ups]
        start = {"w": w, "n": np.array(1)}
        verdict, arrays = judge(defense, make_round(models, None, start, t))
        verdicts.append(verdict)
        if arrays is not None:
            w = result(arrays)["w"].astype(np.float64)
    return verdicts


def test_a_client_inconsistent_with_its_prediction_is_flagged_after_warm_up():
    verdicts = _simulate(build("fldetector", aggregation="fedavg"), attacker=0)
    # Rounds 1-2: no history, FedAvg, nobody flagged, no scores (not judged).
    for v in verdicts[:2]:
        assert v.flagged == [] and not v.details["detecting"]
        assert v.scores is None and v.weights["0"] == 100.0
    # From round 3 (one (dW, dG) pair): the attacker, and only it.
    for v in verdicts[2:]:
        assert v.flagged == ["0"] and v.details["clusters"] >= 2
        assert v.weights["0"] == 0.0 and v.scores["0"] == 1.0
        assert max(s for c, s in v.scores.items() if c != "0") < 0.5
    assert [v.details["pairs"] for v in verdicts] == [0, 0, 1, 2, 3, 4, 5]


def test_consistent_clients_are_not_flagged():
    # All benign with SGD noise: the suspicions form one cluster every round.
    # (Over seeds the gap statistic calls two clusters in about 5% of such
    # rounds with 10 clients; this seeded run has none.)
    verdicts = _simulate(build("fldetector"))
    assert all(v.flagged == [] for v in verdicts)
    assert [v.details["clusters"] for v in verdicts[2:]] == [1] * 5
    # Without noise every benign client has the same distance: no cluster.
    exact = _simulate(build("fldetector"), noise=0.0)
    assert all(v.flagged == [] for v in exact)


def test_median_aggregation_keeps_the_unflagged_clients_median():
    # the default, as the authors' train_mnist.py: the attacker flagged as
    # under fedavg, and in rounds 1-2 the median of everyone
    verdicts = _simulate(build("fldetector"), attacker=0)
    assert [v.flagged for v in verdicts] == [[], []] + [["0"]] * 5
    assert all(v.model is not None for v in verdicts)
    last = verdicts[-1]
    assert last.flagged == ["0"] and last.model is not None
    assert last.weights["0"] == 0.0
    assert sum(last.weights.values()) == pytest.approx(1.0)


def test_a_returning_client_is_predicted_and_an_aged_one_is_new():
    rng = np.random.default_rng(0)
    defense = build("fldetector", window=2)

    def play(server_round: int, ids: list[int]) -> dict[str, float]:
        w = rng.standard_normal(4)  # the global model moves: (dW, dG) pairs
        models = [{"w": w + rng.standard_normal(4)} for _ in range(4)]
        rnd = make_round(models, None, {"w": w}, server_round)
        rnd.updates[:] = [u for u in rnd.updates if int(u.cid) in ids]
        return defense.verdict(rnd).details["suspicion"]

    play(1, [0, 1, 2, 3])
    play(2, [0, 1, 2, 3])
    assert "3" not in play(3, [0, 1, 2])
    # 3 sat round 3 out: predicted from its round-2 update (age 2 = window).
    assert "3" in play(4, [0, 1, 2, 3]) and len(defense.distances["3"]) == 1
    play(5, [0, 1, 2])
    play(6, [0, 1, 2])
    # Its round-4 update is now older than the window: dropped, so in round 7
    # it gets no new distance (its suspicion is its old one).
    assert "3" not in defense.updates
    play(7, [0, 1, 2, 3])
    assert len(defense.distances["3"]) == 1 and defense.updates["3"][0] == 7
    assert len(defense.distances["0"]) == 2  # the window


def test_the_state_round_trips_through_torch_save_with_weights_only():
    defense = build("fldetector")
    _simulate(defense, rounds=4, attacker=0)
    buffer = io.BytesIO()
    torch.save(defense.state_dict(), buffer)
    buffer.seek(0)
    resumed = build("fldetector")
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    rng = np.random.default_rng(5)
    models = [{"w": rng.standard_normal(8), "n": np.array(1)} for _ in range(10)]
    start = {"w": np.zeros(8), "n": np.array(1)}
    ours = defense.verdict(make_round(models, None, start, 5))
    theirs = resumed.verdict(make_round(models, None, start, 5))
    assert (ours.weights, ours.flagged, ours.scores) == (
        theirs.weights,
        theirs.flagged,
        theirs.scores,
    )


def test_fldetector_is_registered_with_its_paper_and_place():
    plugin = DEFENSES.get("fldetector")
    assert plugin.order == 65 and "KDD 2022" in plugin.paper


def test_the_prediction_matches_a_benign_update_once_lbfgs_has_seen_the_hessian():
    # Noise-free clients of a quadratic: g_t = g_(t-1) - H (w_t - w_(t-1))
    # exactly, the same change for every client. Without a prediction (or a
    # wrong one) the distance is about |H dw|; L-BFGS learns H from the global
    # model's trajectory and the predicted update becomes the update.
    trajectory: list[np.ndarray] = []
    verdicts = _simulate(
        build("fldetector"), rounds=12, noise=0.0, trajectory=trajectory
    )
    h = _hessian(8, 0)
    # rounds 1-2: no (dW, dG) pair yet, nothing predicted
    assert verdicts[0].details["distances"] == verdicts[1].details["distances"] == {}
    for t in (8, 10, 12):
        distances = list(verdicts[t - 1].details["distances"].values())
        unpredicted = np.linalg.norm(h @ (trajectory[t - 1] - trajectory[t - 2]))
        assert max(distances) < 0.1 * unpredicted
