"""Every config group builds; every experiment composes; bad input fails fast."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fedlight.attacks import ATTACKS, Attack
from fedlight.checks import ConfigError, build_attack, build_defense, check_config
from fedlight.defenses import DEFENSES, Defense, DefenseContext
from fedlight.models import build_model
from fedlight.params import defaults
from support import REPO, compose_config

CONFIGS = REPO / "configs"


def options(group: str) -> list[str]:
    """A group's options: its YAML files, and for the plug-in groups every
    registered name (their options have no files, bar presets)."""
    names = {p.stem for p in (CONFIGS / group).glob("*.yaml")}
    registry = {"attack": ATTACKS, "defense": DEFENSES}.get(group)
    if registry is not None:
        names |= set(registry.names())
    return sorted(names)


@pytest.mark.parametrize("group", ["attack", "defense"])
def test_plugin_options_have_no_yaml_but_presets(group):
    # The registered plug-ins make the options; a YAML file of a plug-in's own
    # name would be a second source of its defaults. What files remain are
    # presets: another name, no _target_, composing to a registered plug-in.
    registry = {"attack": ATTACKS, "defense": DEFENSES}[group]
    files = sorted((CONFIGS / group).glob("*.yaml"))
    assert not [p.stem for p in files if p.stem in registry]
    for path in files:
        assert "_target_" not in path.read_text()
        assert compose_config([f"{group}={path.stem}"])[group].name in registry
    if group == "defense":
        assert [p.stem for p in files] == ["normclip_weights"]


@pytest.mark.parametrize(
    ("group", "name"),
    [("attack", n) for n in ATTACKS.names()]
    + [("defense", n) for n in DEFENSES.names()],
)
def test_every_plugin_option_is_its_name_and_declared_defaults(group, name):
    cfg = compose_config([f"{group}={name}"])
    registry = {"attack": ATTACKS, "defense": DEFENSES}[group]
    node = OmegaConf.to_container(cfg[group], resolve=True)
    assert node == {"name": name, **defaults(registry.get(name).params)}
    assert "_target_" not in node and "_partial_" not in node


@pytest.mark.parametrize("name", options("attack"))
def test_every_attack_instantiates(name):
    cfg = compose_config([f"attack={name}"])
    attack = build_attack(cfg)
    assert isinstance(attack, Attack)
    assert isinstance(attack, ATTACKS.get(name).cls) and attack.name == name
    check_config(cfg)


@pytest.mark.parametrize("name", options("defense"))
def test_every_defense_instantiates(name):
    cfg = compose_config([f"defense={name}"])
    ctx = DefenseContext("convnet", 10, (1, 32, 32), 0.1, 0.3, 0)
    defense = build_defense(cfg, ctx)
    assert isinstance(defense, Defense)
    assert isinstance(defense, DEFENSES.get(cfg.defense.name).cls)
    assert defense.label == cfg.defense.name
    check_config(cfg)


def test_normclip_weights_is_a_preset_of_normclip():
    cfg = compose_config(["defense=normclip_weights"])
    assert cfg.defense.name == "normclip"
    assert (cfg.defense.variant, cfg.defense.max_norm) == ("weights", 10)


@pytest.mark.parametrize("name", options("model"))
def test_every_model_config_builds(name):
    cfg = compose_config([f"model={name}"])
    import torch

    model = build_model(cfg.model.name, 10, 1).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("group", ["dataset", "partition", "simulation"])
def test_every_option_composes_and_passes_checks(group):
    for name in options(group):
        check_config(compose_config([f"{group}={name}"]))


@pytest.mark.parametrize("name", options("experiment"))
def test_every_experiment_composes_with_smoke_overrides(name):
    full = compose_config([f"+experiment={name}"])
    follows = full.clients_per_round == full.num_clients
    overrides = ["num_clients=6", "num_rounds=2"]
    if not follows:  # e.g. mnist_1000 samples 50 clients a round
        overrides.append("clients_per_round=6")
    cfg = compose_config([f"+experiment={name}", *overrides])
    check_config(cfg)
    assert cfg.name == name
    assert cfg.clients_per_round == 6
    assert cfg.num_rounds == 2


def test_paper_setting_mnist_20():
    cfg = compose_config(["+experiment=mnist_20"])
    assert (cfg.num_clients, cfg.clients_per_round, cfg.num_rounds) == (20, 20, 15)
    assert (cfg.client.epochs, cfg.client.batch_size, cfg.client.lr) == (5, 32, 0.001)
    assert cfg.model.name == "convnet" and cfg.partition.name == "iid"
    assert list(cfg.attack.malicious_clients) == [0]
    assert (cfg.attack.trigger_size, cfg.attack.boost) == (12, 20)
    # The trigger is the backdoor attack's code defaults, not restated in YAML.
    assert (cfg.attack.poison_fraction, cfg.attack.target_label) == (0.5, 9)
    assert cfg.attack.name == "backdoor"
    assert cfg.defense.name == "feddefender"
    assert cfg.server.max_attackers == 1


THREE_ATTACKERS = {
    "fmnist_30_3attackers",
    "mnist_20_dba",
    "mnist_20_dirichlet05_3attackers",
}


@pytest.mark.parametrize("name", options("experiment"))
def test_every_experiment_inherits_mnist_20s_threat_model(name):
    """Experiments inherit mnist_20 and override what they change; the server's
    attacker bound is 3 exactly where three clients attack."""
    cfg = compose_config([f"+experiment={name}"])
    assert cfg.name == name
    assert cfg.client.epochs == 5 and cfg.num_rounds == 15
    assert cfg.attack.boost == (1 if name == "mnist_20_scaling" else 20)
    assert cfg.attack.scale == (20 if name == "mnist_20_scaling" else 1)
    assert cfg.defense.name == "feddefender"
    attack = build_attack(cfg)
    if name == "mnist_20_noattack":
        assert attack.name == "none" and attack.malicious_clients == []
    elif name in THREE_ATTACKERS:
        assert attack.malicious_clients == [0, 1, 2]
    else:
        assert attack.malicious_clients == [0]
    assert cfg.server.max_attackers == (3 if name in THREE_ATTACKERS else 1)
    if attack.name in ("backdoor", "dba"):
        assert (attack.trigger_size, attack.target_label) == (12, 9)
        assert attack.poison_fraction == 0.5


BAD = [
    (["model=resnet18", "model.name=resnet99"], "model.name"),
    (["dataset.name=cifar"], "dataset.name"),
    (["partition.name=shards"], "partition.name"),
    (["attack.malicious_clients=[20]"], "attack.malicious_clients"),
    (["attack.malicious_clients=[-1]"], "attack.malicious_clients"),
    (["clients_per_round=21"], "clients_per_round"),
    (["defense.theta=1.5"], "defense.theta"),
    (["defense.theta=-0.1"], "defense.theta"),
    (["defense=feddefender_robust", "defense.fingerprint=bool"], "defense.fingerprint"),
    (["defense=feddefender_robust", "defense.inputs=images"], "defense.inputs"),
    (["defense=feddefender_robust", "defense.reference=best"], "defense.reference"),
    (["defense=feddefender_robust", "defense.z_cut=0"], "defense.z_cut"),
    (["defense=feddefender_robust", "defense.steps=-1"], "defense.steps"),
    (["defense=feddefender_robust", "defense.memory_decay=1"], "defense.memory_decay"),
    (
        ["defense=feddefender_robust", "defense.cap_examples=0.5"],
        "defense.cap_examples",
    ),
    (["attack.poison_fraction=2"], "attack.poison_fraction"),
    (["attack.target_label=10"], "attack.target_label"),
    (
        ["simulation.client_resources.num_gpus=0.5"],
        "simulation.client_resources.num_gpus",
    ),
    (["device=cuda"], "device"),
    (["defense.engine=fast"], "defense.engine"),
    (["num_rounds=0"], "num_rounds"),
    (["wandb.mode=maybe"], "wandb.mode"),
    (["num_clients=0"], "num_clients"),
    (["num_clients=abc"], "num_clients"),
    (["seed=-1"], "seed"),
    (["clients_per_round=0"], "clients_per_round"),
    (["client.epochs=0"], "client.epochs"),
    (["client.lr=-0.1"], "client.lr"),
    (["client.batch_size=0"], "client.batch_size"),
    (["client.optimizer=rmsprop"], "client.optimizer"),
    (["client.fused_optimizer=maybe"], "client.fused_optimizer"),
    (["model.memory_format=nhwc"], "model.memory_format"),
    (["dataset.image_size=4"], "dataset.image_size"),
    (["dataset.max_train_samples=5"], "dataset.max_train_samples"),
    (["partition=dirichlet", "partition.alpha=0"], "partition.alpha"),
    (["attack.trigger_size=40"], "attack.trigger_size"),
    (["attack.trigger_size=0"], "attack.trigger_size"),
    (["attack.boost=0"], "attack.boost"),
    (["attack=label_flip", "attack.flip_fraction=1.5"], "attack.flip_fraction"),
    (["attack=broken_update", "attack.kind=zero"], "attack.kind"),
    (["attack=broken_update", "attack.kind=nan"], "attack.kind"),
    (["defense.num_inputs=0"], "defense.num_inputs"),
    (["defense.num_attackers=20"], "defense.num_attackers"),
    (
        ["simulation.client_resources.num_cpus=0"],
        "simulation.client_resources.num_cpus",
    ),
    (["simulation.round_timeout_s=0"], "simulation.round_timeout_s"),
    (["simulation.min_replies=1.5"], "simulation.min_replies"),
    (["server.max_norm_ratio=0.5"], "server.max_norm_ratio"),
    (["server.max_norm=-1"], "server.max_norm"),
    (["faults.raise_at=[[25,1]]"], "faults.raise_at"),
    (["faults.exit_at=[[1,99]]"], "faults.exit_at"),
    (["device=tpu"], "device"),
    (["defense.num_gpus=1"], "defense.num_gpus"),
    (["defense.inference_guided=true", "defense.eta=0"], "defense.eta"),
    (["defense.inference_guided=true", "defense.pool_size=5"], "defense.pool_size"),
]


@pytest.mark.parametrize(("overrides", "key"), BAD)
def test_bad_values_name_the_key(overrides, key):
    from fedlight.checks import gpus_visible

    if "cuda" in str(overrides) or "num_gpus=" in str(overrides):
        if gpus_visible():
            pytest.skip("a GPU is visible here")
    with pytest.raises(ConfigError) as err:
        check_config(compose_config(overrides))
    message = str(err.value)
    assert key in message and "\n" not in message


def run_cli(
    *overrides: str, env_extra: dict[str, str] | None = None, cwd: Path | None = None
):
    import os

    env = {**os.environ, "WANDB_MODE": "disabled", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "fedlight.run", *overrides],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["attack.malicious_clients=[25]"], "attack.malicious_clients"),
        (["+experiment=mnist_20", "defense.theta=2"], "defense.theta"),
        (
            ["simulation.client_resources.num_gpus=1"],
            "simulation.client_resources.num_gpus",
        ),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tmp_path, overrides, key):
    from fedlight.checks import gpus_visible

    if "num_gpus" in key and gpus_visible():
        pytest.skip("a GPU is visible here")
    proc = run_cli(
        *overrides,
        f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path,
        env_extra={"PYTHONPROFILEIMPORTTIME": "1"},  # each import on stderr
    )
    assert proc.returncode == 2, proc.stderr
    imported, lines = set(), []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:"):
            imported.add(line.rsplit("|", 1)[1].strip())
        elif line.strip():
            lines.append(line)
    assert len(lines) == 1 and key in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    # The error comes before the run's heavy imports (seconds on 2 cores).
    heavy = {"pytorch_lightning", "ray", "flwr_datasets", "flwr.simulation", "wandb"}
    assert "torch" in imported and not heavy & imported, sorted(heavy & imported)


def test_cli_unknown_group_option_lists_choices(tmp_path):
    proc = run_cli("attack=trojan", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert proc.returncode != 0
    assert "attack" in proc.stderr and "backdoor" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_missing_explicit_data_root_fails_without_fallback(tmp_path):
    empty = tmp_path / "nodata"
    empty.mkdir()
    proc = run_cli(
        f"dataset.root={empty}", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr
    assert str(empty) in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "results.json").exists()


def test_resolved_config_is_plain_yaml():
    cfg = compose_config(["+experiment=fmnist_30"])
    text = OmegaConf.to_yaml(cfg, resolve=True)
    assert "fmnist" in text and "${" not in text


def test_defender_gpu_share_must_fit_beside_the_clients():
    from fedlight.checks import check_gpu_budget

    cfg = compose_config(
        ["simulation.client_resources.num_gpus=0.25", "defense.num_gpus=0.25"]
    )
    with pytest.raises(ConfigError, match="defense.num_gpus"):
        check_gpu_budget(cfg, {"CPU": 16.0, "GPU": 1.0})
    check_gpu_budget(cfg, {"CPU": 3.0, "GPU": 1.0})  # 3 clients + the defender fit
    with pytest.raises(ConfigError, match="defense.num_gpus"):
        check_gpu_budget(cfg, {"CPU": 16.0, "GPU": 0.0})
