"""``attack=constrain_scale``: the patch backdoor trained to stay close to the
global model, then scaled (Bagdasaryan, Veit, Hua, Estrin, Shmatikov,
AISTATS 2020, "How to backdoor federated learning": "constrain-and-scale").

What the attack does. The attacker trains on its poisoned data (the square
patch of :class:`~fedlight.attacks.backdoor.Backdoor`: same trigger, poisoning
and ASR set) with the paper's loss

    L_model = alpha * L_class + (1 - alpha) * L_ano,

where ``L_class`` is the cross-entropy on the poisoned batch (main task and
backdoor together) and ``L_ano`` is an anomaly term that a defence could
measure; then it scales its update (``global + scale * (trained - global)``,
the base class's ``scale``). So: constrain with ``alpha``, then scale with
``attack.scale``.

What was built. ``L_ano`` is the L2 distance (:func:`anomaly_distance`) of the
model's float parameters to the global model the attacker started from this
round: the paper's example of an anomaly measure (against norm- and
distance-based defences) and what its released code minimises
(``model_dist_norm_var``: ``torch.norm`` of the flattened parameter
difference). The distance, not its square: the distance's
gradient is a unit vector towards the global model whatever the distance, so
``1 - alpha`` is a steady pull that weighs the same at the start of local
training (where the square's gradient is ~0 and would do nothing) as at its
end; it is also the quantity a norm bound tests. At the global model itself
(the first step) the distance is 0 and ``torch.linalg.vector_norm`` gives the
zero subgradient, not NaN. The client's loss is the cross-entropy and
:class:`~fedlight.attacks.base.TrainingHooks.extra_loss` is added to it, so the
hook returns ``(alpha - 1) * CE + (1 - alpha) * L_ano`` (CE recomputed from the
batch's logits); the total is then exactly the paper's loss, and with
``alpha = 1`` the attack trains exactly as ``attack=backdoor`` (same weights;
tested). The client's ``train-loss`` metric reports that total.

Attacker's knowledge: its own data and the global model it receives (which every
client has); nothing about the other clients or the defence beyond the choice
of ``alpha`` and ``scale``.

Deviations. The paper's ``L_ano`` can be any anomaly measure (it names p-norm
distances and weight-plasticity penalties; its code also has a cosine loss);
only the L2 distance is built. The paper trains the attacker
with its own schedule (more local epochs, a decaying rate, mixing backdoor and
clean samples per batch); here the attacker trains like every client (Adam,
the run's epochs and rate) on the patch-poisoned partition, so the only
difference from ``attack=backdoor`` is the loss. ``alpha`` defaults to 0.7,
fedlight's choice for its experiments, not a value taken from the paper: the
paper presents ``alpha`` as the attacker's knob between the backdoor and evading
the anomaly detector, and its released code's default ``alpha_loss`` is 1.0
(the term off). ``scale`` defaults to 1 (the base class's): the experiments
choose it (``scale = num_clients`` replaces the global model under FedAvg, as
in the paper).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fedlight.attacks.backdoor import Backdoor
from fedlight.attacks.base import ATTACKS, State, TrainingHooks
from fedlight.params import param


def anomaly_distance(model: nn.Module, center: State) -> torch.Tensor:
    """L2 distance of ``model``'s float parameters to ``center`` (differentiable).

    Only parameters: buffers get no gradient, so the loss could not move them.
    The norm of the per-tensor norms equals the norm of the flattened
    difference without concatenating it; ``vector_norm``'s subgradient at 0 is
    0, so the first step (model = center) is finite.
    """
    norms = [
        torch.linalg.vector_norm(p - center[name].to(p.device, p.dtype))
        for name, p in model.named_parameters()
        if p.is_floating_point()
    ]
    return torch.linalg.vector_norm(torch.stack(norms))


def constrain_loss(
    model: nn.Module,
    y: torch.Tensor,
    logits: torch.Tensor,
    center: State,
    alpha: float,
) -> torch.Tensor:
    """What to add to the client's cross-entropy so the total is
    ``alpha * CE + (1 - alpha) * anomaly_distance``."""
    ce = nn.functional.cross_entropy(logits, y)
    return (alpha - 1.0) * ce + (1.0 - alpha) * anomaly_distance(model, center)


@ATTACKS.register("constrain_scale", order=62, paper="Bagdasaryan et al., AISTATS 2020")
@dataclass
class ConstrainScale(Backdoor):
    """The patch backdoor trained with alpha * CE + (1 - alpha) * L2 distance to
    the global model (constrain), then sent as global + scale * update (scale)."""

    alpha: float = param(
        0.7,
        low=0.0,
        high=1.0,
        doc="weight of the task loss; 1 - alpha weighs the L2 distance to the "
        "global model (1: plain backdoor training)",
    )

    def training_hooks(
        self, client_id: int, server_round: int, global_state: State, memory: State
    ) -> TrainingHooks:
        center = {k: v.detach().clone() for k, v in global_state.items()}
        alpha = float(self.alpha)

        def extra_loss(
            model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor
        ) -> torch.Tensor:
            if any(v.device != logits.device for v in center.values()):
                for k, v in center.items():  # once, where the model trains
                    center[k] = v.to(logits.device)
            return constrain_loss(model, y, logits, center, alpha)

        return TrainingHooks(extra_loss=extra_loss)
