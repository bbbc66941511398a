"""The robust FedDefender's kernel: better inputs, continuous fingerprints, robust
outlier scores.

Faithful FedDefender thresholds every neuron at ``na_t`` and lets leave-one-out
vote on the booleans. On full Fashion-MNIST that fails from round 2 even while the
global model is clean: once the clients share a starting point their boolean
fingerprints agree almost everywhere, and whichever client differs in the few
borderline neurons is voted out, benign or not. Here a client's fingerprint is the
real-valued output of every ``nn.Conv2d`` (averaged over space, one value per
channel) and ``nn.Linear`` on K shared inputs. Per coordinate the clients'
median and MAD say what "normal" is; a client's score is its mean robust
deviation over all coordinates; and its outlier statistic is that score's robust
z-score among the round's clients. Median and MAD tolerate up to half the clients
being attackers, where one boolean intersection breaks at the first tie.

Inputs can be noise (as the paper), or *class impressions* of the global model
(inputs optimised so that the server's current model predicts each class in
turn): they drive the neurons the task uses, which is where a backdoored update
moves the model.

Each vectorised function has a plain per-client, per-input version it is tested
against. Pure torch: no flwr, hydra, ray or wandb imports.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from fedlight.defenses.fingerprint import FINGERPRINT_MODULES
from fedlight.models.kernels import batch_layout, to_layout

# A robust deviation is capped here so that one wild coordinate (a MAD near 0)
# cannot decide a client's score alone.
MAX_DEVIATION = 10.0
# The MAD of a normal sample is 0.6745 sigma; scaled by this it estimates sigma.
MAD_TO_SIGMA = 1.4826


def class_impressions(
    model: nn.Module,
    state: Mapping[str, Tensor],
    num_inputs: int,
    shape: tuple[int, ...],
    mean: float,
    std: float,
    seed: int,
    *,
    num_classes: int,
    steps: int = 30,
    lr: float = 0.1,
    device: str | torch.device = "cpu",
) -> Tensor:
    """``num_inputs`` inputs the global model ``state`` assigns to class
    ``i % num_classes``, found by Adam on the cross-entropy from seeded noise.

    Pixels stay in the data's range ([0, 1] before normalisation). Returns
    ``(num_inputs, *shape)`` on the CPU.
    """
    net = copy.deepcopy(model).to(device)
    net.load_state_dict(state)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.rand((num_inputs, *shape), generator=generator)
    x = ((pixels - mean) / std).to(device).requires_grad_(True)
    targets = (torch.arange(num_inputs) % num_classes).to(device)
    low, high = (0.0 - mean) / std, (1.0 - mean) / std
    opt = torch.optim.Adam([x], lr=lr)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(net(x), targets)
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(low, high)
    return x.detach().cpu()


def _features(output: Tensor) -> Tensor:
    """One module's output as features per input: conv maps averaged over space."""
    if output.dim() == 4:  # (K, channels, H, W)
        return output.mean(dim=(2, 3))
    return output.flatten(1)


class _Recorder:
    """Forward hooks that keep every Conv2d/Linear output of a module."""

    def __init__(self, module: nn.Module) -> None:
        self.outputs: list[Tensor] = []
        self.handles = [
            m.register_forward_hook(self._record)
            for m in module.modules()
            if isinstance(m, FINGERPRINT_MODULES)
        ]
        if not self.handles:
            raise ValueError(
                "model has no nn.Conv2d or nn.Linear module to fingerprint"
            )

    def _record(self, _module: nn.Module, _args: object, output: Tensor) -> None:
        self.outputs.append(output)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def activation_features_loop(
    model: nn.Module, states: Sequence[Mapping[str, Tensor]], inputs: Tensor
) -> Tensor:
    """The oracle: a model copy per client, one forward per input.

    Returns float ``(clients, inputs, features)``.
    """
    rows = []
    for state in states:
        client = copy.deepcopy(model)
        client.load_state_dict(state)
        client.eval()
        recorder = _Recorder(client)
        per_input = []
        with torch.no_grad():
            for x in inputs:
                recorder.outputs.clear()
                client(x.unsqueeze(0))
                per_input.append(torch.cat([_features(o) for o in recorder.outputs], 1))
        recorder.remove()
        rows.append(torch.cat(per_input))  # (inputs, features)
    return torch.stack(rows)


