"""``attack=pgd``: the patch backdoor trained under an L2 bound on the update
(projected gradient descent; Sun, Kairouz, Suresh, McMahan, arXiv 1911.07963,
"Can you really backdoor federated learning?"; Wang et al., NeurIPS 2020,
"Attack of the tails: yes, you really can backdoor federated learning").

After every optimiser step the attacker projects its model back onto the L2 ball
of radius ``eps`` around the global model it started from, so the update it
sends never exceeds ``eps`` and passes a norm bound (``normclip``, FLAME's and
DeepSight's clipping) untouched. The bound covers every float array of the
state (weights and float buffers), which is what the server measures. Set
``eps`` to the bound of the defence under attack; the default 3.0 sits under the
ConvNet's benign update norms on MNIST (about 6.6 in round 1 and 3.7 in round 2
for a client with 3,000 images, 5 epochs). ``scale`` > 1 multiplies the
projected update afterwards (constrain-and-scale's second step), so the sent norm
is then ``scale x eps``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fedlight.attacks.backdoor import Backdoor
from fedlight.attacks.base import ATTACKS, State, TrainingHooks
from fedlight.params import param


def project_to_ball(model: nn.Module, center: State, eps: float) -> float:
    """Move ``model``'s float state onto the L2 ball of radius ``eps`` around
    ``center`` (in place) and return the distance before projecting."""
    state = model.state_dict()  # shares storage with the parameters
    keys = [k for k, v in state.items() if v.is_floating_point()]
    diffs = {k: state[k] - center[k].to(state[k].device) for k in keys}
    norm = float(torch.sqrt(sum(d.pow(2).sum() for d in diffs.values())))
    if norm > eps:
        factor = eps / norm
        for k in keys:
            state[k].copy_(center[k].to(state[k].device) + diffs[k] * factor)
    return norm


@ATTACKS.register("pgd", order=60, paper="Sun et al., arXiv 1911.07963")
@dataclass
class PGDBackdoor(Backdoor):
    """The patch backdoor, projected onto an L2 ball around the global model."""

    eps: float = param(
        3.0, low=0.0, low_open=True, doc="L2 radius of the update (all float arrays)"
    )

    def training_hooks(
        self, client_id: int, server_round: int, global_state: State, memory: State
    ) -> TrainingHooks:
        center = {k: v.detach().clone() for k, v in global_state.items()}
        return TrainingHooks(
            after_step=lambda model: project_to_ball(model, center, self.eps)
        )
