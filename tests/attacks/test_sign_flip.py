"""The sign-flipping attack on hand-built weights."""

from __future__ import annotations

import pytest
import torch

from fedlight.attacks.sign_flip import SignFlip
from fedlight.params import ConfigError, build_params


def test_a_malicious_client_sends_its_update_reversed_and_scaled():
    global_state = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    trained = {"w": torch.tensor([1.5, 1.0]), "n": torch.tensor(4)}
    attack = SignFlip(malicious_clients=[1], flip_scale=2.0)
    sent = attack.tamper(1, global_state, trained)
    # update (0.5, -1.0) becomes (-1.0, 2.0); the integer buffer is sent as trained
    assert torch.equal(sent["w"], torch.tensor([0.0, 4.0]))
    assert torch.equal(sent["n"], torch.tensor(4))


def test_benign_clients_and_data_are_untouched_and_there_is_no_asr():
    attack = SignFlip(malicious_clients=[1])
    state = {"w": torch.tensor([1.5])}
    assert attack.tamper(0, {"w": torch.tensor([1.0])}, state) is state
    x, y = torch.zeros(4, 1, 2, 2), torch.arange(4)
    assert attack.poison(1, x, y, 1.0, torch.Generator()) == (x, y)
    assert attack.asr_set(x, y, 1.0) is None


def test_flip_scale_must_be_positive():
    with pytest.raises(ConfigError, match=r"attack.flip_scale=0 .*attack=sign_flip"):
        build_params(
            SignFlip, {"flip_scale": 0}, key="attack", owner="attack=sign_flip"
        )
