"""IBA: the trained generator's bounded trigger raises the target class on a
fixed model, the published generator reproduces the images the attacker
trained on, and the sent update is zero on the most-changed coordinates and
inside the L2 ball."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from clients import bundle, spec, update_norm
from torch import nn

from fedlight.attacks.iba import (
    BOUNDS_KEY,
    GENERATOR_PREFIX,
    IBA,
    apply_trigger,
    initial_generator,
    load_generator,
)
from fedlight.attacks.neurotoxin import MEMORY_PREFIX, neurotoxin_mask
from fedlight.client import fit_client
from fedlight.models import build_model

PIXEL_MAX = 2.0


def _data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images inside the pixel range, as normalised data is."""
    b = bundle(num_clients=1, per_client=n)
    x = torch.from_numpy(b["train_x"]).clamp(max=PIXEL_MAX)
    return x, torch.from_numpy(b["train_y"])


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One thread, as every client trains (and fast on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _linear_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10))


def test_the_mask_drops_exactly_the_largest_changes_over_all_tensors():
    change = {"a": torch.tensor([0.1, -5.0, 0.2]), "b": torch.tensor([3.0, 0.0, 1.0])}
    keep = neurotoxin_mask(change, mask_ratio=3 / 6)
    assert torch.equal(keep["a"], torch.tensor([True, False, True]))
    assert torch.equal(keep["b"], torch.tensor([False, True, False]))
    assert all(m.all() for m in neurotoxin_mask(change, 0.0).values())


def test_the_trained_generator_raises_the_target_probability_within_eps():
    model = _linear_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _data()
    attack = IBA(malicious_clients=[0], generator_epochs=5, batch_size=16)
    low, high, eps = attack.bounds(x, PIXEL_MAX)
    memory: dict[str, torch.Tensor] = {}
    attack.prepare(0, 1, model, x, y, PIXEL_MAX, memory, torch.Generator())
    trained = load_generator(memory, 1)

    def target_probability(g: nn.Module) -> float:
        with torch.no_grad():
            return float(
                model(apply_trigger(g, x, low, high, eps)).softmax(1)[:, 9].mean()
            )

    gain = target_probability(trained) - target_probability(initial_generator(1))
    assert gain > 0.05, gain
    with torch.no_grad():
        poisoned = apply_trigger(trained, x, low, high, eps)
    assert float((poisoned - x).abs().max()) <= eps * (1 + 1e-6)
    assert float(poisoned.min()) >= low and float(poisoned.max()) <= high
    for k, v in model.state_dict().items():  # the global model is not touched
        assert torch.equal(v, before[k])


def test_the_published_generator_reproduces_the_attackers_training_images():
    x, y = _data()
    attack = IBA(malicious_clients=[0], generator_epochs=1, batch_size=32)
    assert attack.poison(0, x, y, PIXEL_MAX, torch.Generator()) == (x, y)
    assert attack.published({}) == {}, "nothing before the first attack"
    memory: dict[str, torch.Tensor] = {}
    px, py = attack.prepare(
        0, 1, _linear_model(), x, y, PIXEL_MAX, memory, torch.Generator()
    )
    assert all(isinstance(v, torch.Tensor) for v in memory.values())
    poisoned = py != y
    assert int(poisoned.sum()) == round(0.5 * int((y != 9).sum()))
    assert torch.all(py[poisoned] == 9) and torch.equal(px[~poisoned], x[~poisoned])
    published = attack.published(memory)
    assert BOUNDS_KEY in published and all(
        k == BOUNDS_KEY or k.startswith(GENERATOR_PREFIX) for k in published
    )
    ax, ay = attack.asr_set(x[poisoned], y[poisoned], PIXEL_MAX, published)
    torch.testing.assert_close(ax, px[poisoned])
    assert torch.all(ay == 9)
    # At startup: the initial generator, a different trigger.
    ax0, _ = attack.asr_set(x[poisoned], y[poisoned], PIXEL_MAX)
    assert not torch.allclose(ax0, ax)


def test_the_sent_update_skips_the_most_changed_coordinates_and_stays_in_the_ball():
    torch.manual_seed(0)
    model = build_model("convnet", 10, 1)
    state = model.state_dict()
    noise = torch.Generator().manual_seed(1)
    previous = {
        k: v - 0.01 * torch.randn(v.shape, generator=noise) for k, v in state.items()
    }
    memory = {MEMORY_PREFIX + k: v.clone() for k, v in previous.items()}
    attack = IBA(malicious_clients=[0], generator_epochs=1, mask_ratio=0.3, pgd_eps=0.2)
    sent, _ = fit_client(spec(attack, lr=1e-2), 0, state, server_round=2, memory=memory)
    names = [n for n, _ in model.named_parameters()]
    keep = neurotoxin_mask({n: state[n] - previous[n] for n in names}, 0.3)
    for n in names:
        moved = sent[n] - state[n]
        assert torch.all(moved[~keep[n]] == 0), n
    assert any(bool((sent[n] - state[n])[keep[n]].abs().max() > 0) for n in names)
    assert update_norm(state, sent) <= 0.2 * (1 + 1e-5)
    # The attacker remembers this round's global model for the next mask.
    for k, v in state.items():
        assert torch.equal(memory[MEMORY_PREFIX + k], v)
    # In the first round it takes part in there is no mask.
    assert (
        IBA(malicious_clients=[0]).training_hooks(0, 1, state, {}).before_step is None
    )
