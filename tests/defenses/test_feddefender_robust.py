"""The robust FedDefender: its kernels against their plain versions, its levers on
hand-built updates, and a real backdoored client among benign ones."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import ray
import torch
from updates import build, judge, make_round

from fedlight.attacks.backdoor import Backdoor
from fedlight.data.prepare import load_dataset
from fedlight.defenses import Defense, DefenseContext, Verdict
from fedlight.defenses.feddefender_robust import (
    RobustFedDefender,
    RobustParams,
    cap_counts,
    mean_state,
    median_state,
    remember,
    run_robust_job,
)
from fedlight.defenses.robust_fingerprint import (
    activation_features,
    activation_features_loop,
    aimed,
    confidence_from_z,
    disagreement,
    disagreement_loop,
    disagreement_per_client,
    outlier_scores,
    outlier_scores_loop,
    robust_z,
    stacked_forward,
)
from fedlight.models import build_model
from fedlight.params import ConfigError
from fedlight.reference import train_client

CTX = DefenseContext("convnet", 10, (1, 32, 32), 0.13, 0.29, seed=3)


def perturbed(num_clients: int, odd_one: int | None, seed: int = 0) -> list[dict]:
    """Copies of one convnet with tiny noise; ``odd_one`` is another random model."""
    torch.manual_seed(seed)
    base = build_model("convnet")
    models = []
    for cid in range(num_clients):
        model = copy.deepcopy(base) if cid != odd_one else build_model("convnet")
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.001 * torch.randn_like(p))
        models.append({k: v.numpy().copy() for k, v in model.state_dict().items()})
    return models


# ------------------------------------------------------------------ kernels vs oracles
@pytest.mark.parametrize("name", ["convnet", "resnet18"])
def test_activation_features_match_the_loop(name):
    torch.manual_seed(0)
    model = build_model(name)
    states = [build_model(name).state_dict() for _ in range(3)]
    inputs = torch.randn(4, 1, 32, 32)
    fast = activation_features(model, states, inputs)
    slow = activation_features_loop(model, states, inputs)
    assert fast.shape == slow.shape and fast.shape[:2] == (3, 4)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("clients", [3, 4, 7, 12])
def test_outlier_scores_match_the_loop(clients):
    generator = torch.Generator().manual_seed(clients)
    features = torch.randn((clients, 3, 5), generator=generator)
    features[:, 0, 0] = 1.0  # a coordinate where every client agrees (MAD 0)
    features[1, 1, 1] = 50.0  # one wild coordinate: capped at MAX_DEVIATION
    torch.testing.assert_close(
        outlier_scores(features), outlier_scores_loop(features), rtol=1e-5, atol=1e-4
    )


def test_outlier_scores_single_out_the_shifted_client_and_need_three():
    features = torch.randn((9, 40), generator=torch.Generator().manual_seed(1))
    features[6] += 5.0
    z = outlier_scores(features)
    assert int(z.argmax()) == 6 and z[6] > 10 and (z[torch.arange(9) != 6] < 4).all()
    assert torch.equal(outlier_scores(features[:2]), torch.zeros(2))


@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
def test_disagreement_matches_the_one_input_loop(memory_format):
    torch.manual_seed(0)
    model = build_model("convnet")
    reference = build_model("convnet").state_dict()
    states = [reference, *(build_model("convnet").state_dict() for _ in range(2))]
    starts = torch.rand(3, 1, 32, 32)
    fast = disagreement(
        model,
        reference,
        states,
        starts,
        (0.0, 1.0),
        steps=5,
        memory_format=memory_format,
    )
    slow = disagreement_loop(model, reference, states, starts, (0.0, 1.0), steps=5)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-6)
    # the reference against itself: 0 up to the grouped convolution's rounding
    assert abs(float(fast[0])) < 1e-6 and slow[0] == 0.0
    # the first generation's per-client engine agrees as well
    old = disagreement_per_client(model, reference, states, starts, (0.0, 1.0), steps=5)
    torch.testing.assert_close(fast, old, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["convnet", "resnet18"])
def test_stacked_forward_is_each_client_on_its_own_inputs(name):
    # BatchNorm's running statistics are stacked and used per client (eval mode)
    torch.manual_seed(0)
    model = build_model(name).eval()
    states = []
    for _ in range(3):
        net = build_model(name)
        for _, buf in net.named_buffers():
            if buf.is_floating_point():
                buf.uniform_(0.5, 1.5)
        states.append(net.state_dict())
    x = torch.rand(3, 2, 1, 32, 32)
    got = stacked_forward(model, states, torch.device("cpu"))(x)
    for i, state in enumerate(states):
        model.load_state_dict(state)
        with torch.no_grad():
            torch.testing.assert_close(got[i], model(x[i]), rtol=1e-4, atol=1e-5)


def test_confidence_maps_z_cut_to_one_half():
    z = torch.tensor([-3.0, 0.0, 4.0, 8.0, 20.0])
    assert confidence_from_z(z, 4.0).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


# --------------------------------------------------------------------------- levers
def test_cap_counts_caps_at_a_multiple_of_the_median():
    counts = {"0": 60000.0, "1": 3000.0, "2": 3100.0, "3": 2900.0}
    assert cap_counts(counts, 2.0) == {
        "0": 6100.0,  # 2 x median(3050)
        "1": 3000.0,
        "2": 3100.0,
        "3": 2900.0,
    }
    assert cap_counts(counts, None) == counts


def test_remember_decays_and_keeps_absent_clients():
    after = remember({"0": 1.0, "5": 0.5}, {"0": 0.1, "1": 0.3}, decay=0.8)
    assert after == {"0": 0.8, "1": 0.3, "5": 0.4}


def robust(**params) -> Defense:
    """The robust FedDefender with ``params``, scoring in-process."""
    return build("feddefender_robust", CTX, remote=False, **params)


def _screen(
    defense: Defense, server_round: int, models, examples=None, global_model=None
) -> Verdict:
    """The defence's verdict on ``models`` around ``global_model`` (default:
    client 1's model), after checking the server can apply it."""
    rnd = make_round(
        models,
        examples,
        global_model=models[1] if global_model is None else global_model,
        server_round=server_round,
    )
    verdict, arrays = judge(defense, rnd)
    assert (arrays is None) == (not any(w > 0 for w in verdict.weights.values()))
    return verdict


