"""Neurotoxin: the mask is the top-|change| coordinates of the last global
change (in the first round, of the clean gradient), the sent update is exactly
zero on them after a real client fit, and the attacker remembers the global
model."""

from __future__ import annotations

import pytest
import torch
from clients import spec, update_norm
from flwr.app import ArrayRecord

from fedlight.attacks.backdoor import Backdoor
from fedlight.attacks.neurotoxin import (
    GRADIENT_PREFIX,
    MEMORY_PREFIX,
    Neurotoxin,
    clean_gradient,
    neurotoxin_mask,
    remembered_global,
)
from fedlight.client import client_data, fit_client
from fedlight.models import build_model
from fedlight.reference import train_client


def _global_and_memory() -> tuple[dict, dict, dict]:
    """This round's global state, the memory holding a previous global, and
    the keep masks the attack must use (computed here from the change)."""
    torch.manual_seed(0)
    model = build_model("convnet", 10, 1)
    state = model.state_dict()
    generator = torch.Generator().manual_seed(1)
    previous = {
        k: v - 0.01 * torch.randn(v.shape, generator=generator)
        for k, v in state.items()
    }
    memory = {MEMORY_PREFIX + k: v.clone() for k, v in previous.items()}
    names = [n for n, _ in model.named_parameters()]
    return state, memory, {k: state[k] - previous[k] for k in names}


def test_the_mask_drops_exactly_the_largest_changes_over_all_tensors():
    change = {
        "a": torch.tensor([0.1, -5.0, 0.2]),
        "b": torch.tensor([[3.0, 0.0], [-0.05, 1.0]]),
    }
    keep = neurotoxin_mask(change, mask_ratio=3 / 7)
    # The three largest |change| are -5 (in a), 3 and 1 (in b): one top-k over
    # both tensors, not per tensor (which would drop one of a and one of b).
    assert torch.equal(keep["a"], torch.tensor([True, False, True]))
    assert torch.equal(keep["b"], torch.tensor([[False, True], [True, False]]))
    assert all(m.all() for m in neurotoxin_mask(change, 0.0).values())


def test_adam_and_sgd_leave_a_coordinate_with_zero_gradients_unchanged():
    for make in (
        lambda ps: torch.optim.Adam(ps, lr=0.1),
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    ):
        w = torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
        opt, keep = make([w]), torch.tensor([True, False, True])
        for _ in range(5):  # a fresh optimiser, as every client fit builds
            opt.zero_grad()
            (w**2).sum().backward()
            w.grad.mul_(keep)
            opt.step()
        assert w[1].item() == 2.0 and w[0].item() != 1.0


@pytest.mark.parametrize("eps", [None, 0.2])
def test_the_sent_update_is_zero_on_the_masked_coordinates(eps):
    state, memory, change = _global_and_memory()
    attack = Neurotoxin(malicious_clients=[0], mask_ratio=0.3, eps=eps)
    sent, _ = fit_client(
        spec(attack, lr=1e-2), 0, state, server_round=2, memory=dict(memory)
    )
    keep = neurotoxin_mask(change, 0.3)
    masked = sum(int((~m).sum()) for m in keep.values())
    total = sum(m.numel() for m in keep.values())
    assert masked == round(0.3 * total)
    for k, m in keep.items():
        assert torch.equal(sent[k][~m], state[k][~m]), k
    moved = sum(int((sent[k] != state[k])[m].sum()) for k, m in keep.items())
    assert moved > 0.5 * (total - masked)  # the rest does train
    # Unmasked, the same training moves most of those coordinates.
    free, _ = fit_client(spec(Backdoor(malicious_clients=[0]), lr=1e-2), 0, state, 2)
    assert sum(int((free[k] != state[k])[~m].sum()) for k, m in keep.items()) > (
        0.5 * masked
    )
    if eps is not None:
        assert update_norm(state, sent) <= eps * (1 + 1e-5)
    # The plain reference loop masks at the same point (with the memory as it
    # was before the fit: afterwards it holds this round's global).
    x, y = client_data(spec(attack), 0)
    plain, _ = train_client(
        build_model("convnet", 10, 1),
        state,
        x,
        y,
        epochs=1,
        lr=1e-2,
        batch_size=16,
        optimizer="adam",
        generator=torch.Generator(),
        hooks=attack.training_hooks(0, 2, state, memory),
    )
    for k, m in keep.items():
        assert torch.equal(plain[k][~m], state[k][~m]), k


def test_without_a_previous_global_the_mask_comes_from_the_clean_gradient():
    # Round 1: no global change yet. As the official grad_mask_cv, the mask
    # drops the coordinates of largest gradient of the clean samples (those
    # not relabelled to the target) on the global model.
    state, _, _ = _global_and_memory()
    attack = Neurotoxin(malicious_clients=[0], mask_ratio=0.3)
    assert attack.training_hooks(0, 1, state, {}).before_step is None
    memory: dict = {}
    sent, _ = fit_client(spec(attack, lr=1e-2), 0, state, server_round=1, memory=memory)
    x, y = client_data(spec(attack), 0)
    clean = y != attack.target_label
    model = build_model("convnet", 10, 1)
    model.load_state_dict(state)
    keep = neurotoxin_mask(clean_gradient(model, x[clean], y[clean]), 0.3)
    for k, m in keep.items():
        assert torch.equal(sent[k][~m], state[k][~m]), k
    assert sum(int((sent[k] != state[k])[m].sum()) for k, m in keep.items()) > 0
    # Afterwards the memory holds this round's global, not the gradient.
    assert not any(k.startswith(GRADIENT_PREFIX) for k in memory)
    assert set(remembered_global(memory)) == set(state)
    # With nothing masked it is the plain backdoor.
    free = Neurotoxin(malicious_clients=[0], mask_ratio=0.0)
    sent, _ = fit_client(spec(free), 0, state, server_round=1, memory={})
    plain, _ = fit_client(spec(Backdoor(malicious_clients=[0])), 0, state, 1)
    assert all(torch.equal(sent[k], plain[k]) for k in plain)


def test_the_clean_gradient_sums_the_per_sample_gradients():
    torch.manual_seed(0)
    model = build_model("convnet", 10, 1)
    x, y = torch.randn(5, 1, 32, 32), torch.tensor([0, 1, 2, 3, 4])
    total = clean_gradient(model, x, y, batch_size=2)  # batches of 2, 2, 1
    for i in range(5):
        one = clean_gradient(model, x[i : i + 1], y[i : i + 1])
        total = {k: v - one[k] for k, v in total.items()}
    assert all(v.abs().max() < 1e-5 for v in total.values())


def test_observe_stores_the_global_model_as_tensors_flower_can_keep():
    state, _, _ = _global_and_memory()
    attack = Neurotoxin(malicious_clients=[0], rounds="2")
    memory: dict = {}
    fit_client(spec(attack), 0, state, server_round=1, memory=memory)  # off schedule
    stored = remembered_global(memory)
    assert set(stored) == set(state)
    assert all(torch.equal(stored[k], state[k]) for k in state)
    assert all(isinstance(v, torch.Tensor) for v in memory.values())
    # The ClientApp keeps memory in Flower's context state as an ArrayRecord.
    kept = ArrayRecord(memory).to_torch_state_dict()
    assert set(kept) == set(memory)
    assert all(torch.equal(kept[k], memory[k]) for k in memory)
    # The next round masks from it: global_2 - global_1.
    hooks = attack.training_hooks(0, 2, state, kept)
    assert hooks.before_step is not None
