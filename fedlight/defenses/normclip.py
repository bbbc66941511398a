"""``defense=normclip``: norm clipping (Sun et al. 2019, "Can you really backdoor
federated learning?", arXiv 1911.07963), the baseline FedDefender compares with.

Every client's update ``w - global`` is scaled down to L2 norm ``max_norm`` if
longer, so no single client can move the global model far: this blunts boosted
or scaled (model-replacement) updates, not a backdoor that fits in a normal-sized
update. ``variant=weights`` clips the whole weight vector instead, as the original
FedDefender code did (to norm 10). With ``max_norm`` null the bound is the median
norm of the round, an adaptive choice that needs no tuning per model.
The inner strategy (FedAvg) aggregates the clipped replies; nobody is flagged.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, Message
from flwr.serverapp.strategy import Strategy

from fedlight.defenses.base import (
    DefenseContext,
    DefenseReport,
    DefenseStrategy,
    client_id,
)

VARIANTS = ("update", "weights")


def vector_norm(
    arrays: dict[str, np.ndarray], reference: dict[str, np.ndarray]
) -> float:
    """L2 norm of ``arrays - reference`` over every float array."""
    total = 0.0
    for key, value in arrays.items():
        if value.dtype.kind == "f":
            diff = value.astype(np.float64) - reference[key]
            total += float(np.square(diff).sum())
    return total**0.5


def clip(
    arrays: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    max_norm: float,
) -> tuple[dict[str, np.ndarray], float]:
    """``reference + (arrays - reference) * min(1, max_norm / norm)`` and the norm.

    Float arrays only; integer buffers pass unchanged.
    """
    norm = vector_norm(arrays, reference)
    if norm <= max_norm:
        return arrays, norm
    factor = max_norm / norm
    out = {}
    for key, value in arrays.items():
        if value.dtype.kind == "f":
            ref = reference[key]
            out[key] = (ref + (value - ref) * factor).astype(value.dtype)
        else:
            out[key] = value
    return out, norm


class NormClip(DefenseStrategy):
    """Clip each client's update (or weights) to ``max_norm``, then ``inner``."""

    def __init__(
        self,
        inner: Strategy,
        context: DefenseContext,
        max_norm: float | None = None,
        variant: str = "update",
    ) -> None:
        super().__init__(inner, context)
        if variant not in VARIANTS:
            raise ValueError(f"defense.variant={variant!r} is not one of {VARIANTS}")
        self.max_norm = max_norm
        self.variant = variant

    def reference(self, template: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """What is clipped around: the global model, or zero for ``weights``."""
        if self.variant == "weights":
            return {k: np.zeros_like(v, dtype=np.float64) for k, v in template.items()}
        if self.global_arrays is None:
            raise RuntimeError(
                "defense=normclip variant=update needs the round's global model "
                "(DefenseStrategy.global_arrays), which the server loop sets"
            )
        return {k: a.numpy().astype(np.float64) for k, a in self.global_arrays.items()}

    def screen(
        self, server_round: int, replies: list[Message]
    ) -> tuple[list[Message], DefenseReport]:
        ids = [client_id(r) for r in replies]
        states = [
            {k: a.numpy() for k, a in r.content["arrays"].items()} for r in replies
        ]
        reference = self.reference(states[0])
        norms = [vector_norm(s, reference) for s in states]
        bound = self.max_norm if self.max_norm is not None else float(np.median(norms))
        clipped = []
        for cid, reply, state in zip(ids, replies, states, strict=True):
            new_state, norm = clip(state, reference, bound)
            if new_state is not state:
                clipped.append(cid)
                reply.content["arrays"] = ArrayRecord(
                    {k: Array(np.ascontiguousarray(v)) for k, v in new_state.items()}
                )
        report = DefenseReport(
            confidence=None,
            details={
                "variant": self.variant,
                "max_norm": bound,
                "norms": dict(zip(ids, norms, strict=True)),
                "clipped": clipped,
            },
        )
        return replies, report