def activation_features(
    model: nn.Module,
    states: Sequence[Mapping[str, Tensor]],
    inputs: Tensor,
    device: str | torch.device = "cpu",
) -> Tensor:
    """Same as :func:`activation_features_loop`: one template module, each
    client's weights loaded in turn, all K inputs in one forward pass.

    Returns float ``(clients, inputs, features)`` on the CPU.
    """
    template = copy.deepcopy(model).to(device).eval()
    recorder = _Recorder(template)
    x = inputs.to(device)
    rows = []
    with torch.inference_mode():
        for state in states:
            template.load_state_dict(state)
            recorder.outputs.clear()
            template(x)
            rows.append(torch.cat([_features(o) for o in recorder.outputs], 1).cpu())
    recorder.remove()
    return torch.stack(rows)


def _median_and_spread(values: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Median along ``dim`` and the MAD scaled to a standard deviation."""
    med = values.median(dim=dim, keepdim=True).values
    mad = (values - med).abs().median(dim=dim, keepdim=True).values
    return med, mad * MAD_TO_SIGMA


def _plain_median_spread(values: list[float], eps: float) -> tuple[float, float]:
    """Lower median (as ``torch.median``) and ``1.4826 MAD + eps``, in plain Python."""
    middle = (len(values) - 1) // 2
    med = sorted(values)[middle]
    mad = sorted(abs(v - med) for v in values)[middle]
    return med, mad * MAD_TO_SIGMA + eps


def outlier_scores_loop(features: Tensor, eps: float = 1e-6) -> Tensor:
    """The oracle of :func:`outlier_scores`, one coordinate and client at a time."""
    clients = features.shape[0]
    flat = features.reshape(clients, -1).double()
    if clients < 3:
        return torch.zeros(clients)
    columns = [
        _plain_median_spread(flat[:, j].tolist(), eps) for j in range(flat.shape[1])
    ]
    scores = []
    for i in range(clients):
        total = 0.0
        for j, (med, spread) in enumerate(columns):
            total += min(abs(float(flat[i, j]) - med) / spread, MAX_DEVIATION)
        scores.append(total / flat.shape[1])
    med, spread = _plain_median_spread(scores, eps)
    return torch.tensor([(s - med) / spread for s in scores], dtype=torch.float32)


def outlier_scores(features: Tensor, eps: float = 1e-6) -> Tensor:
    """Each client's robust z-score of deviation, float ``(clients,)``.

    ``features`` is ``(clients, ...)``. Per coordinate, a client's deviation is
    ``|x - median| / (1.4826 MAD + eps)`` over the clients, capped at
    ``MAX_DEVIATION``; its score is the mean deviation; the result is the score's
    ``(score - median) / (1.4826 MAD + eps)`` over the clients. Fewer than three
    clients have no majority to compare with: all zeros.
    """
    clients = features.shape[0]
    if clients < 3:
        return torch.zeros(clients)
    flat = features.reshape(clients, -1).double()  # (clients, coordinates)
    med, spread = _median_and_spread(flat, dim=0)
    deviation = ((flat - med).abs() / (spread + eps)).clamp(max=MAX_DEVIATION)
    score = deviation.mean(dim=1)  # (clients,)
    med, spread = _median_and_spread(score, dim=0)
    return ((score - med) / (spread + eps)).float()


def robust_z(values: Tensor, eps: float = 1e-6) -> Tensor:
    """Signed robust z-scores ``(v - median) / (1.4826 MAD + eps)``, float
    ``(clients,)``, for a statistic where only high values are suspicious (a
    client that cannot be driven from the global model is not an outlier).
    Fewer than three clients: all zeros."""
    if len(values) < 3:
        return torch.zeros(len(values))
    med, spread = _median_and_spread(values.double(), dim=0)
    return ((values.double() - med) / (spread + eps)).float()


def confidence_from_z(z: Tensor, z_cut: float) -> Tensor:
    """Map outlier statistics to FedDefender's [0, 1] confidence scale:
    ``z / (2 z_cut)`` clipped, so ``z > z_cut`` is exactly confidence > 0.5."""
    return (z / (2.0 * z_cut)).clamp(0.0, 1.0)


def kl_per_input(reference: Tensor, client: Tensor) -> Tensor:
    """KL(client || reference) of the softmax outputs, one value per input."""
    log_p = client.log_softmax(dim=1)
    log_q = reference.log_softmax(dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def _frozen(
    model: nn.Module, state: Mapping[str, Tensor], device: torch.device
) -> nn.Module:
    net = copy.deepcopy(model).to(device)
    net.load_state_dict(state)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _ascend(
    start: Tensor,
    bounds: tuple[float, float],
    steps: int,
    lr: float,
    loss: Callable[[Tensor], Tensor],
    universal: bool = False,
    axis: int = 0,
) -> Tensor:
    """Adam descent of ``loss`` over the inputs, pixels kept in ``bounds``;
    returns the final inputs (no gradient).

    ``universal``: one perturbation, shared along ``axis`` (the K inputs), is
    moved instead of each input, and ``start + delta`` is clipped to ``bounds``.
    """
    if universal:
        searched = torch.zeros_like(start.narrow(axis, 0, 1)).requires_grad_(True)

        def view() -> Tensor:
            return (start + searched).clamp(*bounds)
    else:
        searched = start.clone().requires_grad_(True)

        def view() -> Tensor:
            return searched

    opt = torch.optim.Adam([searched], lr=lr)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss(view()).backward()
        opt.step()
        if not universal:
            with torch.no_grad():
                searched.clamp_(*bounds)
    with torch.no_grad():
        return view()


def _search(
    client: nn.Module,
    reference: nn.Module,
    start: Tensor,
    bounds: tuple[float, float],
    steps: int,
    lr: float,
    scale: float,
    universal: bool = False,
) -> Tensor:
    """Adam ascent of the client's KL from the reference (see :func:`_ascend`);
    the KL per input at the end."""

    def loss(x: Tensor) -> Tensor:
        return -kl_per_input(reference(x), client(x)).sum() * scale

    x = _ascend(start, bounds, steps, lr, loss, universal)
    with torch.no_grad():
        return kl_per_input(reference(x), client(x))


def disagreement_loop(
    model: nn.Module,
    reference: Mapping[str, Tensor],
    states: Sequence[Mapping[str, Tensor]],
    starts: Tensor,
    bounds: tuple[float, float],
    steps: int = 30,
    lr: float = 0.1,
) -> Tensor:
    """The oracle of :func:`disagreement`: each input searched on its own."""
    device = torch.device("cpu")
    ref = _frozen(model, reference, device)
    result = []
    for state in states:
        client = _frozen(model, state, device)
        per_input = [
            _search(client, ref, x.unsqueeze(0), bounds, steps, lr, 1.0 / len(starts))
            for x in starts
        ]
        result.append(torch.cat(per_input).mean())
    return torch.stack(result) if result else torch.zeros(0)


def disagreement_per_client(
    model: nn.Module,
    reference: Mapping[str, Tensor],
    states: Sequence[Mapping[str, Tensor]],
    starts: Tensor,
    bounds: tuple[float, float],
    steps: int = 30,
    lr: float = 0.1,
    device: str | torch.device = "cpu",
    universal: bool = False,
    aim: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """The first generation's engine (a model copy and one search per client,
    all K inputs in one batch): ``defense.engine=per_client``, the benchmark's
    baseline and the oracle of the universal search, whose inputs share one
    perturbation and so cannot be searched one at a time. Returns what
    :func:`disagreement` returns."""
    dev = torch.device(device)
    ref = _frozen(model, reference, dev)
    x0 = starts.to(dev)
    kls, aims = [], []
    for state in states:
        client = _frozen(model, state, dev)

        def loss(x: Tensor, client: nn.Module = client) -> Tensor:
            return -kl_per_input(ref(x), client(x)).sum() / len(starts)

        x = _ascend(x0, bounds, steps, lr, loss, universal)
        with torch.no_grad():
            out, ref_out = client(x), ref(x)
            kls.append(kl_per_input(ref_out, out).mean().cpu())
            aims.append(aimed(out.softmax(-1)[None], ref_out.softmax(-1)[None])[0])
    kl = torch.stack(kls) if kls else torch.zeros(0)
    if not aim:
        return kl
    return kl, torch.stack(aims).cpu() if aims else torch.zeros(0)


def stacked_forward(
    model: nn.Module, states: Sequence[Mapping[str, Tensor]], device: torch.device
) -> Callable[[Tensor], Tensor]:
    """``f(x)`` with ``x`` of shape ``(clients, K, ...)``: every client's model on
    its own K inputs in one vmapped call over the clients' stacked weights (a
    convolution becomes one grouped convolution). No gradient reaches the weights.
    """
    net = _frozen(model, states[0], device)  # a template: its weights are replaced
    stacked = {n: torch.stack([s[n] for s in states]).to(device) for n in states[0]}

    def one(weights: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(net, weights, (x,))

    batched = vmap(one)
    return lambda x: batched(stacked, x)


def disagreement(
    model: nn.Module,
    reference: Mapping[str, Tensor],
    states: Sequence[Mapping[str, Tensor]],
    starts: Tensor,
    bounds: tuple[float, float],
    steps: int = 30,
    lr: float = 0.1,
    device: str | torch.device = "cpu",
    universal: bool = False,
    aim: bool = False,
    memory_format: str = "contiguous",
) -> Tensor | tuple[Tensor, Tensor]:
    """How far each client model can be driven from ``reference``: differential
    testing (DeepXplore, FedDebug) with searched inputs.

    From ``starts`` (K inputs, e.g. class impressions of the global model), Adam
    raises each input's KL divergence between the client's and the reference's
    predicted distributions for ``steps`` steps, pixels clipped to ``bounds``.
    A backdoor is an input-agnostic shortcut to the target class, so the search
    finds far larger disagreement for a backdoored model than for a benign model
    one round of local training away from the same global model. Returns the
    mean final KL per client, float ``(clients,)`` on the CPU.

    Every client's search runs at once: one vmapped forward over the stacked
    client weights on a ``(clients, K, ...)`` input tensor, one reference
    forward on all of it, one Adam over it. Clients do not interact (the loss is
    a sum over clients, and Adam is per element), so this equals the per-input
    oracle :func:`disagreement_loop` up to float rounding.

    ``universal``: the search moves one perturbation per client that is added
    to all its K inputs (pixels clipped), not each input on its own: a backdoor
    trigger is such a perturbation, while what a benign non-IID client learned
    differently from the reference mostly is not. Its oracle is
    :func:`disagreement_per_client` with ``universal=True``.

    ``aim``: also return :func:`aimed` on the searched inputs.

    ``memory_format``: the reference's kernel layout (the model config's
    ``memory_format``). The reference runs on all ``clients * K`` inputs as one
    batch, and in ``channels_last`` the ConvNet's forward and backward there
    take about 0.45x the time (``benchmarks/robust_cost.py``); the vmapped
    client forward is a grouped convolution either way. Equal to the
    contiguous layout up to float rounding.
    """
    if not states:
        return torch.zeros(0)
    dev = torch.device(device)
    ref = to_layout(_frozen(model, reference, dev), memory_format)
    clients = stacked_forward(model, states, dev)
    k = len(starts)
    x0 = starts.to(dev).unsqueeze(0).expand(len(states), *starts.shape)

    def outputs(x: Tensor) -> tuple[Tensor, Tensor]:
        """(client, reference) logits, ``(clients * K, classes)`` each."""
        return clients(x).flatten(0, 1), ref(
            batch_layout(x.flatten(0, 1), memory_format)
        )

    def loss(x: Tensor) -> Tensor:
        out, ref_out = outputs(x)
        return -kl_per_input(ref_out, out).sum() / k

    # one perturbation per client, shared by its K inputs (axis 1), if universal
    x = _ascend(x0, bounds, steps, lr, loss, universal, axis=1)
    with torch.no_grad():
        out, ref_out = outputs(x)
        kl = kl_per_input(ref_out, out).view(len(states), k).mean(dim=1).cpu()
        if not aim:
            return kl
        probs = out.softmax(-1).view(len(states), k, -1)  # (clients, K, classes)
        return kl, aimed(probs, ref_out.softmax(-1).view_as(probs)).cpu()


def aimed(client: Tensor, reference: Tensor) -> Tensor:
    """How much one class gains on the searched inputs: per client, the largest
    over classes of the mean (over the K inputs) probability the client gives
    the class minus the mean the reference gives it, float ``(clients,)`` in
    [-1, 1]. Near 1 when the client sends all inputs to one class the reference
    does not (a backdoor's target); a client that disagrees in different
    directions on different inputs stays low. ``client`` and ``reference`` are
    probabilities ``(clients, K, classes)``."""
    return (client.mean(dim=1) - reference.mean(dim=1)).max(dim=1).values
