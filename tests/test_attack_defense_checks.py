"""The attack and defence keys added for the comparison study: bad values fail
before any work with one line naming the key; the sweeps the README documents
compose and instantiate."""

from __future__ import annotations

import pytest
from flwr.serverapp.strategy import FedAvg
from hydra.utils import instantiate

from fedlight.attacks import Attack, NoAttack
from fedlight.checks import ConfigError, check_config
from fedlight.defenses import DefenseContext, DefenseStrategy
from support import compose_config

BAD = [
    (["attack.num_malicious=21"], "attack.num_malicious"),
    (["attack.num_malicious=-1"], "attack.num_malicious"),
    (["attack.scale=0"], "attack.scale"),
    (["attack=blended", "attack.blend_ratio=0"], "attack.blend_ratio"),
    (["attack=blended", "attack.blend_ratio=1.5"], "attack.blend_ratio"),
    (["attack=blended", "attack.pattern_seed=-3"], "attack.pattern_seed"),
    (["attack=dba", "attack.num_parts=0"], "attack.num_parts"),
    (["attack=dba", "attack.num_parts=13"], "attack.num_parts"),
    (["defense=normclip", "defense.max_norm=0"], "defense.max_norm"),
    (["defense=normclip", "defense.variant=layers"], "defense.variant"),
    (["defense=krum", "defense.num_malicious_nodes=-1"], "defense.num_malicious_nodes"),
    (["defense=krum", "defense.num_malicious_nodes=20"], "defense.num_malicious_nodes"),
    (
        ["defense=multikrum", "defense.num_nodes_to_select=0"],
        "defense.num_nodes_to_select",
    ),
    (
        ["defense=multikrum", "defense.num_nodes_to_select=21"],
        "defense.num_nodes_to_select",
    ),
    (["defense=trimmed_mean", "defense.beta=0.5"], "defense.beta"),
    (["defense=trimmed_mean", "defense.beta=-0.1"], "defense.beta"),
    (["defense=trimmed_mean", "defense.beta=abc"], "defense.beta"),
]


@pytest.mark.parametrize(("overrides", "key"), BAD)
def test_bad_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        check_config(compose_config(overrides))
    assert key in str(err.value) and "\n" not in str(err.value)


GOOD = [
    ["attack.num_malicious=3"],
    ["attack.scale=20"],
    ["attack=dba", "attack.num_parts=4"],
    ["defense=normclip", "defense.max_norm=10", "defense.variant=weights"],
    ["defense=trimmed_mean", "defense.beta=0.2"],
    ["defense=multikrum", "defense.num_malicious_nodes=2"],
]


@pytest.mark.parametrize("overrides", GOOD)
def test_good_values_pass(overrides):
    check_config(compose_config(overrides))


ATTACKS = ["backdoor", "blended", "dba", "label_flip", "none"]
DEFENSES = [
    "none",
    "normclip",
    "normclip_weights",
    "krum",
    "multikrum",
    "bulyan",
    "median",
    "trimmed_mean",
    "feddefender",
]


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("experiment", ["mnist_20", "fmnist_30_3attackers"])
def test_every_attack_sweeps_over_an_experiment(experiment, attack):
    """``+experiment=E attack=A``: the experiment's backdoor threat model merges
    into every attack's config; each attack takes what is its own."""
    cfg = compose_config([f"+experiment={experiment}", f"attack={attack}"])
    check_config(cfg)
    built = instantiate(cfg.attack)
    assert isinstance(built, Attack)
    if attack == "none":
        assert isinstance(built, NoAttack) and built.malicious_clients == []
    elif experiment == "fmnist_30_3attackers":
        assert built.malicious_clients == [0, 1, 2]


@pytest.mark.parametrize("defense", DEFENSES)
def test_every_defense_sweeps_over_an_experiment(defense):
    cfg = compose_config(["+experiment=fmnist_30_3attackers", f"defense={defense}"])
    check_config(cfg)
    ctx = DefenseContext("convnet", 10, (1, 32, 32), 0.1, 0.3, 0, num_attackers=3)
    strategy = instantiate(cfg.defense)(inner=FedAvg(), context=ctx)
    assert isinstance(strategy, DefenseStrategy)
    if hasattr(strategy, "num_malicious_nodes"):
        assert strategy.num_malicious_nodes == 3, "f follows the attack when null"
