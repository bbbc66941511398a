"""attack.rounds: an attacker attacks exactly in its scheduled rounds and is a
benign client in the others (clean data, true count, update as trained)."""

from __future__ import annotations

import pytest
import torch
from clients import spec

from fedlight.attacks.backdoor import Backdoor
from fedlight.checks import ConfigError, check_config
from fedlight.client import client_data, fit_client
from fedlight.models import build_model
from fedlight.schedule import parse_rounds
from support import compose_config


@pytest.mark.parametrize(
    "text, attacked",
    [
        ("1:", range(1, 16)),
        ("5:", range(5, 16)),
        ("1:10", range(1, 11)),
        ("1::3", [1, 4, 7, 10, 13]),
        ("2:9:3", [2, 5, 8]),
        ("4", [4]),
    ],
)
def test_a_schedule_attacks_exactly_in_its_rounds(text, attacked):
    attack = Backdoor(malicious_clients=[0], rounds=text)
    assert [r for r in range(1, 16) if attack.attacks_in(r)] == list(attacked)
    assert [r for r in range(1, 16) if attack.is_active(0, r)] == list(attacked)
    assert not any(attack.is_active(1, r) for r in range(1, 16))


def test_the_last_attacked_round():
    assert Backdoor(rounds="1:").last_round() is None
    assert Backdoor(rounds="1:10").last_round() == 10
    assert Backdoor(rounds="2:9:3").last_round() == 8


@pytest.mark.parametrize("text", ["", "x", "0:", "5:3", "1::0", "1:2:3:4"])
def test_a_bad_schedule_fails_in_one_line_naming_the_key(text):
    with pytest.raises(ValueError):
        parse_rounds(text)
    cfg = compose_config(["+experiment=mnist_20", f"attack.rounds='{text}'"])
    with pytest.raises(ConfigError, match=r"attack.rounds=.* is not allowed"):
        check_config(cfg)


def test_off_schedule_an_attacker_trains_and_reports_as_a_benign_client():
    attack = Backdoor(malicious_clients=[0], rounds="2", boost=20.0, scale=5.0)
    client = spec(attack)
    torch.manual_seed(0)
    state = build_model("convnet", 10, 1).state_dict()
    clean_x, clean_y = client_data(client, 0, poisoned=False)
    poisoned_x, poisoned_y = client_data(client, 0)
    assert not torch.equal(clean_y, poisoned_y)  # round 2 trains on poison
    # Round 1 (off schedule): exactly the benign fit of the clean data.
    sent, metrics = fit_client(client, 0, state, server_round=1)
    benign = spec(Backdoor(malicious_clients=[]))
    expected, benign_metrics = fit_client(benign, 0, state, server_round=1)
    assert metrics["num-examples"] == 64.0
    for k in sent:
        torch.testing.assert_close(sent[k], expected[k])
    assert metrics["train-loss"] == pytest.approx(benign_metrics["train-loss"])
    # Round 2 (on schedule): the boost and the scaling apply.
    _, metrics = fit_client(client, 0, state, server_round=2)
    assert metrics["num-examples"] == 64.0 * 20
