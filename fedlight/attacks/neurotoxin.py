"""``attack=neurotoxin``: the patch backdoor written only into the coordinates
that benign training changes least (Zhang, Panda, Song, Yang, Mahoney, Mittal,
Ramchandran, Gonzalez, ICML 2022, "Neurotoxin: durable backdoors in federated
learning").

What the attack does. A backdoor that the benign clients keep overwriting fades
once the attacker stops; Neurotoxin makes it durable by putting it where the
benign updates do not go. The attacker approximates the benign update by the
last change of the global model, finds its top-k% coordinates by magnitude, and
trains its poisoned data with the gradient on those coordinates zeroed, so its
update lives in the remaining (bottom) coordinates; optionally it projects onto
an L2 ball around the global model (PGD) as well.

What was built.

- Memory: :meth:`Neurotoxin.observe` stores the global model of every round the
  attacker takes part in (attacking or not, so an attacker off its schedule
  keeps it fresh) in the client's ``memory`` (float tensors only, under
  ``previous_global.<name>``). In a round where it attacks,
  ``change = global_t - remembered global``: exactly ``global_t - global_{t-1}``
  when the attacker was sampled in round t-1, else the change over the rounds
  since it was last sampled. In the first round it takes part in there is no
  previous global: the mask then comes from the official code's own proxy for
  the benign gradient (``grad_mask_cv``), the gradient of the cross-entropy of
  its clean samples (those not relabelled to the target) on the global model,
  summed over them (:meth:`Neurotoxin.prepare`), so round 1 is masked too.
- Mask (:func:`neurotoxin_mask`): the ``round(mask_ratio x n)`` coordinates of
  largest ``|change|`` over all n float parameter coordinates together (one
  global top-k, not per layer: the official code's ``aggregate_all_layer=1``,
  in every command of its run scripts) are masked out. ``mask_ratio`` = 0.05
  is the official code's ``gradmask_ratio=0.95`` (keep the bottom 95%), the
  value of all its CIFAR-100 and EMNIST commands and of its CIFAR-10 edge-case
  ones (its CIFAR-10 base case also runs 0.99 and 0.97).
- Masking: ``before_step`` multiplies every parameter's gradient by its keep
  mask after ``backward``. The client builds a fresh Adam (or SGD) optimiser for
  every fit and has no weight decay, so a coordinate whose gradient is always
  zero keeps zero moments and moves by exactly 0: the sent update is exactly
  zero on the masked coordinates (tested on a real client fit).
- PGD (``eps``, null = off): after every optimiser step the model is projected
  onto the L2 ball of radius ``eps`` around the global model
  (:func:`fedlight.attacks.pgd.project_to_ball`, as ``attack=pgd``); scaling the
  difference keeps the masked coordinates at exactly 0. ``scale`` (base class)
  multiplies the result afterwards.

Attacker's knowledge: its own data and the global models it receives (which
every client has); it remembers them across rounds (Flower's per-node state).
Nothing about the other clients or the defence.

Deviations. The paper approximates the benign gradient with the previous
round's global change (as here from the second round on); its released code
instead accumulates the gradient of clean data on the current global model
(``grad_mask_cv``, on data of benign participants; here, having no other
client's data, on the attacker's own clean samples, and only in the first
round). The global change reflects what the benign clients actually did and
costs no extra pass. Buffers (BatchNorm running statistics; the
ConvNet has none) are not masked: they are not trained by gradients, so the
update outside the mask is zero for parameters only. The attacker trains like
every client (Adam, the run's epochs and rate) rather than with the paper's
own attacker learning rate; for durability, stop the attack with
``attack.rounds`` (e.g. ``1:10``) and read the ASR in the later rounds.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from fedlight.attacks.backdoor import Backdoor
from fedlight.attacks.base import ATTACKS, State, TrainingHooks
from fedlight.attacks.pgd import project_to_ball
from fedlight.params import param

MEMORY_PREFIX = "previous_global."
GRADIENT_PREFIX = "clean_gradient."  # round 1's proxy for the benign change


def neurotoxin_mask(change: State, mask_ratio: float) -> State:
    """Keep masks (bool, True = may be trained) for the tensors of ``change``.

    The ``round(mask_ratio x n)`` coordinates of largest ``|change|`` over all
    n coordinates of all tensors together are False (masked out); the rest True.
    """
    flat = torch.cat([v.detach().abs().flatten().float() for v in change.values()])
    keep = torch.ones_like(flat, dtype=torch.bool)
    k = int(round(mask_ratio * flat.numel()))
    if k > 0:
        keep[torch.topk(flat, k).indices] = False
    masks, start = {}, 0
    for name, v in change.items():
        masks[name] = keep[start : start + v.numel()].view(v.shape)
        start += v.numel()
    return masks


def stored(memory: State, prefix: str) -> State:
    """The tensors ``memory`` keeps under ``prefix``, by their own names."""
    return {k[len(prefix) :]: v for k, v in memory.items() if k.startswith(prefix)}


def remembered_global(memory: State) -> State:
    """The global model the attacker stored in ``memory`` (empty: none yet)."""
    return stored(memory, MEMORY_PREFIX)


def remember_global(global_state: State, memory: State) -> None:
    """Store the float arrays of ``global_state`` in ``memory``."""
    for k, v in global_state.items():
        if v.is_floating_point():
            memory[MEMORY_PREFIX + k] = v.detach().cpu().clone()


def clean_gradient(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256
) -> State:
    """The gradient of the summed cross-entropy of ``(x, y)`` on a copy of
    ``model`` (the global model), per parameter: Neurotoxin's official proxy
    for the benign gradient (``grad_mask_cv``)."""
    net = copy.deepcopy(model).train()
    net.zero_grad(set_to_none=True)
    for start in range(0, len(y), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        nn.functional.cross_entropy(net(xb), yb, reduction="sum").backward()
    return {
        n: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().clone()
        for n, p in net.named_parameters()
    }


def masked_training(
    global_state: State, memory: State, mask_ratio: float, eps: float | None
) -> TrainingHooks:
    """Neurotoxin's training: gradients zeroed on the ``mask_ratio`` parameter
    coordinates the global model changed most since the remembered one (without
    one, the first round: those of largest clean gradient, if ``memory`` holds
    it), and, with ``eps``, the model projected onto the L2 ball around the
    global model after every step."""
    previous = remembered_global(memory)
    gradient = stored(memory, GRADIENT_PREFIX)
    before_step = None
    if (previous or gradient) and mask_ratio > 0:
        current = {k: v.detach().clone() for k, v in global_state.items()}
        masks: State = {}

        def before_step(model: nn.Module) -> None:
            if not masks:  # built once, over the model's parameters only
                if previous:
                    names = [n for n, _ in model.named_parameters() if n in previous]
                    change = {
                        n: current[n].float() - previous[n].float() for n in names
                    }
                else:
                    names = [n for n, _ in model.named_parameters() if n in gradient]
                    change = {n: gradient[n] for n in names}
                masks.update(neurotoxin_mask(change, mask_ratio))
            for name, p in model.named_parameters():
                if p.grad is not None and name in masks:
                    if masks[name].device != p.grad.device:  # once
                        masks[name] = masks[name].to(p.grad.device)
                    p.grad.mul_(masks[name])

    after_step = None
    if eps is not None:
        center = {k: v.detach().clone() for k, v in global_state.items()}
        radius = float(eps)

        def after_step(model: nn.Module) -> None:
            project_to_ball(model, center, radius)

    return TrainingHooks(before_step=before_step, after_step=after_step)


@ATTACKS.register("neurotoxin", order=64, paper="Zhang et al., ICML 2022")
@dataclass
class Neurotoxin(Backdoor):
    """The patch backdoor trained only on the coordinates outside the top
    ``mask_ratio`` of the last global change (|global_t - global_t-1|)."""

    remembers: ClassVar[bool] = True

    mask_ratio: float = param(
        0.05,
        low=0.0,
        high=1.0,
        high_open=True,
        doc="share of parameter coordinates masked out: those the last global "
        "change moved most (one top-k over all parameters)",
    )
    eps: float | None = param(
        None,
        low=0.0,
        low_open=True,
        doc="L2 radius of the update, projected after every step (null: no PGD)",
    )

    def prepare(
        self,
        client_id: int,
        server_round: int,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        pixel_max: float,
        memory: State,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Without a remembered global model (the first round it takes part
        in), store the clean gradient the mask then comes from."""
        clean = y != self.target_label  # never relabelled: unpoisoned
        if not remembered_global(memory) and self.mask_ratio > 0 and clean.any():
            for name, g in clean_gradient(model, x[clean], y[clean]).items():
                memory[GRADIENT_PREFIX + name] = g
        return x, y

    def training_hooks(
        self, client_id: int, server_round: int, global_state: State, memory: State
    ) -> TrainingHooks:
        return masked_training(global_state, memory, self.mask_ratio, self.eps)

    def observe(
        self, client_id: int, server_round: int, global_state: State, memory: State
    ) -> None:
        """Remember this round's global model for the next round's mask (and
        forget the first round's gradient, which it replaces)."""
        for key in [k for k in memory if k.startswith(GRADIENT_PREFIX)]:
            del memory[key]
        remember_global(global_state, memory)
