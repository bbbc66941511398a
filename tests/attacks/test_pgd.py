"""PGD: the attacker's update never leaves the L2 ball of radius eps, in the
Lightning client and in the plain reference loop alike."""

from __future__ import annotations

import pytest
import torch
from clients import spec, update_norm

from fedlight.attacks.pgd import PGDBackdoor, project_to_ball
from fedlight.client import client_data, fit_client
from fedlight.models import build_model
from fedlight.reference import train_client


def test_projection_lands_on_the_ball_and_leaves_points_inside_alone():
    model = torch.nn.Linear(2, 1, bias=False)
    center = {"weight": torch.zeros(1, 2)}
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 4.0]]))
        assert project_to_ball(model, center, 1.0) == pytest.approx(5.0)
    torch.testing.assert_close(model.weight.data, torch.tensor([[0.6, 0.8]]))
    with torch.no_grad():
        project_to_ball(model, center, 2.0)  # inside: unchanged
    torch.testing.assert_close(model.weight.data, torch.tensor([[0.6, 0.8]]))


@pytest.mark.parametrize("eps", [0.05, 0.5])
def test_the_sent_update_never_exceeds_eps(eps):
    attack = PGDBackdoor(malicious_clients=[0], eps=eps)
    torch.manual_seed(0)
    state = build_model("convnet", 10, 1).state_dict()
    sent, _ = fit_client(spec(attack, epochs=2, lr=1e-2), 0, state, server_round=1)
    assert update_norm(state, sent) <= eps * (1 + 1e-5)
    # Without the projection the same training moves much further.
    free, _ = fit_client(
        spec(PGDBackdoor(malicious_clients=[]), epochs=2, lr=1e-2), 0, state, 1
    )
    assert update_norm(state, free) > 2 * eps
    # The plain loop runs the same hook at the same point.
    client = spec(attack)
    x, y = client_data(client, 0)
    hooks = attack.training_hooks(0, 1, state, {})
    plain, _ = train_client(
        build_model("convnet", 10, 1),
        state,
        x,
        y,
        epochs=2,
        lr=1e-2,
        batch_size=16,
        optimizer="adam",
        generator=torch.Generator(),
        hooks=hooks,
    )
    assert update_norm(state, plain) <= eps * (1 + 1e-5)


def test_scale_multiplies_the_projected_update():
    attack = PGDBackdoor(malicious_clients=[0], eps=0.1, scale=3.0)
    torch.manual_seed(0)
    state = build_model("convnet", 10, 1).state_dict()
    sent, _ = fit_client(spec(attack), 0, state, server_round=1)
    assert update_norm(state, sent) == pytest.approx(0.3, rel=1e-4)
