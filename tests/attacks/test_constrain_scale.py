"""Constrain-and-scale: the anomaly term lowers the distance it measures, the
loss is exactly alpha * CE + (1 - alpha) * distance, alpha = 1 is the plain
backdoor, and scale multiplies the constrained update."""

from __future__ import annotations

import pytest
import torch
from clients import spec, update_norm

from fedlight.attacks.backdoor import Backdoor
from fedlight.attacks.constrain_scale import (
    ConstrainScale,
    anomaly_distance,
    constrain_loss,
)
from fedlight.client import client_data, fit_client
from fedlight.models import build_model
from fedlight.reference import train_client


def _global_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model("convnet", 10, 1).state_dict()


def _distance(state: dict, center: dict) -> float:
    model = build_model("convnet", 10, 1)
    model.load_state_dict(state)
    with torch.no_grad():
        return float(anomaly_distance(model, center))


def test_the_distance_is_the_l2_norm_over_the_parameters_and_finite_at_zero():
    model = torch.nn.Linear(2, 1)
    center = {"weight": torch.zeros(1, 2), "bias": torch.zeros(1)}
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 0.0]]))
        model.bias.fill_(4.0)
    assert float(anomaly_distance(model, center).detach()) == pytest.approx(5.0)
    # At the center (the first step of every fit) the gradient is 0, not NaN.
    at_center = {k: v.detach().clone() for k, v in model.state_dict().items()}
    anomaly_distance(model, at_center).backward()
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in model.parameters())


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.7, 1.0])
def test_ce_plus_the_extra_loss_is_the_papers_loss_on_fixed_logits(alpha):
    model = torch.nn.Linear(3, 4)
    center = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0], [0.1, 0.2, 3.0, -2.0]])
    y = torch.tensor([0, 3])
    ce = torch.nn.functional.cross_entropy(logits, y)
    total = ce + constrain_loss(model, y, logits, center, alpha)
    distance = anomaly_distance(model, center)
    assert float(distance.detach()) > 0.1  # both terms matter
    torch.testing.assert_close(total, alpha * ce + (1 - alpha) * distance)


def test_alpha_below_one_ends_closer_to_the_global_model():
    state = _global_state()
    distances = {}
    for alpha in (1.0, 0.7, 0.3):
        attack = ConstrainScale(malicious_clients=[0], alpha=alpha)
        sent, _ = fit_client(spec(attack, lr=1e-2), 0, state, server_round=1)
        distances[alpha] = _distance(sent, state)
    assert distances[0.7] < 0.9 * distances[1.0]
    assert distances[0.3] < 0.9 * distances[0.7]


def test_alpha_one_trains_exactly_the_plain_backdoor():
    state = _global_state()
    sent, metrics = fit_client(
        spec(ConstrainScale(malicious_clients=[0], alpha=1.0)), 0, state, 1
    )
    plain, plain_metrics = fit_client(
        spec(Backdoor(malicious_clients=[0])), 0, state, 1
    )
    assert all(torch.equal(sent[k], plain[k]) for k in plain)
    assert metrics["train-loss"] == plain_metrics["train-loss"]
    # Same trigger, poisoning and ASR set as the patch backdoor.
    client = spec(ConstrainScale(malicious_clients=[0]))
    x, y = client_data(client, 0)
    bx, by = client_data(spec(Backdoor(malicious_clients=[0])), 0)
    assert torch.equal(x, bx) and torch.equal(y, by)


def test_the_plain_loop_runs_the_same_term():
    state = _global_state()
    attack = ConstrainScale(malicious_clients=[0], alpha=0.3)
    client = spec(attack)
    x, y = client_data(client, 0)

    def plain(hooks: object) -> dict:
        new, _ = train_client(
            build_model("convnet", 10, 1),
            state,
            x,
            y,
            epochs=1,
            lr=1e-2,
            batch_size=16,
            optimizer="adam",
            generator=torch.Generator().manual_seed(1),
            hooks=hooks,
        )
        return new

    constrained = plain(attack.training_hooks(0, 1, state, {}))
    free = plain(None)
    assert _distance(constrained, state) < 0.9 * _distance(free, state)


def test_scale_multiplies_the_constrained_update():
    state = _global_state()
    once, _ = fit_client(spec(ConstrainScale(malicious_clients=[0])), 0, state, 1)
    scaled, _ = fit_client(
        spec(ConstrainScale(malicious_clients=[0], scale=4.0)), 0, state, 1
    )
    assert update_norm(state, scaled) == pytest.approx(
        4 * update_norm(state, once), rel=1e-4
    )
