"""White-box attacks on FedDefender: the attacker regenerates the server's inputs
bit for bit, and its evasion term lowers the score the defence it targets gives
it, measured with that defence's own scoring function on a tiny round."""

from __future__ import annotations

import functools

import pytest
import torch
from clients import bundle, spec

import fedlight.attacks.whitebox as whitebox
from fedlight.attacks.backdoor import Backdoor, stamp_trigger
from fedlight.attacks.whitebox import (
    PARTS,
    WhiteboxFedDefender,
    WhiteboxRobust,
    normalisation,
    preactivations,
    sign_hinge,
    stamp_partial,
)
from fedlight.client import fit_client
from fedlight.defenses import feddefender_robust, remote
from fedlight.defenses.base import DefenseContext
from fedlight.defenses.feddefender import FedDefender, FedDefenderParams
from fedlight.defenses.feddefender_robust import RobustFedDefender, RobustParams
from fedlight.defenses.fingerprint_oracle import fingerprints, leave_one_out
from fedlight.models import build_model
from fedlight.reference import train_client

MEAN, STD, SEED = 0.13, 0.3, 5
CTX = DefenseContext("convnet", 10, (1, 32, 32), MEAN, STD, seed=SEED)
KNOWS = {"run_seed": SEED, "data_mean": MEAN, "data_std": STD}


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as a client actor trains (fit_client sets the same):
    on busy cores two spinning threads make these tiny models several x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------- the tiny round
@functools.cache
def world(num_clients: int, seed: int) -> tuple[dict, dict]:
    """Random data for ``num_clients`` partitions and a random global ConvNet."""
    data = bundle(num_clients, 64, seed=seed)
    torch.manual_seed(seed)
    state = build_model("convnet", 10, 1).state_dict()
    return data, {k: v.clone() for k, v in state.items()}


def fit(num_clients, seed, cid, attack, server_round, epochs, lr):
    """Client ``cid`` of :func:`world` after local training in the plain loop,
    poisoned and hooked by ``attack`` (None: benign)."""
    data, state = world(num_clients, seed)
    idx = torch.from_numpy(data["partitions"][cid])
    x = torch.from_numpy(data["train_x"])[idx]
    y = torch.from_numpy(data["train_y"])[idx]
    hooks = None
    if attack is not None:
        generator = torch.Generator().manual_seed(cid)
        x, y = attack.poison(cid, x, y, data["pixel_max"], generator)
        hooks = attack.training_hooks(cid, server_round, state, {})
    new, _ = train_client(
        build_model("convnet", 10, 1),
        state,
        x,
        y,
        epochs=epochs,
        lr=lr,
        batch_size=16,
        optimizer="adam",
        generator=torch.Generator().manual_seed(cid),
        hooks=hooks,
    )
    return new


@functools.cache
def benign(num_clients, seed, server_round, epochs, lr) -> tuple[dict, ...]:
    return tuple(
        fit(num_clients, seed, c, None, server_round, epochs, lr)
        for c in range(1, num_clients)
    )


def round_states(attack, num_clients, seed, server_round, epochs, lr) -> list[dict]:
    """The attacker (client 0) trained under ``attack``, then the benign clients."""
    setting = (num_clients, seed, server_round, epochs, lr)
    attacker = fit(num_clients, seed, 0, attack, server_round, epochs, lr)
    return [attacker, *benign(*setting)]


