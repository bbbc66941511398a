"""Test-only views of FedDefender's engine, to hold it to the oracle piece by piece.

Production runs neither of these: ``score_clients`` streams chunks from ``_Engine``
into ``_streaming_confidence``. Here the engine's fingerprints are gathered into one
matrix, and the unique-off vote is written for one input, so that each step can be
compared with :mod:`fedlight.defenses.fingerprint_oracle` on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from fedlight.defenses.fingerprint import _Engine, _pick, _streaming_confidence


def fingerprint_batched(
    model: nn.Module,
    states: Sequence[Mapping[str, Tensor]],
    inputs: Tensor,
    na_t: float,
    max_memory_mb: float = 1024.0,
    device: str | torch.device = "cpu",
    *,
    vectorize: bool | None = None,
) -> Tensor:
    """The engine's bool ``(clients, inputs, neurons)``, gathered on the CPU.

    Same as :func:`fingerprint_oracle.fingerprints`, computed the way
    ``score_clients`` computes it (chunks of clients, all inputs per pass).
    """
    engine = _Engine(
        model,
        inputs,
        na_t,
        device=device,
        max_memory_mb=max_memory_mb,
        vectorize=vectorize,
    )
    chunks = [active.cpu() for _, active, _ in engine.chunks(states)]
    if not chunks:
        return torch.zeros((0, len(inputs), engine.neurons), dtype=torch.bool)
    return torch.cat(chunks)  # (clients, inputs, neurons)


def leave_one_out_fast(active: Tensor, num_attackers: int = 1) -> list[int]:
    """:func:`fingerprint_oracle.leave_one_out` in O(clients x neurons).

    The engine's identity on one input: ranking the leave-one-out subsets needs
    only, per client, the neurons on in all other remaining clients and off in it.
    """
    if active.dim() != 2:
        raise ValueError(f"active has shape {tuple(active.shape)}; expected 2 dims")
    if num_attackers < 0:
        raise ValueError(f"num_attackers={num_attackers} must be >= 0")
    active = active.bool()
    remaining = list(range(active.shape[0]))
    on_count = active.sum(dim=0)  # (neurons,) clients on, among the remaining
    suspects: list[int] = []
    for _ in range(num_attackers):
        if len(remaining) < 2:
            break
        only_one_off = on_count == len(remaining) - 1  # (neurons,)
        unique_off = (~active[remaining] & only_one_off).sum(dim=1)  # (remaining,)
        suspect = _pick(unique_off, remaining)
        if suspect is None:
            break
        suspects.append(suspect)
        remaining.remove(suspect)
        on_count -= active[suspect].long()
    return suspects


def streaming_confidence(active: Tensor, num_attackers: int, chunk: int) -> Tensor:
    """The production vote on a whole bool ``(clients, inputs, neurons)`` matrix.

    Fed in chunks of ``chunk`` clients, rows for removals taken from ``active``.
    """
    clients, num_inputs, neurons = active.shape
    stream = ((s, active[s : s + chunk]) for s in range(0, clients, chunk))
    return _streaming_confidence(
        stream,
        clients,
        num_inputs,
        neurons,
        num_attackers,
        lambda ids: {i: active[i] for i in ids},
        torch.device("cpu"),
    )
