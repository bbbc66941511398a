"""Reject broken client updates before any defence or aggregation sees them.

A Byzantine or buggy client can send NaN/Inf, tensors of the wrong shape or dtype,
or an update whose norm is absurd. Such replies would crash FedAvg or silently
destroy the global model; here they are dropped, with a reason, and counted as
rejected in the round's detection metrics.
"""

from __future__ import annotations

import math

import numpy as np
from flwr.app import ArrayRecord


def structural_problem(
    reference: dict[str, np.ndarray], arrays: ArrayRecord
) -> str | None:
    """Why ``arrays`` cannot be averaged with ``reference``, or None if it can."""
    if set(arrays.keys()) != set(reference):
        missing = sorted(set(reference) - set(arrays.keys()))
        extra = sorted(set(arrays.keys()) - set(reference))
        return f"parameter names differ (missing {missing[:3]}, unexpected {extra[:3]})"
    for key, ref in reference.items():
        value = arrays[key].numpy()
        if value.shape != ref.shape:
            return f"{key}: shape {value.shape} != {ref.shape}"
        if value.dtype != ref.dtype:
            return f"{key}: dtype {value.dtype} != {ref.dtype}"
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            return f"{key}: non-finite values (NaN or Inf)"
    return None


def update_norm(reference: dict[str, np.ndarray], arrays: ArrayRecord) -> float:
    """L2 norm of ``arrays - reference`` over all floating-point tensors."""
    total = 0.0
    for key, ref in reference.items():
        if ref.dtype.kind == "f":
            diff = arrays[key].numpy().astype(np.float64) - ref
            total += float(np.dot(diff.ravel(), diff.ravel()))
    return math.sqrt(total)


def screen_updates(
    reference: dict[str, np.ndarray],
    updates: dict[str, ArrayRecord],
    max_norm_ratio: float | None = 1000.0,
    max_norm: float | None = None,
) -> dict[str, str]:
    """Map client id -> reason for every update to reject.

    Structurally broken updates are rejected first; of the rest, an update whose
    norm exceeds ``max_norm`` or ``max_norm_ratio`` times the median norm of the
    round is rejected too (a relative bound works for any model size).
    """
    rejected: dict[str, str] = {}
    norms: dict[str, float] = {}
    for cid, arrays in updates.items():
        problem = structural_problem(reference, arrays)
        if problem is None:
            norms[cid] = update_norm(reference, arrays)
            if not math.isfinite(norms[cid]):
                problem = "update norm overflows"
        if problem is not None:
            rejected[cid] = problem
            norms.pop(cid, None)
    median = float(np.median(list(norms.values()))) if norms else 0.0
    for cid, norm in norms.items():
        if max_norm is not None and norm > max_norm:
            rejected[cid] = f"update norm {norm:.3g} > max_norm {max_norm:.3g}"
        elif (
            max_norm_ratio is not None and median > 0 and norm > max_norm_ratio * median
        ):
            rejected[cid] = (
                f"update norm {norm:.3g} > {max_norm_ratio:g} x median {median:.3g}"
            )
    return rejected