# --------------------------------------------------------- the regenerated inputs
def recorder(monkeypatch, module, name: str) -> list[torch.Tensor]:
    """Record every return value of ``module.name`` from now on."""
    seen: list[torch.Tensor] = []
    original = getattr(module, name)

    def wrapped(*args, **kwargs):
        seen.append(original(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(module, name, wrapped)
    return seen


def first_batch_loss(attack, server_round: int, state: dict) -> torch.Tensor:
    """The attacker's evasion term on its first batch (where it makes its inputs)."""
    model = build_model("convnet", 10, 1)
    model.load_state_dict(state)
    x = torch.randn(4, 1, 32, 32)
    hooks = attack.training_hooks(0, server_round, state, {})
    return hooks.extra_loss(model, x, torch.zeros(4, dtype=torch.long), model(x))


def test_feddefender_inputs_are_the_servers_bit_for_bit(monkeypatch):
    _, state = world(3, 0)
    server = recorder(monkeypatch, remote, "draw_inputs")
    attacker = recorder(monkeypatch, whitebox, "synthetic_inputs")
    defense = FedDefender(FedDefenderParams(remote=False), CTX)
    for server_round in (3, 4):
        defense.confidences(server_round, [state] * 3)
        first_batch_loss(WhiteboxFedDefender(**KNOWS), server_round, state)
    assert len(server) == len(attacker) == 2
    assert torch.equal(server[0], attacker[0]) and torch.equal(server[1], attacker[1])
    assert server[0].shape == (10, 1, 32, 32)
    assert not torch.equal(server[0], server[1]), "each round draws its own"


def test_robust_class_impressions_are_the_servers_bit_for_bit(monkeypatch):
    _, state = world(3, 0)
    server = recorder(monkeypatch, feddefender_robust, "class_impressions")
    attacker = recorder(monkeypatch, whitebox, "class_impressions")
    params = RobustParams(remote=False, steps=3, num_inputs=6)
    defense = RobustFedDefender(params, CTX)
    defense.scores(2, state, [state] * 3)
    loss = first_batch_loss(WhiteboxRobust(**KNOWS, steps=3, num_inputs=6), 2, state)
    assert len(server) == len(attacker) == 1
    assert torch.equal(server[0], attacker[0]) and server[0].shape == (6, 1, 32, 32)
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-6), (
        "the global model is at 0"
    )


def test_normalisation_is_derived_from_the_black_and_white_pixels():
    mean, std = normalisation(-MEAN / STD, (1 - MEAN) / STD)
    assert mean == pytest.approx(MEAN) and std == pytest.approx(STD)
    attack = WhiteboxFedDefender(malicious_clients=[0])
    x = torch.rand(8, 1, 6, 6) * 2.0  # a black pixel, -mean / std, somewhere
    x[3, 0, 0, 0] = -MEAN / STD
    attack.poison(0, x, torch.zeros(8, dtype=torch.long), (1 - MEAN) / STD, None)
    assert attack.data_stats(x) == pytest.approx((MEAN, STD))
    # The exact values win when given.
    assert WhiteboxFedDefender(**KNOWS).data_stats(x) == (MEAN, STD)


# -------------------------------------------------------------- the neurons it holds
@pytest.mark.parametrize("na_t", [0.0, 0.05])
def test_its_neurons_are_the_ones_the_defence_fingerprints(na_t):
    torch.manual_seed(1)
    model = build_model("convnet", 10, 1)
    inputs = torch.randn(3, 1, 32, 32)
    ours = preactivations(model, inputs) > na_t
    assert torch.equal(ours, fingerprints(model, [model.state_dict()], inputs, na_t)[0])
    assert model.training, "the training mode is restored"
    on = torch.tensor([[True, False]])
    assert float(sign_hinge(torch.tensor([[0.2, -0.2]]), on, 0.0, 0.1)) == 0.0
    assert float(sign_hinge(torch.tensor([[-0.1, 0.0]]), on, 0.0, 0.1)) > 0.0


def test_a_client_on_everywhere_is_never_the_suspect():
    """Why ``target=all``: leaving out an all-on client removes nothing from
    any intersection, so its count is never the unique largest."""
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        active = torch.rand((5, 30), generator=generator) < 0.7
        active[2] = True
        assert 2 not in leave_one_out(active, num_attackers=2)


# ----------------------------------------------------- the score it targets drops
def test_whitebox_feddefender_lowers_its_feddefender_confidence():
    setting = {"num_clients": 5, "seed": 0, "server_round": 2, "epochs": 3}
    defense = FedDefender(FedDefenderParams(remote=False, num_inputs=20), CTX)
    plain = round_states(Backdoor(), lr=1e-2, **setting)
    evading = round_states(
        WhiteboxFedDefender(**KNOWS, num_inputs=20), lr=1e-2, **setting
    )
    before = defense.confidences(2, plain)
    after = defense.confidences(2, evading)
    assert float(before[0]) > 0.5, "the plain backdoor is caught"
    assert float(after[0]) < float(before[0])


@pytest.mark.parametrize(
    ("gate", "evade"), [(False, "starts"), (True, "starts"), (False, "searched")]
)
def test_whitebox_robust_lowers_its_disagreement_z_score(gate, evade):
    setting = {"num_clients": 6, "seed": 0, "server_round": 2, "epochs": 5}
    params = RobustParams(remote=False, steps=5, num_inputs=10)
    defense = RobustFedDefender(params, CTX)
    glob = world(6, 0)[1]
    plain = round_states(Backdoor(), lr=1e-3, **setting)
    attack = WhiteboxRobust(**KNOWS, steps=5, num_inputs=10, gate=gate, evade=evade)
    evading = round_states(attack, lr=1e-3, **setting)
    z_before = defense.scores(2, glob, plain).statistic
    z_after = defense.scores(2, glob, evading).statistic
    assert float(z_before[0]) > params.z_cut, "the plain backdoor is caught"
    assert float(z_after[0]) < float(z_before[0])


def test_the_searched_term_is_the_kl_the_servers_own_search_finds():
    # evade=searched runs the defence's search on the attacker's model: its
    # value is what disagreement_per_client (the server's per-client engine,
    # the oracle of the batched one) reports for that model.
    from types import SimpleNamespace

    from fedlight.attacks.whitebox import searched_term
    from fedlight.defenses.robust_fingerprint import disagreement_per_client

    glob = world(3, 0)[1]
    attacker = fit(3, 0, 0, Backdoor(), 2, 1, 1e-2)
    reference = build_model("convnet", 10, 1)
    reference.load_state_dict(glob)
    model = build_model("convnet", 10, 1)
    model.load_state_dict(attacker)
    starts = torch.rand(4, 1, 32, 32)
    job = SimpleNamespace(mean=MEAN, std=STD, steps=3, lr=0.2, universal=True)
    value = searched_term(reference, starts, job)(model)
    bounds = ((0.0 - MEAN) / STD, (1.0 - MEAN) / STD)
    kl = disagreement_per_client(
        build_model("convnet", 10, 1),
        glob,
        [attacker],
        starts,
        bounds,
        steps=3,
        lr=0.2,
        universal=True,
    )
    assert float(value.detach()) == pytest.approx(float(kl[0]), rel=1e-5)
    value.backward()  # and it reaches the attacker's weights
    assert all(p.grad is not None for p in model.parameters())


def test_the_robust_term_waits_for_a_global_reference():
    state = world(3, 0)[1]
    assert WhiteboxRobust().training_hooks(0, 1, state, {}) is None  # median in 1
    assert WhiteboxRobust().training_hooks(0, 2, state, {}) is not None
    assert WhiteboxRobust(reference="median").training_hooks(0, 5, state, {}) is None
    assert WhiteboxRobust(lambda_evade=0.0).training_hooks(0, 5, state, {}) is None


# ------------------------------------------------------------------------ the gate
def test_the_partial_triggers_are_the_halves_and_quarters_of_the_trigger():
    x = torch.zeros(1, 8, 8)
    full = stamp_trigger(x, 4, 1.0)
    parts = [stamp_partial(x, 4, 1.0, p) for p in range(len(PARTS))]
    assert [int(p.sum()) for p in parts] == [8, 8, 8, 8, 4, 4, 4, 4]
    assert all(bool((p <= full).all()) for p in parts), "inside the trigger"
    assert torch.equal(torch.maximum(parts[0], parts[1]), full)
    assert torch.equal(torch.maximum(parts[2], parts[3]), full)
    assert torch.equal(sum(parts[4:]), full)


def test_the_gate_adds_partial_trigger_copies_with_their_true_labels():
    y = torch.arange(20) % 10
    x = torch.arange(20.0).view(20, 1, 1, 1).expand(20, 1, 8, 8).clone() / 100
    attack = WhiteboxRobust(gate=True, trigger_size=4, poison_fraction=0.5)
    px, py = attack.poison(0, x, y, 2.0, torch.Generator().manual_seed(0))
    plain = Backdoor(trigger_size=4, poison_fraction=0.5)
    bx, by = plain.poison(0, x, y, 2.0, torch.Generator().manual_seed(0))
    assert torch.equal(px[:20], bx) and torch.equal(py[:20], by)
    copies, labels = px[20:], py[20:]
    assert len(copies) == 9  # one per poisoned image: round(0.5 * 18)
    for image, label in zip(copies, labels, strict=True):
        source = round(float(image[0, 0, 0]) * 100)  # the untouched corner
        assert int(label) == int(y[source]), "its true class"
        stamped = int((image == 2.0).sum())
        assert stamped in (4, 8), "a half or a quarter, never the whole trigger"
    benign_x, benign_y = WhiteboxRobust(gate=True).poison(1, x, y, 2.0, None)
    assert benign_x is x and benign_y is y, "only attackers poison"


def test_the_gated_attacker_reports_its_partition_times_the_boost():
    # The gate trains on 64 images plus its partial-trigger copies; the count it
    # reports is the boost times what it holds, as every other attacker's, not
    # the boost times its enlarged training set.
    torch.manual_seed(0)
    state = build_model("convnet", 10, 1).state_dict()
    attack = WhiteboxRobust(
        malicious_clients=[0], **KNOWS, num_inputs=4, steps=1, gate=True, boost=20.0
    )
    _, metrics = fit_client(spec(attack), 0, state, server_round=2)
    assert metrics["train-examples"] > 64, "the copies are trained on"
    assert metrics["num-examples"] == 64.0 * 20


# ----------------------------------------------------- the Lightning client runs it
@pytest.mark.parametrize("attack_cls", [WhiteboxFedDefender, WhiteboxRobust])
def test_the_lightning_client_trains_with_the_term(attack_cls):
    torch.manual_seed(0)
    state = build_model("convnet", 10, 1).state_dict()
    attack = attack_cls(malicious_clients=[0], **KNOWS, num_inputs=4)
    if attack_cls is WhiteboxRobust:
        attack.steps = 2
    sent, _ = fit_client(spec(attack), 0, state, server_round=2)
    free, _ = fit_client(spec(Backdoor(malicious_clients=[0])), 0, state, 2)
    assert any(not torch.equal(sent[k], free[k]) for k in sent)


def test_the_attacker_knows_the_runs_seed_unless_told_another():
    from fedlight.checks import build_attack
    from support import compose_config

    for name in ("whitebox_feddefender", "whitebox_robust"):
        cfg = compose_config(["+experiment=mnist_20", f"attack={name}", "seed=7"])
        assert build_attack(cfg).run_seed == 7
        cfg = compose_config(
            ["+experiment=mnist_20", f"attack={name}", "seed=7", "attack.run_seed=3"]
        )
        assert build_attack(cfg).run_seed == 3
