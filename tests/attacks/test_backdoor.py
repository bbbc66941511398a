import torch

from fedlight.attacks import ATTACKS
from fedlight.attacks.backdoor import Backdoor, stamp_trigger
from fedlight.attacks.label_flip import LabelFlip
from fedlight.attacks.none import NoAttack


def test_stamp_trigger_sets_bottom_right_square_only():
    x = torch.zeros(2, 1, 8, 8)
    out = stamp_trigger(x, size=3, value=2.5)
    assert torch.all(out[..., 5:, 5:] == 2.5)
    out[..., 5:, 5:] = 0
    assert torch.all(out == 0)
    assert torch.all(x == 0), "the input must not be modified"


def test_stamp_trigger_clips_to_image():
    out = stamp_trigger(torch.zeros(1, 1, 4, 4), size=10, value=1.0)
    assert torch.all(out == 1.0)


def test_backdoor_poisons_fraction_of_non_target_and_relabels():
    y = torch.tensor([0, 1, 2, 9, 9, 3, 4, 5, 6, 7, 8, 1])
    x = torch.zeros(len(y), 1, 8, 8)
    attack = Backdoor(
        malicious_clients=[0], target_label=9, trigger_size=2, poison_fraction=0.5
    )
    px, py = attack.poison(
        0, x, y, pixel_max=3.0, generator=torch.Generator().manual_seed(0)
    )
    stamped = (px[:, 0, 6:, 6:] == 3.0).all(dim=(1, 2))
    assert int(stamped.sum()) == 5  # half of the 10 non-target samples
    assert torch.all(py[stamped] == 9)
    assert torch.all(py[~stamped] == y[~stamped])
    assert not stamped[3] and not stamped[4], "target-class samples stay clean"


def test_backdoor_leaves_benign_clients_alone():
    y = torch.arange(10)
    x = torch.zeros(10, 1, 8, 8)
    attack = Backdoor(malicious_clients=[0])
    px, py = attack.poison(1, x, y, 1.0, torch.Generator())
    assert px is x and py is y


def test_boost_only_for_attackers():
    attack = Backdoor(malicious_clients=[2], boost=20)
    assert attack.reported_examples(2, 100) == 2000
    assert attack.reported_examples(1, 100) == 100


def test_asr_set_excludes_target_class():
    y = torch.tensor([9, 1, 9, 3])
    x = torch.zeros(4, 1, 8, 8)
    ax, ay = Backdoor(target_label=9, trigger_size=2).asr_set(x, y, pixel_max=1.0)
    assert len(ay) == 2 and torch.all(ay == 9)
    assert torch.all(ax[..., 6:, 6:] == 1.0)


def test_label_flip_never_keeps_label():
    y = torch.randint(0, 10, (500,), generator=torch.Generator().manual_seed(1))
    attack = LabelFlip(malicious_clients=[0], flip_fraction=1.0)
    _, fy = attack.poison(
        0, torch.zeros(500, 1, 2, 2), y, 1.0, torch.Generator().manual_seed(0)
    )
    assert torch.all(fy != y)
    assert attack.asr_set(torch.zeros(3, 1, 2, 2), y[:3], 1.0) is None


def test_backdoor_defaults_are_the_papers_trigger():
    # The code's defaults are the threat model (no YAML restates them): a 12 px
    # square, half of the non-target images, relabelled to 9, by client 0 (as
    # the old attack YAML had it).
    attack = Backdoor()
    assert attack.trigger_size == 12
    assert attack.poison_fraction == 0.5
    assert attack.target_label == 9
    assert attack.malicious_clients == [0] and attack.boost == 1.0


def test_attacks_are_named_by_their_registration():
    assert Backdoor().name == "backdoor"
    assert LabelFlip().name == "label_flip"
    assert NoAttack().name == "none"
    assert ATTACKS.get("backdoor").cls is Backdoor
    assert ATTACKS.get("none").cls is NoAttack


def test_no_attack_is_identity():
    attack = NoAttack()
    y = torch.arange(3)
    x = torch.zeros(3, 1, 2, 2)
    assert attack.poison(0, x, y, 1.0, torch.Generator()) == (x, y)
    assert attack.asr_set(x, y, 1.0) is None
