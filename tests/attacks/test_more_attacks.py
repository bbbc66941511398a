"""Blended, DBA, model-replacement scaling and num_malicious on hand-built data."""

from __future__ import annotations

import pytest
import torch

from fedlight.attacks import ATTACKS, scale_update
from fedlight.attacks.backdoor import Backdoor
from fedlight.attacks.blended import Blended, blend_pattern
from fedlight.attacks.broken import BrokenUpdate
from fedlight.attacks.dba import DistributedBackdoor, stamp_part
from fedlight.attacks.label_flip import LabelFlip
from fedlight.attacks.none import NoAttack
from fedlight.params import ConfigError, build_params

Y = torch.tensor([0, 1, 2, 9, 9, 3, 4, 5, 6, 7, 8, 1])  # 10 non-target


def test_blended_mixes_the_seeded_pattern_into_half_and_relabels():
    x = torch.zeros(len(Y), 1, 6, 6)
    attack = Blended(malicious_clients=[0], blend_ratio=0.25, poison_fraction=0.5)
    px, py = attack.poison(0, x, Y, pixel_max=2.0, generator=torch.Generator())
    pattern = blend_pattern(6, 6, 2.0, seed=0)
    changed = (px != 0).flatten(1).any(1)
    assert int(changed.sum()) == 5 and torch.all(py[changed] == 9)
    assert torch.allclose(px[changed][:, 0], 0.25 * pattern.expand(5, 6, 6))
    assert not changed[3] and not changed[4], "target-class samples stay clean"
    assert torch.all(py[~changed] == Y[~changed])


def test_blend_pattern_is_fixed_by_its_seed_and_in_range():
    a, b = blend_pattern(8, 8, 3.0, seed=1), blend_pattern(8, 8, 3.0, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, blend_pattern(8, 8, 3.0, seed=2))
    assert 0.0 <= float(a.min()) and float(a.max()) <= 3.0


def test_blended_asr_set_uses_the_training_pattern_on_non_target_images():
    x = torch.ones(len(Y), 1, 6, 6)
    attack = Blended(blend_ratio=0.5)
    ax, ay = attack.asr_set(x, Y, pixel_max=2.0)
    assert len(ay) == 10 and torch.all(ay == 9)
    expected = 0.5 * 1.0 + 0.5 * blend_pattern(6, 6, 2.0, seed=0)
    assert torch.allclose(ax[0, 0], expected)


def test_dba_parts_tile_the_whole_trigger():
    x = torch.zeros(1, 1, 8, 8)
    parts = [stamp_part(x, 4, 1.0, k, 3) for k in range(3)]
    masks = [p != 0 for p in parts]
    assert not any((masks[i] & masks[j]).any() for i in range(3) for j in range(i))
    union = masks[0] | masks[1] | masks[2]
    whole = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    whole[..., 4:, 4:] = True
    assert torch.equal(union, whole)


def test_dba_each_attacker_stamps_its_own_part_and_asr_uses_all():
    x = torch.zeros(len(Y), 1, 8, 8)
    attack = DistributedBackdoor(
        malicious_clients=[0, 1], trigger_size=4, poison_fraction=1.0
    )
    for cid, rows in ((0, slice(4, 6)), (1, slice(6, 8))):
        px, py = attack.poison(cid, x, Y, 1.0, torch.Generator())
        poisoned = py != Y
        assert int(poisoned.sum()) == 10  # every non-target sample
        expected = torch.zeros(8, 8)
        expected[rows, 4:] = 1.0
        assert torch.equal(px[0, 0], expected)
    ax, ay = attack.asr_set(x, Y, 1.0)
    assert torch.all(ax[:, 0, 4:, 4:] == 1.0) and torch.all(ay == 9)
    benign_x, _ = attack.poison(2, x, Y, 1.0, torch.Generator())
    assert benign_x is x


