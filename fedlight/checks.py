"""Config validation before any expensive work: one line per problem.

Each check names the key, the value and what is allowed, so a typo fails in
milliseconds instead of after Ray has started (or, with a GPU request on a
machine without one, instead of Ray waiting forever on an empty actor pool).
The chosen defence and attack check their own parameters
(:func:`fedlight.params.build_params` over the dataclass each declares); this
module only loops over them and checks the keys no plug-in owns.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from fedlight.attacks import ATTACKS, Attack
from fedlight.data import DATASETS, PARTITIONS
from fedlight.defenses import DEFENSES, Defense, DefenseContext
from fedlight.models import MODELS
from fedlight.models.kernels import MEMORY_FORMATS, OPTIMIZERS
from fedlight.params import ConfigError, RunFacts, build_params
from fedlight.registry import Plugin, Registry
from fedlight.tracking import MODES

DEVICES = ("cpu", "cuda")


__all__ = ["ConfigError", "build_attack", "build_defense", "check_config"]


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def _one_of(cfg: DictConfig, key: str, allowed: tuple[str, ...] | dict) -> None:
    value = cfg_get(cfg, key)
    if value not in allowed:
        _fail(key, value, "one of " + ", ".join(allowed))


def _int_in(cfg: DictConfig, key: str, low: int, high: int | None = None) -> None:
    value = cfg_get(cfg, key)
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        bound = (
            f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        )
        _fail(key, value, bound)


def _number_in(
    cfg: DictConfig,
    key: str,
    low: float,
    high: float | None = None,
    open_low: bool = False,
) -> None:
    value = cfg_get(cfg, key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = value > low if open_low else value >= low
        if high is not None:
            ok = ok and value <= high
    if not ok:
        low_s = f"> {low}" if open_low else f">= {low}"
        _fail(
            key,
            value,
            f"a number {low_s}" + (f" and <= {high}" if high is not None else ""),
        )


def cfg_get(cfg: DictConfig, key: str) -> Any:
    """``cfg`` at a dotted key, None where absent."""
    node: Any = cfg
    for part in key.split("."):
        if node is None or part not in node:
            return None
        node = node[part]
    return node


def gpus_visible() -> int:
    """GPUs this process can use (a CUDA build on a machine without one sees 0)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_gpu_budget(cfg: DictConfig, cluster: dict[str, float]) -> None:
    """Fail if the defender's GPU share cannot be placed beside the clients'.

    Flower sizes its actor pool from the cluster's totals, so client actors with a
    GPU share fill every GPU; a defender that also wants one would wait forever.
    """
    res = cfg.simulation.client_resources
    wanted = float(cfg.defense.get("num_gpus") or 0.0)
    gpus, cpus = cluster.get("GPU", 0.0), cluster.get("CPU", 0.0)
    if wanted == 0:
        return
    if wanted > gpus:
        _fail("defense.num_gpus", wanted, f"at most the cluster's {gpus:g} GPUs")
    if res.num_gpus > 0:
        actors = min(int(gpus / res.num_gpus), int(cpus / res.num_cpus))
        if actors * res.num_gpus + wanted > gpus + 1e-9:
            _fail(
                "defense.num_gpus",
                wanted,
                f"room beside {actors} client actors of "
                f"{res.num_gpus:g} GPU on {gpus:g} GPUs: lower "
                "simulation.client_resources.num_gpus or simulation.num_cpus",
            )


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first value that cannot work."""
    _int_in(cfg, "seed", 0)
    _int_in(cfg, "num_rounds", 1)
    _int_in(cfg, "num_clients", 1)
    _int_in(cfg, "clients_per_round", 1, cfg.num_clients)
    _one_of(cfg, "device", DEVICES)
    _int_in(cfg, "client.epochs", 1)
    _number_in(cfg, "client.lr", 0.0, open_low=True)
    _int_in(cfg, "client.batch_size", 1)
    _one_of(cfg, "client.optimizer", OPTIMIZERS)
    if cfg_get(cfg, "client.fused_optimizer") not in (None, True, False):
        _fail("client.fused_optimizer", cfg.client.fused_optimizer, "true or false")

    _one_of(cfg, "dataset.name", DATASETS)
    _int_in(cfg, "dataset.image_size", 8)
    if cfg.dataset.max_train_samples is not None:
        _int_in(cfg, "dataset.max_train_samples", cfg.num_clients)
    _one_of(cfg, "model.name", MODELS)
    if cfg_get(cfg, "model.memory_format") is not None:
        _one_of(cfg, "model.memory_format", MEMORY_FORMATS)
    _one_of(cfg, "partition.name", PARTITIONS)
    if cfg.partition.name == "dirichlet":
        _number_in(cfg, "partition.alpha", 0.0, open_low=True)

    _int_in(cfg, "server.max_attackers", 0, max(cfg.num_clients - 1, 0))
    build_attack(cfg)
    defense = cfg.defense
    plugin_params(cfg, DEFENSES)
    res = cfg.simulation.client_resources
    _number_in(cfg, "simulation.client_resources.num_cpus", 0.0, open_low=True)
    _number_in(cfg, "simulation.client_resources.num_gpus", 0.0)
    _number_in(cfg, "simulation.round_timeout_s", 0.0, open_low=True)
    _number_in(cfg, "simulation.min_replies", 0.0, 1.0, open_low=True)
    if cfg.server.max_norm_ratio is not None:
        _number_in(cfg, "server.max_norm_ratio", 1.0, open_low=True)
    if cfg.server.max_norm is not None:
        _number_in(cfg, "server.max_norm", 0.0, open_low=True)
    for key in ("faults.raise_at", "faults.exit_at"):
        for entry in cfg_get(cfg, key) or []:
            ok = (
                len(entry) == 2
                and all(isinstance(v, int) for v in entry)
                and 0 <= entry[0] < cfg.num_clients
                and 1 <= entry[1] <= cfg.num_rounds
            )
            if not ok:
                _fail(
                    key,
                    OmegaConf.to_container(cfg_get(cfg, key)),
                    f"[[client, round], ...] with client in [0, {cfg.num_clients}) "
                    f"and round in [1, {cfg.num_rounds}]",
                )
    if cfg.wandb.mode is not None:
        _one_of(cfg, "wandb.mode", MODES)

    local = cfg.simulation.ray_address is None
    wants_gpu = res.num_gpus > 0 or cfg.device == "cuda" or defense.get("num_gpus", 0)
    if local and wants_gpu and gpus_visible() == 0:
        key, value = (
            ("device", cfg.device)
            if cfg.device == "cuda"
            else ("simulation.client_resources.num_gpus", res.num_gpus)
            if res.num_gpus > 0
            else ("defense.num_gpus", defense.num_gpus)
        )
        _fail(key, value, "no GPU is visible here; use device=cpu and num_gpus=0")
    if cfg.device == "cuda" and res.num_gpus == 0:
        _fail(
            "simulation.client_resources.num_gpus",
            res.num_gpus,
            "a GPU share > 0 (e.g. 0.25) when device=cuda: Ray hides GPUs from "
            "actors that reserve none",
        )
    if res.num_gpus > 1 and res.num_gpus != int(res.num_gpus):
        _fail(
            "simulation.client_resources.num_gpus",
            res.num_gpus,
            "a fraction <= 1 or a whole number of GPUs",
        )


def run_facts(cfg: DictConfig) -> RunFacts:
    """What plug-ins check their parameters against."""
    return RunFacts(
        num_clients=cfg.num_clients,
        clients_per_round=cfg.clients_per_round,
        num_rounds=cfg.num_rounds,
        num_classes=DATASETS[cfg.dataset.name].num_classes,
        image_size=cfg.dataset.image_size,
    )


def chosen(cfg: DictConfig, registry: Registry) -> Plugin:
    """The plug-in ``cfg.<group>.name`` names, or a one-line error."""
    node = cfg_get(cfg, registry.group)
    name = node.get("name") if node is not None else None
    if name not in registry:
        _fail(f"{registry.group}.name", name, "one of " + ", ".join(registry.names()))
    return registry.get(name)


def plugin_params(cfg: DictConfig, registry: Registry) -> tuple[Plugin, Any]:
    """The chosen plug-in and its parameters, checked (one line naming it on error)."""
    plugin = chosen(cfg, registry)
    values = OmegaConf.to_container(cfg[registry.group], resolve=True)
    values.pop("name")
    params = build_params(
        plugin.params,
        values,
        key=registry.group,
        owner=f"{registry.group}={plugin.name}",
        facts=run_facts(cfg),
    )
    return plugin, params


def build_attack(cfg: DictConfig) -> Attack:
    """The run's attack, its parameters checked (an attack is its own params).

    An attack that knows the run's seed (a white-box attacker regenerating the
    server's seeded inputs) declares ``run_seed``; null is the run's ``seed``.
    """
    attack = plugin_params(cfg, ATTACKS)[1]
    if getattr(attack, "run_seed", 0) is None:
        attack.run_seed = int(cfg.seed)
    return attack


def build_defense(cfg: DictConfig, context: DefenseContext) -> Defense:
    """The run's defence, its parameters checked."""
    plugin, params = plugin_params(cfg, DEFENSES)
    return plugin.cls(params, context)