@pytest.mark.parametrize("fingerprint", ["continuous", "disagreement"])
def test_odd_client_is_flagged_and_remembered(fingerprint):
    # hand-made models do not aim at one class: the gate is tested on its own
    defense = robust(fingerprint=fingerprint, steps=5, aim_gate=0.0)
    first = _screen(defense, 1, perturbed(6, odd_one=4))
    assert first.flagged == ["4"] and first.scores["4"] == 1.0
    assert all(first.weights[c] > 0 for c in "01235")
    assert first.weights["4"] == 0.0
    # Next round client 4 looks like the others; memory keeps it out (1.0 x 0.75).
    second = _screen(defense, 2, perturbed(6, odd_one=None, seed=1))
    assert second.flagged == ["4"] and second.scores["4"] == pytest.approx(0.75)
    assert second.weights["4"] == 0.0
    # Without memory the same round lets it back in.
    forgetful = robust(fingerprint=fingerprint, steps=5, memory_decay=0.0, aim_gate=0.0)
    _screen(forgetful, 1, perturbed(6, odd_one=4))
    again = _screen(forgetful, 2, perturbed(6, odd_one=None, seed=1))
    assert again.flagged == [] and again.weights["4"] > 0


def test_memory_survives_a_resume():
    defense = robust(fingerprint="continuous")
    _screen(defense, 1, perturbed(6, odd_one=2))
    resumed = robust(fingerprint="continuous")
    resumed.load_state_dict(copy.deepcopy(defense.state_dict()))
    verdict = _screen(resumed, 2, perturbed(6, odd_one=None, seed=1))
    assert verdict.flagged == ["2"]


def _as_nodes(rnd, nodes: dict[str, int], cids: dict[int, str] | None = None):
    """``rnd`` as the server builds it: each update delivered by the node
    ``nodes[cid]``; ``cids`` relabels what partition a node's update carries."""
    updates = []
    for u in rnd.updates:
        node = nodes[u.cid]
        cid = (cids or {}).get(node, u.cid)
        updates.append(dataclasses.replace(u, cid=cid, node_id=node))
    updates.sort(key=lambda u: int(u.cid))  # the server's partition order
    return dataclasses.replace(rnd, updates=updates)


