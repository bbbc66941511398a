"""A3FL: the optimised trigger raises the target class on a fixed model, the
adversarial copy unlearns it, the attacker trains on and publishes the trigger
it keeps in memory, and the Lightning client and the reference loop make the
same trigger."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from clients import bundle, spec
from omegaconf import OmegaConf
from torch import nn

from fedlight.attacks.a3fl import A3FL, TRIGGER_KEY, stamp_patch, unlearned_copy
from fedlight.client import client_data, fit_client
from fedlight.models import build_model
from fedlight.reference import train_clients

PIXEL_MAX = 2.0


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One thread, as every client trains (and fast on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    b = bundle(num_clients=1, per_client=n)
    return torch.from_numpy(b["train_x"]), torch.from_numpy(b["train_y"])


def _linear_model() -> nn.Module:
    """A fixed model on which a patch's pixels move the logits directly."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10))


def _target_probability(
    model: nn.Module, x: torch.Tensor, patch: torch.Tensor
) -> float:
    with torch.no_grad():
        return float(model(stamp_patch(x, patch)).softmax(1)[:, 9].mean())


def test_stamp_patch_replaces_exactly_the_patch_pixels():
    x = torch.zeros(2, 1, 8, 8)
    patch = torch.arange(4.0).view(1, 2, 2) + 1
    out = stamp_patch(x, patch)
    torch.testing.assert_close(out[:, :, 2:4, 2:4], patch.expand(2, 1, 2, 2))
    out[:, :, 2:4, 2:4] = 0
    assert torch.all(out == 0) and torch.all(x == 0), "only the patch; x untouched"


def test_the_optimised_trigger_raises_the_target_probability_of_a_fixed_model():
    model = _linear_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _data()
    attack = A3FL(
        malicious_clients=[0], trigger_epochs=3, adv_epochs=1, batch_size=16,
        trigger_lr=0.05, adv_lambda=1.0,
    )  # fmt: skip
    memory: dict[str, torch.Tensor] = {}
    attack.prepare(0, 1, model, x, y, PIXEL_MAX, memory, torch.Generator())
    trigger = memory[TRIGGER_KEY]
    initial = attack.initial_trigger(1, PIXEL_MAX)
    assert trigger.shape == (1, 5, 5) and not torch.equal(trigger, initial)
    assert float(trigger.max()) <= PIXEL_MAX and float(trigger.min()) >= float(x.min())
    gain = _target_probability(model, x, trigger) - _target_probability(
        model, x, initial
    )
    assert gain > 0.05, gain
    for k, v in model.state_dict().items():  # the global model is not touched
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_the_adversarial_copy_unlearns_the_trigger_and_leaves_the_model_alone():
    model = _linear_model()
    x, y = _data()
    patch = torch.full((1, 5, 5), PIXEL_MAX)
    adv = unlearned_copy(model, x, y, patch, 5, 0.01, 16, torch.Generator())

    def true_label_loss(m: nn.Module) -> float:
        with torch.no_grad():
            return float(nn.functional.cross_entropy(m(stamp_patch(x, patch)), y))

    assert true_label_loss(adv) < 0.8 * true_label_loss(model)
    assert adv is not model and not any(p.requires_grad for p in adv.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_the_attacker_trains_on_and_publishes_the_trigger_in_its_memory():
    x, y = _data()
    attack = A3FL(malicious_clients=[0], trigger_epochs=1, adv_epochs=0, batch_size=32)
    assert attack.poison(0, x, y, PIXEL_MAX, torch.Generator()) == (x, y)
    assert attack.published({}) == {}, "nothing before the first attack"
    memory: dict[str, torch.Tensor] = {}
    px, py = attack.prepare(
        0, 1, _linear_model(), x, y, PIXEL_MAX, memory, torch.Generator()
    )
    assert set(memory) == {TRIGGER_KEY}
    assert all(isinstance(v, torch.Tensor) for v in memory.values())
    trigger = memory[TRIGGER_KEY]
    poisoned = py != y
    non_target = int((y != 9).sum())
    assert int(poisoned.sum()) == round(0.5 * non_target)
    assert torch.all(py[poisoned] == 9)
    torch.testing.assert_close(px[poisoned], stamp_patch(x[poisoned], trigger))
    torch.testing.assert_close(px[~poisoned], x[~poisoned])
    published = attack.published(memory)
    assert torch.equal(published[TRIGGER_KEY], trigger)
    # The ASR set stamps the published trigger; at startup the initial one.
    ax, ay = attack.asr_set(x, y, PIXEL_MAX, published)
    assert len(ay) == non_target and torch.all(ay == 9)
    torch.testing.assert_close(ax[:, :, 2:7, 2:7], trigger.expand(len(ay), 1, 5, 5))
    ax0, _ = attack.asr_set(x, y, PIXEL_MAX)
    assert torch.all(ax0[:, :, 2:7, 2:7] == PIXEL_MAX)


def test_the_next_round_starts_from_the_remembered_trigger():
    x, y = _data()
    attack = A3FL(
        malicious_clients=[0], trigger_epochs=1, adv_epochs=0, trigger_lr=1e-6
    )
    low = float(x.min())
    memory = {TRIGGER_KEY: torch.full((1, 5, 5), low)}
    attack.prepare(0, 2, _linear_model(), x, y, PIXEL_MAX, memory, torch.Generator())
    assert float((memory[TRIGGER_KEY] - low).abs().max()) < 1e-3


def test_the_lightning_client_and_the_reference_loop_make_the_same_trigger():
    attack = A3FL(malicious_clients=[0], trigger_epochs=2, adv_epochs=1, batch_size=32)
    client = spec(attack)
    torch.manual_seed(0)
    model = build_model("convnet", 10, 1)
    state = model.state_dict()
    assert torch.equal(client_data(client, 0)[1], client_data(client, 0, False)[1])
    lightning: dict[str, torch.Tensor] = {}
    fit_client(client, 0, state, server_round=1, memory=lightning)
    cfg = OmegaConf.create(
        {
            "seed": 0,
            "client": {"epochs": 1, "lr": 1e-3, "batch_size": 16, "optimizer": "adam"},
        }
    )
    memories: dict[int, dict[str, torch.Tensor]] = {}
    train_clients(cfg, client, model, state, attack, [0], 1, {}, memories)
    torch.testing.assert_close(memories[0][TRIGGER_KEY], lightning[TRIGGER_KEY])
    # Off schedule an attacker keeps no trigger (and publishes none).
    off = A3FL(malicious_clients=[0], rounds="2")
    idle: dict[str, torch.Tensor] = {}
    fit_client(spec(off), 0, state, server_round=1, memory=idle)
    assert off.published(idle) == {}


def test_the_adversarial_copy_steers_the_trigger_only_once_it_exists():
    # lambda_0 > 0 changes the searched trigger from the second pass on (the
    # copy is built before every pass but the first); with one pass it cannot
    x, y = _data()

    def search(epochs: int, adv_lambda: float) -> torch.Tensor:
        attack = A3FL(
            malicious_clients=[0], trigger_epochs=epochs, adv_epochs=1,
            batch_size=16, trigger_lr=0.05, adv_lambda=adv_lambda,
        )  # fmt: skip
        memory: dict[str, torch.Tensor] = {}
        generator = torch.Generator().manual_seed(3)
        attack.prepare(0, 1, _linear_model(), x, y, PIXEL_MAX, memory, generator)
        return memory[TRIGGER_KEY]

    assert torch.equal(search(1, 1e-12), search(1, 5.0))
    # the same copies (the same random draws) in both; only the weight differs
    assert not torch.equal(search(3, 1e-12), search(3, 5.0))