def test_dba_one_part_per_attacker_from_num_malicious():
    attack = DistributedBackdoor(num_malicious=4, trigger_size=12)
    assert attack.malicious_clients == [0, 1, 2, 3] and attack.parts == 4
    assert [attack.part_of(c) for c in range(4)] == [0, 1, 2, 3]


def states():
    g = {"w": torch.zeros(3), "n": torch.tensor(4)}
    s = {"w": torch.tensor([1.0, -2.0, 0.5]), "n": torch.tensor(5)}
    return g, s


def test_scaling_sends_global_plus_scaled_update_for_attackers_only():
    g, s = states()
    attack = Backdoor(malicious_clients=[1], scale=10.0)
    sent = attack.tamper(1, g, s)
    assert torch.equal(sent["w"], torch.tensor([10.0, -20.0, 5.0]))
    assert int(sent["n"]) == 5, "integer buffers are not scaled"
    assert attack.tamper(0, g, s) is s


def test_scale_one_is_the_identity():
    g, s = states()
    assert Backdoor(malicious_clients=[0]).tamper(0, g, s) is s


@pytest.mark.parametrize("cls", [Blended, DistributedBackdoor, LabelFlip])
def test_scaling_composes_with_every_attack(cls):
    g, s = states()
    sent = cls(malicious_clients=[0], scale=2.0).tamper(0, g, s)
    assert torch.equal(sent["w"], scale_update(g, s, 2.0)["w"])


def test_broken_update_still_breaks_and_composes_with_scale():
    g, s = states()
    nan = BrokenUpdate(malicious_clients=[0], kind="nan_values").tamper(0, g, s)
    assert torch.isnan(nan["w"]).all()
    huge = BrokenUpdate(malicious_clients=[0], kind="huge_norm", scale=2.0)
    assert torch.allclose(huge.tamper(0, g, s)["w"], 2e6 * s["w"])


def test_num_malicious_takes_the_first_partition_ids():
    assert Backdoor(malicious_clients=[5], num_malicious=3).malicious_clients == [
        0,
        1,
        2,
    ]
    assert Backdoor(num_malicious=0).malicious_clients == []
    with pytest.raises(ValueError, match="num_malicious"):
        Backdoor(num_malicious=-1)


def test_an_attack_refuses_other_attacks_parameters_and_typos():
    # No attack drops keys any more: a backdoor key on a label flip is refused,
    # in one line naming the plug-in and the keys it does have.
    with pytest.raises(TypeError):
        LabelFlip(malicious_clients=[0], trigger_size=12)
    with pytest.raises(TypeError):
        LabelFlip(trigger_sise=12)
    values = {"malicious_clients": [0], "trigger_size": 12}
    with pytest.raises(ConfigError) as err:
        build_params(LabelFlip, values, key="attack", owner="attack=label_flip")
    msg = str(err.value)
    assert msg.startswith(
        "attack.trigger_size=12 is not allowed (attack=label_flip): "
        "not a parameter; it has "
    )
    assert "flip_fraction" in msg and "malicious_clients" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_takes_the_keys_experiments_set(name):
    # Experiment files set only these keys, so any attack can be swept over them.
    values = {"malicious_clients": [0], "num_malicious": 3, "boost": 20, "scale": 2}
    plugin = ATTACKS.get(name)
    attack = build_params(plugin.params, values, key="attack", owner=f"attack={name}")
    assert isinstance(attack, plugin.cls) and attack.name == name
    assert attack.boost == 20 and attack.scale == 2
    assert attack.malicious_clients == ([] if name == "none" else [0, 1, 2])


def test_no_attack_has_no_attackers_whatever_the_experiment_says():
    attack = NoAttack(malicious_clients=[0], num_malicious=3, boost=20, scale=20)
    assert attack.malicious_clients == []
    assert attack.reported_examples(0, 100) == 100, "nobody boosts"
    g, s = states()
    assert attack.tamper(0, g, s) is s