def test_suspicion_follows_the_node_not_the_partition_it_claims():
    defense = robust(fingerprint="continuous", steps=5)
    nodes = {str(i): 1000 + i for i in range(6)}
    models = perturbed(6, odd_one=4)
    first = defense.verdict(
        _as_nodes(make_round(models, global_model=models[1]), nodes)
    )
    assert first.flagged == ["4"]
    # Next round node 1004 (the odd one) answers as partition 2 and node 1002 as
    # partition 4: the suspicion stays with node 1004, whatever it calls itself.
    calm = perturbed(6, odd_one=None, seed=1)
    swapped = _as_nodes(
        make_round(calm, global_model=calm[1], server_round=2),
        nodes,
        cids={1004: "2", 1002: "4"},
    )
    second = defense.verdict(swapped)
    assert second.flagged == ["2"] and second.weights["2"] == 0.0
    assert second.scores["4"] < 0.5 and second.weights["4"] > 0
    # A resumed run has new node ids: they take over their partition's suspicion.
    resumed = robust(fingerprint="continuous", steps=5)
    resumed.load_state_dict(copy.deepcopy(defense.state_dict()))
    fresh = {str(i): 2000 + i for i in range(6)}
    third = resumed.verdict(
        _as_nodes(make_round(calm, global_model=calm[1], server_round=3), fresh)
    )
    assert third.flagged == ["2"]


def test_boosted_count_is_capped_before_weighting():
    models = perturbed(5, odd_one=None)
    defense = robust(fingerprint="continuous", memory_decay=0.0, median_rounds=0)
    verdict = _screen(defense, 1, models, [2000.0, 100.0, 100.0, 100.0, 100.0])
    assert verdict.details["capped"] == ["0"]
    assert verdict.weights["0"] <= 200.0 and verdict.weights["1"] <= 100.0
    # FedAvg's weights: the capped count (2 x the median 100) times 1 - score
    capped = {"0": 200.0, "1": 100.0, "2": 100.0, "3": 100.0, "4": 100.0}
    assert verdict.weights == pytest.approx(
        {
            c: 0.0 if c in verdict.flagged else n * (1.0 - verdict.scores[c])
            for c, n in capped.items()
        }
    )


def test_boolean_fingerprint_is_the_faithful_method():
    models = perturbed(6, odd_one=3)
    boolean = robust(
        fingerprint="boolean",
        inputs="noise",
        num_inputs=10,
        memory_decay=0.0,
        cap_examples=None,
    )
    faithful = build("feddefender", CTX, remote=False).verdict(make_round(models))
    assert _screen(boolean, 1, models).flagged == faithful.flagged == ["3"]


def test_bad_lever_names_are_refused():
    with pytest.raises(ConfigError, match="fingerprint='bool'"):
        robust(fingerprint="bool")
    with pytest.raises(ConfigError, match="inputs='images'"):
        robust(inputs="images")


# ------------------------------------------------------- a real backdoor, trained here
@pytest.mark.slow
def test_trained_backdoor_stands_out_and_benign_clients_do_not(data_root):
    """Nine benign MNIST clients and one that trains with the 12 px trigger, all
    from the same briefly trained global model: the attacker's z-score is far
    above ``z_cut`` and no benign client reaches it."""
    torch.set_num_threads(1)
    data = load_dataset("mnist", data_root, max_train_samples=2400, hub=False)
    x, y = torch.from_numpy(data.train_x), torch.from_numpy(data.train_y)
    torch.manual_seed(0)
    model = build_model("convnet")
    generator = torch.Generator().manual_seed(0)
    kwargs = dict(epochs=2, lr=0.01, batch_size=32, optimizer="sgd")
    global_state, _ = train_client(
        model, model.state_dict(), x[:600], y[:600], generator=generator, **kwargs
    )
    attack = Backdoor(
        malicious_clients=[0], target_label=9, trigger_size=12, poison_fraction=0.5
    )
    states = []
    for cid in range(10):
        cx, cy = (
            x[600 + 300 * cid : 900 + 300 * cid],
            y[600 + 300 * cid : 900 + 300 * cid],
        )
        if cid == 0:
            cx, cy = attack.poison(0, cx, cy, float(cx.max()), generator)
        state, _ = train_client(
            model, global_state, cx, cy, generator=generator, **kwargs
        )
        states.append(state)
    bounds = ((0 - data.mean) / data.std, (1 - data.mean) / data.std)
    starts = torch.rand((20, 1, 32, 32), generator=generator) * (bounds[1] - bounds[0])
    kl = disagreement(model, global_state, states, starts + bounds[0], bounds, steps=15)
    z = robust_z(kl)
    assert z[0] > 4.0, z
    assert (z[1:] < 4.0).all(), z
    assert np.argmax(kl.numpy()) == 0


