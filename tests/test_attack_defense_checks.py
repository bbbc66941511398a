"""The attack and defence keys added for the comparison study: bad values fail
before any work with one line naming the key and the plug-in; the sweeps the
README documents compose and build."""

from __future__ import annotations

import pytest

import fedlight.simulate
from fedlight.attacks import ATTACKS as ATTACK_REGISTRY
from fedlight.attacks import Attack
from fedlight.attacks.none import NoAttack
from fedlight.checks import ConfigError, build_attack, build_defense, check_config
from fedlight.defenses import DEFENSES as DEFENSE_REGISTRY
from fedlight.defenses import Defense, DefenseContext
from fedlight.defenses.base import assumed_attackers
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


# Every registered plug-in, and the one preset config of a defence.
ATTACKS = ATTACK_REGISTRY.names()
DEFENSES = [*DEFENSE_REGISTRY.names(), "normclip_weights"]


def test_the_sweeps_cover_the_shipped_plugins():
    # The registry is what sweeps and reports iterate over: guard against a
    # plug-in module that no longer registers.
    assert {"backdoor", "blended", "dba", "label_flip", "none"} <= set(ATTACKS)
    assert {
        "none",
        "normclip",
        "krum",
        "multikrum",
        "bulyan",
        "median",
        "trimmed_mean",
        "feddefender",
        "feddefender_robust",
    } <= set(DEFENSES)


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("experiment", ["mnist_20", "fmnist_30_3attackers"])
def test_every_attack_sweeps_over_an_experiment(experiment, attack):
    """``+experiment=E attack=A``: experiments set only keys every attack has
    (malicious_clients, num_malicious, boost, scale), so each attack composes
    with the experiment's threat model and passes the checks."""
    cfg = compose_config([f"+experiment={experiment}", f"attack={attack}"])
    assert cfg.attack.name == attack
    check_config(cfg)
    built = build_attack(cfg)
    assert isinstance(built, Attack) and built.name == attack
    assert isinstance(built, ATTACK_REGISTRY.get(attack).cls)
    if attack == "none":
        assert isinstance(built, NoAttack) and built.malicious_clients == []
    elif experiment == "fmnist_30_3attackers":
        assert built.malicious_clients == [0, 1, 2]
    else:
        assert built.malicious_clients == [0]
    assert built.boost == 20


def context(cfg) -> DefenseContext:
    return DefenseContext(
        "convnet",
        10,
        (1, 32, 32),
        0.1,
        0.3,
        0,
        max_attackers=cfg.server.max_attackers,
    )


def attacker_bound(defense: Defense) -> int | None:
    """The number of attackers ``defense`` assumes (None if it assumes none)."""
    if hasattr(defense, "num_malicious"):  # Krum, Multi-Krum
        return defense.num_malicious
    if hasattr(defense, "num_attackers"):  # FedDefender and its robust variant
        return defense.num_attackers
    if hasattr(defense.params, "num_malicious_nodes"):  # Bulyan, trimmed mean
        return assumed_attackers(defense.params.num_malicious_nodes, defense.context)
    return None


# The defences that assume a number of attackers (the others use none).
BOUNDED = {
    "krum",
    "multikrum",
    "bulyan",
    "dnc",
    "trimmed_mean",
    "feddefender",
    "feddefender_robust",
}


@pytest.mark.parametrize("defense", DEFENSES)
def test_every_defense_sweeps_over_an_experiment(defense):
    cfg = compose_config(["+experiment=fmnist_30_3attackers", f"defense={defense}"])
    check_config(cfg)
    assert cfg.server.max_attackers == 3
    built = build_defense(cfg, context(cfg))
    assert isinstance(built, Defense)
    assert built.label == defense.removesuffix("_weights") == cfg.defense.name
    bound = attacker_bound(built)
    if defense not in BOUNDED:
        assert bound is None
    else:
        assert bound == 3, "f follows server.max_attackers when null"
        # The server's bound, never the attack's ground truth: no attacker at all,
        # or a lower bound, changes f only through server.max_attackers.
        for extra, expected in (
            (["attack=none"], 3),
            (["attack.num_malicious=1"], 3),
            (["server.max_attackers=2"], 2),
        ):
            other = compose_config(
                ["+experiment=fmnist_30_3attackers", f"defense={defense}", *extra]
            )
            check_config(other)
            assert attacker_bound(build_defense(other, context(other))) == expected


def test_duplicate_malicious_clients_are_refused_in_one_line():
    with pytest.raises(ConfigError) as err:
        check_config(compose_config(["attack.malicious_clients=[0,0]"]))
    msg = str(err.value)
    assert msg.startswith("attack.malicious_clients=[0, 0] is not allowed")
    assert "attack=backdoor" in msg and "distinct" in msg and "\n" not in msg


@pytest.mark.parametrize(
    ("overrides", "key", "owner"),
    [
        (["defense=krum", "+defense.bogus=1"], "defense.bogus", "defense=krum"),
        (["+attack.bogus=1"], "attack.bogus", "attack=backdoor"),
        (
            ["attack=label_flip", "+attack.trigger_size=12"],
            "attack.trigger_size",
            "attack=label_flip",
        ),
        (
            ["defense=median", "+defense.num_malicious_nodes=1"],
            "defense.num_malicious_nodes",
            "defense=median",
        ),
    ],
)
def test_an_unknown_key_of_a_plugin_is_refused_before_data_or_ray(
    overrides, key, owner, monkeypatch, tmp_path
):
    cfg = compose_config(overrides)
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    msg = str(err.value)
    assert msg.startswith(f"{key}=") and f"({owner}): not a parameter; it has " in msg
    assert "\n" not in msg

    def forbidden(*args, **kwargs):
        raise AssertionError("data loaded or Ray started before the config check")

    monkeypatch.setattr(fedlight.simulate, "prepare_experiment", forbidden)
    monkeypatch.setattr(fedlight.simulate, "load_dataset", forbidden)
    monkeypatch.setattr(fedlight.simulate, "start_ray", forbidden)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        fedlight.simulate.simulate(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("group", "name"),
    [("defense", n) for n in DEFENSE_REGISTRY.names()]
    + [("attack", n) for n in ATTACK_REGISTRY.names()],
)
def test_every_plugin_refuses_a_key_it_does_not_have(group, name):
    cfg = compose_config([f"{group}={name}", f"+{group}.bogus=1"])
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert str(err.value).startswith(
        f"{group}.bogus=1 is not allowed ({group}={name}): not a parameter; it has "
    )
