"""The plain sequential reference for :func:`fedlight.simulate.simulate`.

The oracle the full stack is checked and timed against (STYLE.md, point 11): one
process, plain torch, a ``for`` loop over rounds and clients. It uses no Flower
messages, Ray actors, Lightning Trainer or Hydra, but does exactly the work
``simulate`` does, from the same config: the same data, partitions and
poisoning (:func:`fedlight.client.client_data`), the same initial model
(``torch.manual_seed(cfg.seed)`` before ``build_model``), the same per-client
shuffling seeds, a fresh optimizer per client fit, the same client sampling,
update screening, FedDefender scoring (:func:`fedlight.defenses.remote.run_job`
on the job the strategy builds) and server-side evaluation.

What it adds up itself, rather than reusing, is what it checks: the training
loop, FedDefender's weights and the FedAvg average. The average repeats
Flower's order of operations (numpy, float32, clients in partition order), so
with the clients' thread count (``simulation.client_resources.num_cpus``) the
two give the same global model; with more threads the convolution kernels may
sum in another order.

Not covered: ``faults``, ``resume``, W&B and plots (no training work).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from fedlight.attacks import Attack
from fedlight.attacks.base import TrainingHooks
from fedlight.checks import build_defense
from fedlight.client import client_data, partition_size, prepare_data
from fedlight.defenses.remote import run_job
from fedlight.detection import round_detection
from fedlight.models import build_model
from fedlight.models.kernels import batch_layout, make_optimizer, to_layout
from fedlight.models.module import TensorBatches
from fedlight.record import RoundRecord, normalised
from fedlight.sanitize import screen_updates
from fedlight.seeding import derive_seed
from fedlight.server import sample_clients
from fedlight.simulate import prepare_experiment

State = dict[str, torch.Tensor]

_DEFENSES = ("feddefender", "none")
_NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


def train_client(
    model: nn.Module,
    state: State,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    optimizer: str,
    generator: torch.Generator,
    hooks: TrainingHooks | None = None,
    memory_format: str = "contiguous",
    fused: bool = False,
) -> tuple[State, dict[str, float]]:
    """Train ``state`` on (x, y) as a client's Lightning fit does, in a plain loop.

    Returns the new state and the fit's metrics; ``train-seconds`` is the time
    inside the epoch loop only (the pure training time). An attacker's
    ``hooks`` run where the Lightning module runs them; ``memory_format`` and
    ``fused`` pick the same kernels (:mod:`fedlight.models.kernels`).
    """
    hooks = hooks or TrainingHooks()
    model.load_state_dict(state)
    to_layout(model, memory_format)
    model.train()
    opt = make_optimizer(model.parameters(), optimizer, lr, fused)
    batches = TensorBatches(x, y, batch_size, generator)
    loss_sum, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in batches:  # a new permutation per epoch, as Lightning draws
            xb = batch_layout(xb, memory_format)
            opt.zero_grad(set_to_none=True)
            logits = model(xb)  # (batch, classes)
            loss = nn.functional.cross_entropy(logits, yb)
            if hooks.extra_loss is not None:
                loss = loss + hooks.extra_loss(model, xb, yb, logits)
            loss.backward()
            if hooks.before_step is not None:
                hooks.before_step(model)
            opt.step()
            if hooks.after_step is not None:
                with torch.no_grad():
                    hooks.after_step(model)
            loss_sum += float(loss.detach()) * len(yb)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(yb)
    seconds = time.perf_counter() - start
    new_state = {
        k: v.detach().clone(memory_format=torch.contiguous_format)
        for k, v in model.state_dict().items()
    }
    to_layout(model, "contiguous")  # as a fresh model: the next attacker prepares on it
    metrics = {
        "train-loss": loss_sum / max(seen, 1),
        "train-accuracy": correct / max(seen, 1),
        "train-seconds": seconds,
    }
    return new_state, metrics


def fedavg(states: list[State], weights: list[float]) -> State:
    """The weighted average of ``states``, in Flower's FedAvg order of operations.

    numpy, each state scaled by ``w / sum(weights)`` and summed in list order,
    so the result matches Flower's bit for bit.
    """
    total_weight = sum(weights)
    factors = [w / total_weight for w in weights]
    total: dict[str, np.ndarray] = {}
    for state, factor in zip(states, factors, strict=True):
        for key, value in state.items():
            if key not in total:
                total[key] = value.numpy() * factor
            else:
                total[key] += value.numpy() * factor
    return {k: torch.from_numpy(np.asarray(v)) for k, v in total.items()}


def feddefender_weights(
    confidence: dict[str, float], theta: float
) -> tuple[list[str], dict[str, float]]:
    """FedDefender's verdict: clients above ``theta`` are excluded (weight 0),
    the others weighted by ``1 - confidence`` (Gill et al., arXiv 2307.08672)."""
    flagged = [cid for cid, c in confidence.items() if c > theta]
    weights = {cid: 0.0 if cid in flagged else 1.0 - c for cid, c in confidence.items()}
    return flagged, weights


def train_clients(
    cfg: DictConfig,
    spec: Any,
    model: nn.Module,
    global_state: State,
    attack: Attack,
    chosen: list[int],
    server_round: int,
    cache: dict[tuple[int, bool], tuple[torch.Tensor, torch.Tensor]],
    memories: dict[int, State] | None = None,
) -> tuple[dict[str, State], dict[str, dict[str, float]]]:
    """One round of local training for ``chosen``, in partition order: each
    client's (tampered) state and fit metrics, keyed by its id as a string.

    ``cache`` keeps each client's (clean or poisoned) tensors across rounds; an
    active attacker's :meth:`Attack.prepare` then makes this round's data from
    them. ``memories`` is each attacker's storage (Flower's node state in the
    real stack).
    """
    memories = {} if memories is None else memories
    states: dict[str, State] = {}
    clients: dict[str, dict[str, float]] = {}
    for cid in chosen:
        active = attack.is_active(cid, server_round)
        if (cid, active) not in cache:
            cache[(cid, active)] = client_data(spec, cid, poisoned=active)
        x, y = cache[(cid, active)]
        memory = memories.setdefault(cid, {})
        if active:
            model.load_state_dict(global_state)
            x, y = prepare_data(spec, cid, server_round, model, x, y, memory)
        hooks = (
            attack.training_hooks(cid, server_round, global_state, memory)
            if active
            else None
        )
        shuffle = torch.Generator().manual_seed(
            derive_seed(cfg.seed, "shuffle", cid, server_round)
        )
        state, metrics = train_client(
            model,
            global_state,
            x,
            y,
            epochs=cfg.client.epochs,
            lr=cfg.client.lr,
            batch_size=cfg.client.batch_size,
            optimizer=cfg.client.optimizer,
            generator=shuffle,
            hooks=hooks,
            memory_format=spec.memory_format,
            fused=spec.fused_optimizer,
        )
        states[str(cid)] = attack.tamper(cid, global_state, state) if active else state
        if attack.is_malicious(cid):
            attack.observe(cid, server_round, global_state, memory)
        metrics["train-examples"] = float(len(y))
        held = partition_size(spec, cid)
        metrics["num-examples"] = (
            attack.reported_examples(cid, held) if active else float(held)
        )
        metrics["partition-id"] = float(cid)
        clients[str(cid)] = metrics
    return states, clients


def run_reference(cfg: DictConfig, num_threads: int | None = None) -> dict[str, Any]:
    """Run the experiment ``cfg`` in one plain loop; return results like simulate's.

    ``num_threads`` is torch's thread count for the whole run (default: every
    core, as a plain script would); it is restored on return. Every round record
    has simulate's keys; client metrics carry ``train-seconds`` per fit.
    """
    started = time.perf_counter()
    if cfg.defense.name not in _DEFENSES:
        raise ValueError(
            f"the reference knows defense={' and defense='.join(_DEFENSES)}, "
            f"not defense={cfg.defense.name}"
        )
    threads_before = torch.get_num_threads()
    torch.set_num_threads(num_threads or os.cpu_count() or 1)
    # Importing Lightning (fedlight.client does) sets this, and then every
    # optimizer step dlopens NVML to ask whether CUDA exists (~30 us a call). A
    # plain torch script has no such setting, so the reference runs without it.
    nvml_check = os.environ.pop(_NVML_CHECK, None)
    try:
        return _run(cfg, started, cfg.defense.name == "feddefender")
    finally:
        torch.set_num_threads(threads_before)
        if nvml_check is not None:
            os.environ[_NVML_CHECK] = nvml_check


def _run(cfg: DictConfig, started: float, feddefender: bool) -> dict[str, Any]:
    experiment = prepare_experiment(cfg)  # the same data, partitions and attack
    data = experiment.data
    attack: Attack = experiment.attack
    malicious = experiment.malicious
    channels = data.input_shape[0]
    torch.manual_seed(cfg.seed)
    global_state: State = build_model(
        cfg.model.name, data.num_classes, channels
    ).state_dict()

    evaluator = experiment.evaluator(cfg)
    defender = None
    if feddefender:
        context = experiment.defense_context(cfg)
        # The real defence, only to build each round's DefenderJob.
        defender = build_defense(cfg, context)

    spec = experiment.client_spec(cfg, experiment.bundle(), num_threads=1)
    client_tensors: dict[tuple[int, bool], tuple[torch.Tensor, torch.Tensor]] = {}
    memories: dict[int, State] = {}
    published: State | None = None
    model = build_model(cfg.model.name, data.num_classes, channels)
    rounds: list[RoundRecord] = []
    for server_round in range(1, cfg.num_rounds + 1):
        start = time.perf_counter()
        chosen = sample_clients(
            cfg.seed, server_round, cfg.num_clients, cfg.clients_per_round
        )
        states, clients = train_clients(
            cfg,
            spec,
            model,
            global_state,
            attack,
            chosen,
            server_round,
            client_tensors,
            memories,
        )
        train_seconds = time.perf_counter() - start

        rejected = screen_updates(
            {k: v.numpy() for k, v in global_state.items()},
            states,  # screen_updates reads .keys() and [k].numpy(): tensors do
            max_norm_ratio=cfg.server.max_norm_ratio,
            max_norm=cfg.server.max_norm,
        )
        kept = [cid for cid in states if cid not in rejected]

        defense_start = time.perf_counter()
        confidence: dict[str, float] | None = None
        flagged: list[str] = []
        weights = dict.fromkeys(kept, 1.0)
        if defender is not None and kept:
            job = defender.job_for_round(server_round, len(kept))
            scores = run_job(job, [states[cid] for cid in kept])
            confidence = dict(zip(kept, scores.tolist(), strict=True))
            flagged, weights = feddefender_weights(confidence, float(cfg.defense.theta))
        defense_seconds = time.perf_counter() - defense_start
        weights = {cid: clients[cid]["num-examples"] * weights[cid] for cid in kept}
        survivors = [cid for cid in kept if weights[cid] > 0.0]
        if survivors:
            global_state = fedavg(
                [states[cid] for cid in survivors],
                [weights[cid] for cid in survivors],
            )
        shares = normalised(weights)

        for cid in chosen:  # the first attacker's trigger, as the server takes it
            trigger = (
                attack.published(memories.get(cid, {})) if str(cid) in malicious else {}
            )
            if trigger:
                published = trigger
                break
        eval_start = time.perf_counter()
        metrics = evaluator(global_state, published)
        eval_seconds = time.perf_counter() - eval_start
        participants = [str(c) for c in chosen]
        detection = round_detection(
            {*flagged, *rejected},
            malicious,
            participants,
            shares,
            attacks=attack.attacks_in(server_round),
            scored=confidence is not None or bool(rejected),
        )
        rounds.append(
            RoundRecord(
                round=server_round,
                accuracy=metrics["accuracy"],
                loss=metrics["loss"],
                asr=metrics.get("asr"),
                malicious_confidence=confidence,
                flagged=flagged if confidence is not None else None,
                rejected=rejected,
                **detection,
                weights=shares,
                participants=participants,
                clients=clients,
                train_seconds=train_seconds,
                defense_seconds=defense_seconds,
                eval_seconds=eval_seconds,
                seconds=time.perf_counter() - start,
            )
        )

    last = rounds[-1]
    return {
        "name": cfg.name,
        "malicious_clients": malicious,
        "data_source": data.source,
        "rounds": [r.to_dict() for r in rounds],
        "final": {"accuracy": last.accuracy, "loss": last.loss, "asr": last.asr},
        "final_state": global_state,
        "num_threads": torch.get_num_threads(),
        "seconds": time.perf_counter() - started,
    }
