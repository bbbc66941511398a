"""Which kernels a client trains with: the tensors' memory layout and the
optimiser's implementation.

Both change only the order in which floats are summed, not what is computed,
and are chosen for speed, per model: on this project's CPUs the LeNet-style
ConvNet trains ~20% faster in ``channels_last`` and ResNet-18 5-7% slower, and
the fused Adam step is 7% (ConvNet) and 15% (ResNet-18) faster per training
step (``benchmarks/client_kernels.py``).
The plain choices (``contiguous``, the ``foreach`` optimisers) stay selectable,
and tests compare the two on small inputs.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

MEMORY_FORMATS = ("contiguous", "channels_last")
OPTIMIZERS = ("adam", "sgd")


def to_layout(model: nn.Module, memory_format: str) -> nn.Module:
    """``model`` with its 4-D weights in ``memory_format`` (in place)."""
    if memory_format == "channels_last":
        return model.to(memory_format=torch.channels_last)
    return model.to(memory_format=torch.contiguous_format)


def batch_layout(x: torch.Tensor, memory_format: str) -> torch.Tensor:
    """An image batch in ``memory_format`` (other tensors unchanged)."""
    if memory_format == "channels_last" and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def make_optimizer(
    params: Iterable[torch.nn.Parameter], name: str, lr: float, fused: bool = False
) -> torch.optim.Optimizer:
    """Adam, or SGD with momentum 0.9; ``fused``: one kernel for all parameters
    (same update, other float rounding) instead of ``foreach``."""
    fast = {"fused": True} if fused else {}
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, **fast)
    return torch.optim.Adam(params, lr=lr, **fast)
