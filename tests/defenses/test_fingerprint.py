"""The FedDefender kernel: hand-worked cases, then the engine against the oracle."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from fingerprint_views import (
    fingerprint_batched,
    leave_one_out_fast,
    streaming_confidence,
)
from torch import Tensor, nn

from fedlight.defenses import fingerprint_oracle as oracle
from fedlight.defenses.fingerprint import (
    _Engine,
    inference_guided_inputs,
    score_clients,
    synthetic_inputs,
)
from fedlight.models import build_model

SHAPE = (1, 32, 32)
MEAN, STD = 0.1307, 0.3081
NA_T = 0.01  # off zero, so exact zeros (bias-free convs on dead regions) are not ties
HEAVY = {"resnet50", "densenet121", "vgg16"}
ARCHS = [
    pytest.param(name, marks=pytest.mark.slow) if name in HEAVY else name
    for name in ("convnet", "resnet18", "resnet34", "resnet50", "densenet121", "vgg16")
]


def rows(*bits: str) -> Tensor:
    """'1101' strings -> bool (clients, neurons)."""
    return torch.tensor([[c == "1" for c in b] for b in bits])


def both(active: Tensor, num_attackers: int) -> list[int]:
    """The oracle's suspects, once the engine's votes are checked against them."""
    want = oracle.leave_one_out(active, num_attackers)
    assert leave_one_out_fast(active, num_attackers) == want
    flagged = torch.zeros(active.shape[0])
    flagged[want] = 1.0
    for chunk in (1, 2):
        got = streaming_confidence(active.unsqueeze(1), num_attackers, chunk)
        assert torch.equal(got, flagged)
    return want


# ------------------------------------------------------------------ hand-worked
def test_one_attacker_is_the_client_whose_absence_shares_most():
    active = rows("111001", "111000", "111000", "001110")
    # without client 3 the rest share neurons 0,1,2 (3); any other subset shares 1
    assert both(active, 1) == [3]


def test_two_attackers_removes_and_recounts():
    active = rows("111100", "111100", "111001", "001110")
    # round 1: without 3 -> {0,1,2} share 3; without 2 -> 2; without 0 or 1 -> 1
    # round 2 on {0,1,2}: without 2 -> {0,1} share 4; otherwise 3
    assert both(active, 2) == [3, 2]


def test_tie_abstains_for_this_and_later_repetitions():
    # each client has one neuron the other two have: every pair shares one
    assert both(rows("011", "101", "110"), 1) == []
    assert both(rows("011", "101", "110"), 3) == []
    # identical clients do not discriminate either
    assert both(rows("1010", "1010", "1010"), 1) == []
    # first repetition flags 3, then {0,1,2} tie: stop there
    assert both(rows("111001", "111000", "111000", "001110"), 2) == [3]


def test_two_clients_and_fewer():
    # N=2: the subsets are {1} (1 neuron on) and {0} (2 on): client 1 is left out
    assert both(rows("110", "100"), 1) == [1]
    assert both(rows("110", "100"), 2) == [1]  # one client left: no more votes
    assert both(rows("110", "110"), 1) == []
    assert both(rows("110"), 1) == []
    assert both(torch.zeros((0, 3), dtype=torch.bool), 1) == []
    assert both(rows("110", "100", "000"), 0) == []


def test_suspect_confidence_counts_inputs():
    flagged_3 = rows("111001", "111000", "111000", "001110")
    tie = rows("011100", "101100", "110100", "111000")
    active = torch.stack([flagged_3, flagged_3, tie], dim=1)  # (clients, inputs, n)
    assert oracle.confidence(active, 1).tolist() == pytest.approx([0, 0, 0, 2 / 3])
    for chunk in (1, 3):
        assert torch.equal(
            streaming_confidence(active, 1, chunk), oracle.confidence(active, 1)
        )


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        leave_one_out_fast(torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError):
        oracle.leave_one_out(rows("1", "0"), -1)
    with pytest.raises(ValueError):
        oracle.leave_one_out(torch.zeros(3, dtype=torch.bool))


# ------------------------------------------------------------ random vs oracle
def random_cases(count: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(count):
        clients = int(torch.randint(2, 12, (1,), generator=g))
        neurons = int(torch.randint(1, 40, (1,), generator=g))
        density = float(torch.tensor([0.1, 0.5, 0.8, 0.95])[torch.randint(4, (1,))])
        base = torch.rand(neurons, generator=g) < density
        flips = torch.rand(clients, neurons, generator=g) < 0.15  # near-copies
        yield base ^ flips, int(torch.randint(0, 5, (1,), generator=g))


def test_fast_equals_oracle_on_random_matrices():
    abstained = voted = 0
    for active, attackers in random_cases(400):
        suspects = both(active, attackers)
        voted += len(suspects)
        abstained += len(suspects) < min(attackers, active.shape[0] - 1)
    assert voted > 100 and abstained > 20  # both outcomes were exercised


@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_streaming_equals_oracle_on_random_tensors(chunk):
    g = torch.Generator().manual_seed(chunk)
    for _ in range(60):
        clients = int(torch.randint(2, 10, (1,), generator=g))
        inputs, neurons = 4, int(torch.randint(1, 30, (1,), generator=g))
        base = torch.rand(inputs, neurons, generator=g) < 0.6
        active = base ^ (torch.rand(clients, inputs, neurons, generator=g) < 0.15)
        for attackers in (1, 2, 4):
            got = streaming_confidence(active, attackers, chunk)
            want = oracle.confidence(active, attackers)
            assert torch.equal(got, want)


# ------------------------------------------------------------- model fixtures
def clients_of(
    name: str, clients: int, seed: int = 0, dtype: torch.dtype = torch.float64
) -> tuple[nn.Module, list[dict[str, Tensor]]]:
    """A model with non-trivial BatchNorm buffers and ``clients`` perturbed states.

    Every floating tensor is perturbed by about 2% of its spread, with noise sliced
    from one shared bank at a per-client offset (cheap, yet different per client).
    Tensors over 10M elements (vgg16's classifier) are shared, to save memory.
    """
    torch.manual_seed(seed)
    model = build_model(name).to(dtype).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    base = model.state_dict()
    small = {
        k: v for k, v in base.items() if v.is_floating_point() and v.numel() <= 1e7
    }
    bank = torch.randn(max(v.numel() for v in small.values()) + 97 * clients)
    bank = bank.to(dtype)
    spread = {k: float(v.std()) if v.numel() > 1 else 1.0 for k, v in small.items()}
    states = []
    for i in range(clients):
        state = dict(base)
        for key, value in small.items():
            noise = bank[97 * i : 97 * i + value.numel()].view_as(value)
            if key.endswith("running_var"):
                state[key] = value * torch.exp(0.05 * noise)
            else:
                state[key] = value + 0.02 * spread[key] * noise
        states.append(state)
    return model, states


def margin_is_clear(model: nn.Module, states, inputs: Tensor, eps: float) -> bool:
    """No Conv2d/Linear output lies within ``eps`` of the threshold."""
    below = fingerprint_batched(model, states, inputs, NA_T - eps, vectorize=False)
    above = fingerprint_batched(model, states, inputs, NA_T + eps, vectorize=False)
    return torch.equal(below, above)


def raw_loop(model: nn.Module, states, inputs: Tensor) -> Tensor:
    """Float Conv2d/Linear outputs, per client and input: to check the margins."""
    values: list[Tensor] = []

    def record(_m: nn.Module, _a: object, output: Tensor) -> None:
        values.append(output.flatten())

    for state in states:
        client = build_like(model, state)
        hooks = [
            m.register_forward_hook(record)
            for m in client.modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))
        ]
        with torch.no_grad():
            for x in inputs:
                client(x.unsqueeze(0).to(next(client.parameters()).dtype))
        for h in hooks:
            h.remove()
    return torch.cat(values)


def build_like(model: nn.Module, state) -> nn.Module:
    client = copy.deepcopy(model)
    client.load_state_dict(state)
    return client.eval()


# ---------------------------------------------------------------- fingerprints
@pytest.mark.parametrize("name", ARCHS)
def test_batched_fingerprints_equal_oracle_for_every_architecture(name):
    model, states = clients_of(name, clients=3)
    inputs = synthetic_inputs(2, SHAPE, MEAN, STD, seed=1)
    assert margin_is_clear(model, states, inputs, 1e-9)  # float64 agrees far below
    want = oracle.fingerprints(model, states, inputs, NA_T)
    assert want.dtype == torch.bool and want.shape[:2] == (3, 2)
    assert 0.05 < want.float().mean() < 0.95
    for vectorize in (False, True):
        got = fingerprint_batched(model, states, inputs, NA_T, vectorize=vectorize)
        assert torch.equal(got, want), f"{name} vectorize={vectorize}"


@pytest.mark.parametrize("name", ["convnet", "resnet18"])
def test_float32_differs_only_at_the_threshold(name):
    model, states = clients_of(name, clients=3, dtype=torch.float32)
    inputs = synthetic_inputs(3, SHAPE, MEAN, STD, seed=2)
    raw = raw_loop(model, states, inputs).view(3, 3, -1)
    want = oracle.fingerprints(model, states, inputs, NA_T)
    for vectorize in (False, True):
        got = fingerprint_batched(model, states, inputs, NA_T, vectorize=vectorize)
        assert ((raw[got != want] - NA_T).abs() < 1e-4).all()
        assert (got != want).float().mean() < 1e-4


@pytest.mark.parametrize("vectorize", [False, True])
def test_chunking_keeps_the_result(vectorize):
    model, states = clients_of("resnet18", clients=5)
    inputs = synthetic_inputs(2, SHAPE, MEAN, STD, seed=3)
    tiny = _Engine(model, inputs, NA_T, max_memory_mb=1e-3, vectorize=vectorize)
    roomy = _Engine(model, inputs, NA_T, max_memory_mb=4096, vectorize=vectorize)
    assert tiny.chunk_size == 1 and roomy.chunk_size >= 5
    whole = fingerprint_batched(model, states, inputs, NA_T, 4096, vectorize=vectorize)
    chunked = fingerprint_batched(
        model, states, inputs, NA_T, 1e-3, vectorize=vectorize
    )
    assert torch.equal(chunked, whole)


def test_chunk_size_follows_the_budget():
    model, _ = clients_of("resnet18", clients=1, dtype=torch.float32)
    inputs = synthetic_inputs(10, SHAPE, MEAN, STD, seed=0)
    weights_mb = sum(p.numel() for p in model.state_dict().values()) * 4 / 2**20
    engine = _Engine(model, inputs, NA_T, max_memory_mb=1024, vectorize=True)
    assert 1 < engine.chunk_size <= 1024 / weights_mb  # each client's weights fit


def test_engine_rejects_mismatched_state():
    model, states = clients_of("convnet", clients=2)
    inputs = synthetic_inputs(1, SHAPE, MEAN, STD, seed=0)
    broken = dict(states[0])
    broken.pop(next(iter(broken)))
    for vectorize in (False, True):
        with pytest.raises(KeyError, match="missing"):
            fingerprint_batched(
                model, [broken, states[1]], inputs, NA_T, vectorize=vectorize
            )


def test_engines_leave_the_callers_model_alone():
    model, states = clients_of("resnet18", clients=2)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inputs = synthetic_inputs(1, SHAPE, MEAN, STD, seed=0)
    oracle.fingerprints(model, states, inputs, NA_T)
    fingerprint_batched(model, states, inputs, NA_T)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# -------------------------------------------------------------- score_clients
def with_outlier(name: str, clients: int, outliers: int) -> tuple[nn.Module, list]:
    """``clients`` near-copies, the last ``outliers`` of them freshly initialised."""
    model, states = clients_of(name, clients)
    for i in range(clients - outliers, clients):
        torch.manual_seed(100 + i)
        fresh = build_model(name).to(torch.float64).state_dict()
        states[i] = fresh
    return model, states


@pytest.mark.parametrize(
    ("name", "attackers", "engines"),
    [
        ("convnet", (1, 2, 3), list(itertools.product((False, True), (1e-3, 64.0)))),
        ("resnet18", (1, 2), [(False, 1e-3), (False, 64.0), (True, 64.0)]),
    ],
)
def test_score_clients_batched_equals_loop(name, attackers, engines):
    # (vectorize, max_memory_mb): 1e-3 MB forces one client per chunk and rows
    # recomputed for removals; 64 MB keeps the bit-packed matrix
    model, states = with_outlier(name, clients=5, outliers=2)
    inputs = synthetic_inputs(3, SHAPE, MEAN, STD, seed=4)
    active = oracle.fingerprints(model, states, inputs, NA_T)
    for a in attackers:
        want = score_clients(model, states, inputs, NA_T, a, engine="loop")
        assert torch.equal(want, oracle.confidence(active, a))
        assert want.sum() > 0
        for vectorize, budget in engines:
            got = score_clients(
                model, states, inputs, NA_T, a, "batched", budget, vectorize=vectorize
            )
            assert torch.equal(got, want), (a, vectorize, budget)
    # the two freshly initialised clients are the ones found, on every input
    assert score_clients(model, states, inputs, NA_T, 2).tolist() == [0, 0, 0, 1, 1]


def test_vmapped_rows_are_recomputed_by_whole_chunk():
    model, states = clients_of("convnet", clients=5)
    inputs = synthetic_inputs(2, SHAPE, MEAN, STD, seed=0)
    engine = _Engine(model, inputs, NA_T, vectorize=True)
    engine.chunk_size = 2
    active = torch.cat([a for _, a, _ in engine.chunks(states)])
    rows = engine.rows(states, {1, 2, 4})
    assert sorted(rows) == [1, 2, 4]
    assert all(torch.equal(rows[c], active[c]) for c in rows)


def test_score_clients_degenerate_rounds():
    model, states = clients_of("convnet", clients=3)
    inputs = synthetic_inputs(2, SHAPE, MEAN, STD, seed=0)
    for engine in ("loop", "batched"):
        assert score_clients(
            model, states[:1], inputs, NA_T, engine=engine
        ).tolist() == [0]
        assert score_clients(model, states, inputs, NA_T, 0, engine=engine).sum() == 0
    with pytest.raises(ValueError, match="engine"):
        score_clients(model, states, inputs, NA_T, engine="fast")


# ------------------------------------------------------------------- inputs
def test_synthetic_inputs_are_distinct_seeded_and_normalised():
    x = synthetic_inputs(10, SHAPE, MEAN, STD, seed=7)
    assert x.shape == (10, *SHAPE)
    flat = x.flatten(1)
    assert all(
        not torch.equal(flat[i], flat[j])
        for i, j in itertools.combinations(range(10), 2)
    )
    assert torch.equal(x, synthetic_inputs(10, SHAPE, MEAN, STD, seed=7))
    assert not torch.equal(x, synthetic_inputs(10, SHAPE, MEAN, STD, seed=8))
    pixels = x * STD + MEAN
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    assert pixels.mean().item() == pytest.approx(0.5, abs=0.01)
    # a prefix is the same draw: asking for fewer inputs does not change them
    assert torch.equal(synthetic_inputs(3, SHAPE, MEAN, STD, seed=7), x[:3])


class Pixels(nn.Module):
    """Linear classifier on the four pixels of a 1x2x2 input."""

    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.flatten(x))


def pixel_clients() -> tuple[nn.Module, list[dict[str, Tensor]]]:
    """Clients 0-1 predict argmax(pixels 0..2); clients 2-4 always predict 2."""
    argmax = {"fc.weight": torch.eye(3, 4), "fc.bias": torch.zeros(3)}
    constant = {
        "fc.weight": torch.zeros(3, 4),
        "fc.bias": torch.tensor([0.0, 0.0, 9.0]),
    }
    return Pixels(), [argmax, dict(argmax), constant, dict(constant), dict(constant)]


def test_inference_guided_inputs_respect_eta():
    model, states = pixel_clients()
    args = dict(num_inputs=3, shape=(1, 2, 2), mean=0.5, std=0.25, seed=3, pool_size=40)
    pool = synthetic_inputs(40, (1, 2, 2), 0.5, 0.25, 3)
    first_two = pool.flatten(1)[:, :3].argmax(1)  # what clients 0-1 predict

    # eta=3: only the constant group reaches 3 votes; it covers class 2 on the first
    # candidate and no later candidate qualifies, so the rest is filled in order
    assert torch.equal(inference_guided_inputs(model, states, eta=3, **args), pool[:3])
    # eta=6 > clients: nothing qualifies at all
    assert torch.equal(inference_guided_inputs(model, states, eta=6, **args), pool[:3])

    # eta=2: candidate 0 covers class 2 (most votes); then the first candidates on
    # which clients 0-1 predict class 0 and class 1 are kept, in pool order
    want, covered = [0], {2}
    for j in range(1, 40):
        c = int(first_two[j])
        if c not in covered and len(want) < 3:
            want.append(j)
            covered.add(c)
    assert len(want) == 3 and want != [0, 1, 2]
    got = inference_guided_inputs(model, states, eta=2, **args)
    assert torch.equal(got, pool[want])
    assert torch.equal(got, inference_guided_inputs(model, states, eta=2, **args))


def test_inference_guided_inputs_on_a_real_model():
    model, states = clients_of("convnet", clients=4, dtype=torch.float32)
    kwargs = dict(num_inputs=5, shape=SHAPE, mean=MEAN, std=STD, eta=2, pool_size=50)
    a = inference_guided_inputs(model, states, seed=0, **kwargs)
    assert a.shape == (5, *SHAPE)
    assert torch.equal(a, inference_guided_inputs(model, states, seed=0, **kwargs))
    assert not torch.equal(a, inference_guided_inputs(model, states, seed=1, **kwargs))
    with pytest.raises(ValueError):
        inference_guided_inputs(model, states, seed=0, **{**kwargs, "pool_size": 2})


# --------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["convnet", "resnet18"])
def test_cuda_matches_cpu(name):
    model, states = with_outlier(name, clients=5, outliers=1)
    inputs = synthetic_inputs(3, SHAPE, MEAN, STD, seed=6)
    want = oracle.fingerprints(model, states, inputs, NA_T)
    for vectorize in (False, True):
        got = fingerprint_batched(
            model, states, inputs, NA_T, device="cuda", vectorize=vectorize
        )
        assert torch.equal(got, want)
        for attackers in (1, 2):
            assert torch.equal(
                score_clients(
                    model,
                    states,
                    inputs,
                    NA_T,
                    attackers,
                    device="cuda",
                    vectorize=vectorize,
                ),
                score_clients(model, states, inputs, NA_T, attackers, engine="loop"),
            )
