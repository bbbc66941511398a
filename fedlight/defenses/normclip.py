"""``defense=normclip``: norm clipping (Sun et al. 2019, "Can you really backdoor
federated learning?", arXiv 1911.07963), the baseline FedDefender compares with.

Every client's update ``w - global`` is scaled down to L2 norm ``max_norm`` if
longer, so no single client can move the global model far: this blunts boosted
or scaled (model-replacement) updates, not a backdoor that fits in a normal-sized
update. ``variant=weights`` clips the whole weight vector instead, as the original
FedDefender code did (to norm 10). With ``max_norm`` null the bound is the median
norm of the round, an adaptive choice that needs no tuning per model.
FedAvg averages the clipped updates by their counts; nobody is flagged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedlight.defenses.base import DEFENSES, Defense, RoundInput, Verdict, to_record
from fedlight.params import Params, param

VARIANTS = ("update", "weights")


@dataclass
class NormClipParams(Params):
    max_norm: float | None = param(
        None, low=0.0, low_open=True, doc="the L2 bound; null: the round's median norm"
    )
    variant: str = param(
        "update",
        choices=VARIANTS,
        doc="update (w - global) or weights (the whole vector, as the original code)",
    )


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


@DEFENSES.register(
    "normclip", params=NormClipParams, order=10, paper="Sun et al., arXiv 1911.07963"
)
class NormClip(Defense):
    """Clip each client's update (or weights) to ``max_norm``, then FedAvg."""

    params: NormClipParams

    def reference(self, rnd: RoundInput) -> dict[str, np.ndarray]:
        """What is clipped around: the global model, or zero for ``weights``."""
        if self.params.variant == "weights":
            return {
                k: np.zeros_like(v, dtype=np.float64)
                for k, v in rnd.global_numpy.items()
            }
        return {k: a.astype(np.float64) for k, a in rnd.global_numpy.items()}

    def verdict(self, rnd: RoundInput) -> Verdict:
        reference = self.reference(rnd)
        norms = [vector_norm(u.numpy, reference) for u in rnd.updates]
        bound = self.params.max_norm
        if bound is None:
            bound = float(np.median(norms))
        replaced, clipped = {}, []
        for u in rnd.updates:
            new_state, _ = clip(u.numpy, reference, bound)
            if new_state is not u.numpy:
                clipped.append(u.cid)
                replaced[u.cid] = to_record(new_state)
        return Verdict(
            weights=rnd.counts(),
            replaced=replaced,
            details={
                "variant": self.params.variant,
                "max_norm": bound,
                "norms": dict(zip(rnd.ids, norms, strict=True)),
                "clipped": clipped,
            },
        )
