"""The registries: every plug-in is a config option, builds from its declared
defaults and keeps the contract; a bad key fails in one line naming it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from updates import build, judge, make_round

from fedlight.attacks import ATTACKS, Attack
from fedlight.checks import ConfigError, check_config
from fedlight.defenses import DEFENSES, Defense
from fedlight.params import build_params, defaults
from fedlight.registry import Registry
from support import compose_config


def test_every_defence_and_attack_declares_a_doc_a_range_and_its_defaults_pass():
    for plugin in [*DEFENSES, *ATTACKS]:
        assert plugin.summary, f"{plugin.name} has no docstring"
        for f in dataclasses.fields(plugin.params):
            assert f.metadata.get("doc"), f"{plugin.name}.{f.name} has no doc"
        build_params(plugin.params, defaults(plugin.params), key="x", owner="x")


DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_plugin_is_listed_in_the_docs():
    # configuration.md's config-group table and a row of the table in
    # defenses-and-attacks.md: a plug-in registered without them (sign_flip's
    # row, seven attacks in the option list) went unnoticed before.
    options = (DOCS / "configuration.md").read_text().splitlines()
    rows = [
        line
        for line in (DOCS / "defenses-and-attacks.md").read_text().splitlines()
        if line.startswith("| `")
    ]
    for group, registry in (("defense", DEFENSES), ("attack", ATTACKS)):
        listed = next(line for line in options if line.startswith(f"| `{group}` |"))
        for name in registry.names():
            assert f"`{name}`" in listed, f"configuration.md lacks {group}={name}"
            assert any(f"`{name}`" in row.split(" | ")[0] for row in rows), (
                f"defenses-and-attacks.md has no row for {group}={name}"
            )


@pytest.mark.parametrize("name", DEFENSES.names())
def test_every_defence_is_an_option_and_judges_a_round(name):
    cfg = compose_config(["+experiment=mnist_20", f"defense={name}"])
    check_config(cfg)
    assert cfg.defense.name == name
    defense = build(name, remote=False) if "remote" in cfg.defense else build(name)
    assert isinstance(defense, Defense) and defense.label == name
    assert DEFENSES.get(name).paper, "the docs' tables cite the paper"
    rng = np.random.default_rng(0)
    models = [
        {"w": rng.standard_normal(6).astype(np.float32), "n": np.array(1)}
        for _ in range(7)
    ]
    if "feddefender" in name:
        pytest.skip("needs a real model: tests/defenses/test_feddefender_*")
    verdict, arrays = judge(defense, make_round(models))
    assert set(verdict.weights) == {str(i) for i in range(7)}
    assert all(w >= 0 for w in verdict.weights.values())
    assert arrays is not None and set(arrays) == {"w", "n"}


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_is_an_option_over_every_experiment_setting(name):
    cfg = compose_config(["+experiment=fmnist_30_3attackers", f"attack={name}"])
    check_config(cfg)
    attack = build_params(
        ATTACKS.get(name).params,
        {k: v for k, v in OmegaConf.to_container(cfg.attack).items() if k != "name"},
        key="attack",
        owner=name,
    )
    assert isinstance(attack, Attack) and attack.name == name


def test_the_report_order_is_declared_by_the_plug_ins():
    names = DEFENSES.names()
    assert names[0] == "none" and names.index("feddefender") < names.index(
        "feddefender_robust"
    )
    assert DEFENSES.rank("not-a-defence")[0] > DEFENSES.rank("feddefender_robust")[0]


def test_a_name_registered_twice_is_refused():
    registry = Registry("thing", "fedlight.defenses", config=False)

    @registry.register("a")
    class A:
        """One."""

    with pytest.raises(ValueError, match="registered twice"):

        @registry.register("a")
        class B:
            """Two."""


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["defense=krum", "+defense.beta=0.1"],
            "defense.beta=0.1 is not allowed (defense=krum): not a parameter",
        ),
        (
            ["defense=trimmed_mean", "defense.beta=0.5"],
            "defense.beta=0.5 is not allowed (defense=trimmed_mean): a number >= 0",
        ),
        (
            ["+attack.bogus=1"],
            "attack.bogus=1 is not allowed (attack=backdoor): not a parameter",
        ),
        (
            ["attack.malicious_clients=[0,0]"],
            "attack.malicious_clients=[0, 0] is not allowed (attack=backdoor): "
            "distinct partition ids",
        ),
        (
            ["defense=rfa", "defense.max_iter=zero"],
            "defense.max_iter='zero' is not allowed (defense=rfa): an integer",
        ),
    ],
)
def test_a_bad_key_is_refused_in_one_line_naming_the_plug_in(overrides, message):
    cfg = compose_config(["+experiment=mnist_20", *overrides])
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
