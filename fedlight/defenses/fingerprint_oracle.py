"""FedDefender as the paper describes it: the oracle, run by ``engine="loop"``.

Gill, Anwar, Gulzar, "FedDefender: Backdoor Attack Defense in Federated Learning"
(arXiv 2307.08672), after FedDebug (ICSE 2023). Written for reading, not speed:
one model copy per client, one forward per input, every leave-one-out subset
counted. The engine in :mod:`fedlight.defenses.fingerprint` must give the same
answer bit for bit; the tests hold it to this module.

1. A client's fingerprint on an input: the outputs of every ``nn.Conv2d`` and
   ``nn.Linear`` module, flattened and concatenated in execution order; a neuron
   is *on* when its value is strictly greater than ``na_t``.
2. Per input: for every leave-one-out subset of the remaining clients, count the
   neurons on in all of them. The client whose absence gives the largest count is
   the suspect. With ``num_attackers`` > 1 it is removed and the test repeated.
3. A client's confidence: the share of the inputs that flagged it.

Tie rule (ours; the original code broke ties by subset order): when the largest
count is reached by more than one left-out client, the input does not discriminate
and casts no vote in this repetition nor in any later one. Fewer than two
remaining clients also cast no vote.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

FINGERPRINT_MODULES = (nn.Conv2d, nn.Linear)


def fingerprints(
    model: nn.Module,
    states: Sequence[Mapping[str, Tensor]],
    inputs: Tensor,
    na_t: float,
) -> Tensor:
    """bool ``(clients, inputs, neurons)``: which Conv2d/Linear outputs exceed ``na_t``.

    Needs at least one client and one input.
    """
    outputs: list[Tensor] = []

    def record(_module: nn.Module, _args: object, output: Tensor) -> None:
        outputs.append(output.flatten())

    per_client = []
    for state in states:
        client = copy.deepcopy(model)
        client.load_state_dict(state)
        client.eval()
        dtype = next(client.parameters()).dtype
        for module in client.modules():
            if isinstance(module, FINGERPRINT_MODULES):
                module.register_forward_hook(record)
        rows = []
        with torch.no_grad():
            for x in inputs:
                outputs.clear()
                client(x.unsqueeze(0).to(dtype))
                rows.append(torch.cat(outputs) > na_t)  # (neurons,)
        per_client.append(torch.stack(rows))  # (inputs, neurons)
    return torch.stack(per_client)


def leave_one_out(active: Tensor, num_attackers: int = 1) -> list[int]:
    """The suspects of one input, in the order found.

    ``active`` is bool ``(clients, neurons)``. Fewer than ``num_attackers`` come
    back when the input stops voting (a tie, or fewer than two clients left).
    """
    if active.dim() != 2:
        raise ValueError(f"active has shape {tuple(active.shape)}; expected 2 dims")
    if num_attackers < 0:
        raise ValueError(f"num_attackers={num_attackers} must be >= 0")
    remaining = list(range(active.shape[0]))
    suspects: list[int] = []
    for _ in range(num_attackers):
        if len(remaining) < 2:
            break
        shared = {}  # left-out client -> neurons on in every other remaining client
        for left_out in remaining:
            subset = [c for c in remaining if c != left_out]
            shared[left_out] = int(active[subset].all(dim=0).sum())
        most = max(shared.values())
        best = [c for c, count in shared.items() if count == most]
        if len(best) != 1:
            break
        suspects.append(best[0])
        remaining.remove(best[0])
    return suspects


def confidence(active: Tensor, num_attackers: int = 1) -> Tensor:
    """float ``(clients,)``: the share of inputs whose test flagged each client.

    ``active`` is bool ``(clients, inputs, neurons)``.
    """
    if active.dim() != 3:
        raise ValueError(f"active has shape {tuple(active.shape)}; expected 3 dims")
    clients, num_inputs, _ = active.shape
    votes = torch.zeros(clients)
    for k in range(num_inputs):
        for suspect in leave_one_out(active[:, k], num_attackers):
            votes[suspect] += 1
    return votes / max(num_inputs, 1)


def score_clients(
    model: nn.Module,
    states: Sequence[Mapping[str, Tensor]],
    inputs: Tensor,
    na_t: float,
    num_attackers: int = 1,
) -> Tensor:
    """FedDefender's per-client malicious confidence, float ``(clients,)``."""
    return confidence(fingerprints(model, states, inputs, na_t), num_attackers)
