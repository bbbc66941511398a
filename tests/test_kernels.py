"""The fast training kernels (channels_last, fused optimisers) against the
plain ones on small inputs: the same computation, other float rounding; and
the plain reference loop follows whichever kernels the client uses."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from fedlight.attacks.pgd import PGDBackdoor
from fedlight.client import client_data, fit_client
from fedlight.models import build_model
from fedlight.models.kernels import batch_layout, make_optimizer, to_layout
from fedlight.reference import train_client
from fedlight.seeding import derive_seed
from support import compose_config

sys.path.insert(0, str(Path(__file__).parent / "attacks"))
from clients import spec, update_norm  # noqa: E402

FAST = {"memory_format": "channels_last", "fused_optimizer": True}


def test_channels_last_computes_what_the_contiguous_layout_does():
    torch.manual_seed(0)
    plain = build_model("convnet", 10, 1)
    fast = to_layout(build_model("convnet", 10, 1), "channels_last")
    fast.load_state_dict(plain.state_dict())
    conv = fast.features[3].weight  # 6 -> 16 channels (the first reads 1: both)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert not conv.is_contiguous()
    x = torch.randn(8, 1, 32, 32, requires_grad=True)
    xf = batch_layout(x.detach(), "channels_last").requires_grad_(True)
    assert xf.is_contiguous(memory_format=torch.channels_last)
    out, out_fast = plain(x), fast(xf)
    torch.testing.assert_close(out_fast, out, rtol=1e-5, atol=1e-6)
    out.sum().backward()
    out_fast.sum().backward()
    torch.testing.assert_close(xf.grad, x.grad, rtol=1e-5, atol=1e-6)
    assert to_layout(fast, "contiguous").features[3].weight.is_contiguous()
    # labels and flat tensors pass through
    y = torch.arange(4)
    assert batch_layout(y, "channels_last") is y


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_fused_optimizer_steps_as_the_foreach_one(name):
    torch.manual_seed(0)
    models = [build_model("convnet", 10, 1) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [
        make_optimizer(m.parameters(), name, 1e-2, fused=f)
        for m, f in zip(models, (False, True), strict=True)
    ]
    assert opts[1].defaults.get("fused") and not opts[0].defaults.get("fused")
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        grads = [torch.randn(p.shape, generator=gen) for p in models[0].parameters()]
        for model, opt in zip(models, opts, strict=True):
            for p, g in zip(model.parameters(), grads, strict=True):
                p.grad = g.clone()
            opt.step()
    for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)


def _plain_fit(client, state, **kernels):
    x, y = client_data(client, 0)
    shuffle = torch.Generator().manual_seed(derive_seed(client.seed, "shuffle", 0, 1))
    return train_client(
        build_model("convnet", 10, 1),
        state,
        x,
        y,
        epochs=client.epochs,
        lr=client.lr,
        batch_size=client.batch_size,
        optimizer=client.optimizer,
        generator=shuffle,
        **kernels,
    )[0]


def test_the_fast_client_trains_as_the_plain_loop():
    """The Lightning client with the fast kernels: within float rounding of the
    plain loop with the plain kernels, and bit for bit the plain loop with the
    same kernels (the oracle the full-stack test compares with)."""
    torch.manual_seed(0)
    state = build_model("convnet", 10, 1).state_dict()
    client = spec(PGDBackdoor(malicious_clients=[]), **FAST)
    sent, _ = fit_client(client, 0, state, server_round=1)
    assert all(v.is_contiguous() for v in sent.values())
    plain = _plain_fit(client, state)
    moved = max(float((sent[k] - state[k]).abs().max()) for k in state)
    assert moved > 1e-3
    for key, value in plain.items():
        torch.testing.assert_close(sent[key], value, rtol=0, atol=1e-4)
    same = _plain_fit(client, state, memory_format="channels_last", fused=True)
    assert all(torch.equal(sent[k], same[k]) for k in same)


def test_an_attack_hook_holds_under_the_fast_kernels():
    attack = PGDBackdoor(malicious_clients=[0], eps=0.05)
    torch.manual_seed(0)
    state = build_model("convnet", 10, 1).state_dict()
    sent, _ = fit_client(spec(attack, epochs=2, lr=1e-2, **FAST), 0, state, 1)
    assert update_norm(state, sent) <= 0.05 * (1 + 1e-5)


def test_the_shipped_configs_choose_the_kernels_per_model(data_root):
    from fedlight.simulate import prepare_experiment

    cfg = compose_config(
        [
            "+experiment=mnist_20",
            f"dataset.root={data_root}",
            "dataset.max_train_samples=400",
        ]
    )
    assert cfg.model.memory_format == "channels_last" and cfg.client.fused_optimizer
    experiment = prepare_experiment(cfg)
    client = experiment.client_spec(cfg, {}, num_threads=1)
    assert (client.memory_format, client.fused_optimizer) == ("channels_last", True)
    # the server's defence gets the model's layout too (the robust search's reference)
    assert experiment.defense_context(cfg).memory_format == "channels_last"
    resnet = compose_config(["model=resnet18", "client.fused_optimizer=false"])
    assert resnet.model.memory_format == "contiguous"
    assert not resnet.client.fused_optimizer