@pytest.mark.slow
def test_ray_actor_gives_the_in_process_result(ray_tmp):
    models = perturbed(5, odd_one=2)
    expected = _screen(robust(steps=5), 1, models).scores
    ray.init(num_cpus=1, include_dashboard=False, _temp_dir=ray_tmp)
    try:
        remote = build("feddefender_robust", CTX, steps=5, remote=True)
        got = _screen(remote, 1, models).scores
    finally:
        ray.shutdown()
    assert got == pytest.approx(expected, abs=1e-6)


def test_robust_z_is_signed():
    z = robust_z(torch.tensor([0.0, 1.0, 1.1, 0.9, 1.0, 9.0]))
    assert z[5] > 10 and z[0] < -5 and z[1] == 0.0
    assert torch.equal(robust_z(torch.tensor([1.0, 5.0])), torch.zeros(2))


def test_round_one_compares_clients_with_their_own_median():
    """In round 1 the global model is the random initial one: every client is far
    from it, so ``auto`` (and ``median``, ``mean``) compare with the clients'
    coordinate-wise median (or average)."""
    models = perturbed(6, odd_one=4)
    torch.manual_seed(99)
    initial = {k: v.numpy() for k, v in build_model("convnet").state_dict().items()}

    def round_one(reference: str) -> list[str]:
        defense = robust(reference=reference, steps=5, aim_gate=0.0)
        return _screen(defense, 1, models, global_model=initial).flagged

    assert round_one("auto") == round_one("median") == round_one("mean") == ["4"]
    defense = robust()
    assert defense.job_for_round(1, 6).reference == "median"
    assert defense.job_for_round(2, 6).reference == "global"


def test_mean_state_keeps_dtypes():
    states = [
        {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(2)},
        {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(4)},
    ]
    mean = mean_state(states)
    assert mean["w"].tolist() == [2.0, 4.0] and mean["n"].dtype == torch.int64


def test_median_state_is_the_per_coordinate_median_and_ignores_a_scaled_client():
    states = [
        {"w": torch.tensor([1.0, 9.0]), "n": torch.tensor(2)},
        {"w": torch.tensor([2.0, 7.0]), "n": torch.tensor(4)},
        {"w": torch.tensor([3.0, 8.0]), "n": torch.tensor(3)},
        {"w": torch.tensor([400.0, -500.0]), "n": torch.tensor(3)},  # scaled x100
    ]
    median = median_state(states)
    plain = [sorted(float(s["w"][i]) for s in states)[1] for i in range(2)]
    assert median["w"].tolist() == plain == [2.0, 7.0]  # the lower middle value
    assert median["n"].item() == 3 and median["n"].dtype == torch.int64
    assert mean_state(states)["w"][0] > 100  # the average follows the scaled one


def test_universal_search_matches_the_per_client_oracle():
    torch.manual_seed(0)
    model = build_model("convnet")
    reference = build_model("convnet").state_dict()
    states = [reference, *(build_model("convnet").state_dict() for _ in range(2))]
    starts = torch.rand(4, 1, 32, 32)
    args = (model, reference, states, starts, (0.0, 1.0))
    fast = disagreement(*args, steps=5, universal=True)
    slow = disagreement_per_client(*args, steps=5, universal=True)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-6)
    assert abs(float(fast[0])) < 1e-6
    # one shared perturbation is a weaker search than one per input
    assert (fast[1:] <= disagreement(*args, steps=5)[1:] + 1e-6).all()


def test_median_rounds_aggregate_the_unflagged_by_their_median():
    models = perturbed(6, odd_one=4)
    defense = robust(
        fingerprint="continuous", steps=5, median_rounds=1, median="coordinate"
    )
    first = _screen(defense, 1, models)
    assert first.flagged == ["4"] and first.details["aggregation"] == "median"
    kept = [m for i, m in enumerate(models) if i != 4]
    for key, got in first.model.items():
        want = np.median(np.stack([m[key] for m in kept]), axis=0)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    assert first.weights["4"] == 0.0
    assert sum(first.weights.values()) == pytest.approx(1.0)
    # from round 2 on, FedAvg of the unflagged again
    second = _screen(defense, 2, perturbed(6, odd_one=None, seed=1))
    assert second.model is None and "aggregation" not in second.details


