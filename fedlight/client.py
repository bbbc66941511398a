"""The Flower ClientApp: one Lightning fit of a client's partition per message.

Flower pickles the ClientApp with every message it hands to a Ray actor, so the
app carries only a small :class:`ClientSpec`; the training data travels once
through Ray's object store (read zero-copy by every actor on a node) and is
cached per actor process.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedlight.attacks import Attack
from fedlight.attacks.base import MEASUREMENT_KEY
from fedlight.checkpoint import load_memory, save_memory
from fedlight.models import build_model
from fedlight.models.module import Classifier, TensorBatches
from fedlight.seeding import derive_seed

_QUIET_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric")


@dataclass
class ClientSpec:
    """Everything a client needs besides the global weights, kept small."""

    data: Any  # a ray.ObjectRef to the data bundle, or the bundle itself
    model: str
    num_classes: int
    in_channels: int
    attack: Attack
    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 32
    optimizer: str = "adam"
    memory_format: str = "contiguous"  # fedlight.models.kernels
    fused_optimizer: bool = False
    device: str = "cpu"
    seed: int = 0
    num_threads: int = 1
    faults: dict[str, list[list[int]]] = field(default_factory=dict)
    # An attack's memory across rounds, also on disk (fedlight.checkpoint): the
    # folder (None: only in Flower's per-node state) and the checkpoint's round
    # a resumed run restarts after (0: a new run, nothing to read back).
    memory_dir: str | None = None
    resumed_after: int = 0


_bundle_cache: dict[str, dict[str, Any]] = {}


def resolve_bundle(data: Any) -> dict[str, Any]:
    """The data bundle behind ``data``, fetched from Ray once per process."""
    if isinstance(data, dict):
        return data
    import ray

    key = data.hex()
    if key not in _bundle_cache:
        _bundle_cache.clear()
        _bundle_cache[key] = ray.get(data)
    return _bundle_cache[key]


def partition_size(spec: ClientSpec, client_id: int) -> int:
    """How many images the client holds: what its count is reported from (an
    attacker's boosted by ``attack.boost``), not the training set an attack
    made from them (the gated white-box attacker adds partial-trigger copies;
    counting those would boost it beyond ``boost``)."""
    return len(resolve_bundle(spec.data)["partitions"][client_id])


def client_data(
    spec: ClientSpec, client_id: int, poisoned: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The client's partition, poisoned if the attack names this client (and
    ``poisoned``: an attacker outside its scheduled rounds trains on clean data).

    Poisoning is seeded by (seed, client) only, so an attacker poisons the same
    samples every round, as a data-poisoning attacker with a fixed dataset does.
    """
    bundle = resolve_bundle(spec.data)
    idx = bundle["partitions"][client_id]
    x = torch.from_numpy(np.ascontiguousarray(bundle["train_x"][idx]))
    y = torch.from_numpy(np.ascontiguousarray(bundle["train_y"][idx]))
    if not poisoned:
        return x, y
    generator = torch.Generator().manual_seed(
        derive_seed(spec.seed, "poison", client_id)
    )
    return spec.attack.poison(client_id, x, y, bundle["pixel_max"], generator)


def prepare_data(
    spec: ClientSpec,
    client_id: int,
    server_round: int,
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    memory: dict[str, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """An active attacker's data for this round (:meth:`Attack.prepare`).

    ``model`` holds the global weights; the attack's random stream is seeded by
    (seed, client, round). The Lightning client and the reference loop both call
    this, between poisoning and the training hooks.
    """
    generator = torch.Generator().manual_seed(
        derive_seed(spec.seed, "prepare", client_id, server_round)
    )
    pixel_max = resolve_bundle(spec.data)["pixel_max"]
    return spec.attack.prepare(
        client_id, server_round, model, x, y, pixel_max, memory, generator
    )


def quiet_lightning() -> None:
    """Silence Lightning's per-fit banners and known deprecation noise."""
    for name in _QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level != logging.WARNING:  # setLevel clears every logger's cache
            logger.setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*litlogger.*")
    # Lightning 2.6 + torch 2.14 warn on every batch about LeafSpec; the warning
    # machinery alone costs ~25% of a tiny model's training time.
    warnings.filterwarnings("ignore", message=".*treespec.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")


def fit_client(
    spec: ClientSpec,
    client_id: int,
    state: dict[str, torch.Tensor],
    server_round: int,
    memory: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Train the global ``state`` on the client's data with a quiet Lightning Trainer.

    Returns the new state dict and the metrics the client reports. An attacker
    attacks only in its scheduled rounds (``attack.rounds``); in the others it
    is a benign client. ``memory`` is the client's storage across rounds (the
    attack's; updated in place).
    """
    import pytorch_lightning as pl

    quiet_lightning()
    if spec.device == "cpu":
        # Lightning sets this to 1 on import; then every optimiser step asks
        # NVML (through ctypes) whether CUDA is usable: ~4% of a CPU client's time.
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"
    torch.set_num_threads(max(1, spec.num_threads))
    attack = spec.attack
    active = attack.is_active(client_id, server_round)
    x, y = client_data(spec, client_id, poisoned=active)
    model = build_model(spec.model, spec.num_classes, spec.in_channels)
    model.load_state_dict(state)
    memory = {} if memory is None else memory
    if active:
        x, y = prepare_data(spec, client_id, server_round, model, x, y, memory)
    hooks = (
        attack.training_hooks(client_id, server_round, state, memory)
        if active
        else None
    )
    module = Classifier(
        model,
        lr=spec.lr,
        optimizer=spec.optimizer,
        hooks=hooks,
        memory_format=spec.memory_format,
        fused=spec.fused_optimizer,
    )
    generator = torch.Generator().manual_seed(
        derive_seed(spec.seed, "shuffle", client_id, server_round)
    )
    batches = TensorBatches(x, y, spec.batch_size, generator)
    trainer = pl.Trainer(
        max_epochs=spec.epochs,
        accelerator="gpu" if spec.device == "cuda" else "cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=False,
    )
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=batches)
    metrics = module.train_metrics()
    metrics["fit-seconds"] = time.perf_counter() - start
    metrics["train-examples"] = float(len(y))
    held = partition_size(spec, client_id)
    metrics["num-examples"] = (
        attack.reported_examples(client_id, held) if active else float(held)
    )
    metrics["partition-id"] = float(client_id)
    new_state = {
        k: v.detach().cpu().contiguous() for k, v in module.model.state_dict().items()
    }
    if active:
        new_state = attack.tamper(client_id, state, new_state)
    if attack.is_malicious(client_id):
        attack.observe(client_id, server_round, state, memory)
    return new_state, metrics


class InjectedFault(RuntimeError):
    """Raised by a client that ``faults.raise_at`` tells to fail."""


def inject_faults(
    faults: dict[str, list[list[int]]], client_id: int, server_round: int
) -> None:
    """Fail on purpose where the ``faults`` config says so.

    ``raise_at`` makes the ClientApp raise (Flower reports an error reply);
    ``exit_at`` ends the Ray actor's process, as an out-of-memory kill would.
    """
    here = [client_id, server_round]
    if here in [list(x) for x in faults.get("raise_at", [])]:
        raise InjectedFault(f"client {client_id} fails in round {server_round}")
    if here in [list(x) for x in faults.get("exit_at", [])]:
        os._exit(17)


def client_memory(
    spec: ClientSpec, client_id: int, context: Context
) -> dict[str, torch.Tensor]:
    """The attack's memory: this node's state, or at the node's first fit of a
    resumed run, what the attacker wrote to disk up to the checkpoint's round."""
    if "attack" in context.state:
        return context.state["attack"].to_torch_state_dict()
    if spec.memory_dir is None or not spec.attack.is_malicious(client_id):
        return {}
    return load_memory(Path(spec.memory_dir), client_id, spec.resumed_after)


def make_client_app(spec: ClientSpec) -> ClientApp:
    """A ClientApp that trains (``train``) and reports its partition id (``query``)."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        client_id = int(context.node_config["partition-id"])
        server_round = int(msg.content["config"]["server-round"])
        inject_faults(spec.faults, client_id, server_round)
        state = msg.content["arrays"].to_torch_state_dict()
        memory = client_memory(spec, client_id, context)
        new_state, metrics = fit_client(spec, client_id, state, server_round, memory)
        if memory:  # the attack's storage persists on this node across rounds
            context.state["attack"] = ArrayRecord(memory)
            if spec.memory_dir is not None:
                save_memory(Path(spec.memory_dir), client_id, server_round, memory)
        content = RecordDict(
            {"arrays": ArrayRecord(new_state), "metrics": MetricRecord(metrics)}
        )
        trigger = (
            spec.attack.published(memory) if spec.attack.is_malicious(client_id) else {}
        )
        if trigger:  # for the ASR only: the server removes it before any defence
            content[MEASUREMENT_KEY] = ArrayRecord(trigger)
        return Message(content=content, reply_to=msg)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        client_id = int(context.node_config["partition-id"])
        content = RecordDict({"info": MetricRecord({"partition-id": client_id})})
        return Message(content=content, reply_to=msg)

    return app