def test_geometric_median_round_is_the_point_of_least_summed_distance():
    models = perturbed(6, odd_one=4)
    # theta 1: nobody is excluded, so the odd model is in the median's input
    defense = robust(fingerprint="continuous", steps=5, median_rounds=1, theta=1.0)
    first = _screen(defense, 1, models)
    assert first.flagged == [] and first.details["aggregation"] == "geometric_median"
    shares = np.array([first.weights[str(c)] for c in range(6)])
    assert shares.sum() == pytest.approx(1.0) and shares[4] < 0.05
    keys = [k for k, v in models[0].items() if v.dtype.kind == "f"]
    points = np.stack([np.concatenate([m[k].ravel() for k in keys]) for m in models])
    point = shares @ points

    def summed_distance(x):
        return np.linalg.norm(points - x, axis=1).sum()

    for other in [*points, points.mean(axis=0), np.median(points, axis=0)]:
        assert summed_distance(point) <= summed_distance(other) * (1 + 1e-6)


def test_aimed_is_the_largest_one_class_gain():
    ref = torch.full((2, 3, 4), 0.25)  # the reference is unsure everywhere
    client = torch.zeros(2, 3, 4)
    client[0, :, 2] = 1.0  # client 0 sends all three inputs to class 2
    client[1, 0, 0] = client[1, 1, 1] = client[1, 2, 3] = 1.0  # client 1 scatters
    got = aimed(client, ref)
    torch.testing.assert_close(got, torch.tensor([0.75, 1 / 3 - 0.25]))


def test_disagreement_with_aim_returns_the_same_kl():
    torch.manual_seed(0)
    model = build_model("convnet")
    reference = build_model("convnet").state_dict()
    states = [build_model("convnet").state_dict() for _ in range(2)]
    args = (model, reference, states, torch.rand(3, 1, 32, 32), (0.0, 1.0))
    kl, aim = disagreement(*args, steps=3, universal=True, aim=True)
    torch.testing.assert_close(kl, disagreement(*args, steps=3, universal=True))
    assert aim.shape == (2,) and ((aim >= -1) & (aim <= 1)).all()


def test_aim_gate_only_lets_a_search_aimed_at_one_class_flag():
    models = perturbed(6, odd_one=4)
    plain = _screen(
        robust(steps=5, universal=True, memory_decay=0.0, aim_gate=0.0), 1, models
    )
    assert plain.flagged == ["4"]
    # no class can gain more than all its probability: the gate closes
    gated = _screen(
        robust(steps=5, universal=True, memory_decay=0.0, aim_gate=1.0), 1, models
    )
    assert gated.flagged == [] and gated.scores["4"] == 0.0
    assert gated.details["statistic"]["4"] == pytest.approx(
        plain.details["statistic"]["4"]
    )


@pytest.mark.parametrize("universal", [False, True])
def test_both_engines_give_the_same_kl_and_aim(universal):
    torch.manual_seed(0)
    model = build_model("convnet")
    reference = build_model("convnet").state_dict()
    states = [build_model("convnet").state_dict() for _ in range(3)]
    args = (model, reference, states, torch.rand(4, 1, 32, 32), (0.0, 1.0))
    fast = disagreement(*args, steps=4, universal=universal, aim=True)
    slow = disagreement_per_client(*args, steps=4, universal=universal, aim=True)
    for got, want in zip(fast, slow, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_the_job_runs_the_reference_in_the_models_layout():
    # the model config's memory_format reaches the batched search, whose
    # channels_last reference equals the contiguous one up to rounding; the
    # per-client oracle engine keeps the default layout
    context = dataclasses.replace(CTX, memory_format="channels_last")
    job = RobustFedDefender(RobustParams(remote=False), context).job_for_round(2, 4)
    assert job.memory_format == "channels_last"
    plain = RobustFedDefender(RobustParams(remote=False), CTX).job_for_round(2, 4)
    assert plain.memory_format == "contiguous"
    torch.manual_seed(0)
    model = build_model("convnet")
    global_state = model.state_dict()
    states = [build_model("convnet").state_dict() for _ in range(4)]
    fast, slow = (
        run_robust_job(job, global_state, states),
        run_robust_job(plain, global_state, states),
    )
    torch.testing.assert_close(fast.kl, slow.kl, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fast.aim, slow.aim, rtol=1e-4, atol=1e-6)
