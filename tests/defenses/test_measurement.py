"""An attacker's published trigger reaches the ASR and never a defence."""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from updates import make_replies

from fedlight.attacks.base import MEASUREMENT_KEY
from fedlight.evaluation import Evaluator
from fedlight.server import take_measurements


def test_the_server_strips_measurements_and_keeps_the_first_attackers():
    models = [{"w": np.full(3, float(i), dtype=np.float32)} for i in range(4)]
    replies = make_replies(models)
    for cid in (1, 2, 3):  # client 1 is benign but sends one anyway
        trigger = {"t": Array(np.full(2, float(cid), dtype=np.float32))}
        replies[cid].content[MEASUREMENT_KEY] = ArrayRecord(trigger)
    owner = {r.metadata.src_node_id: i for i, r in enumerate(replies)}
    found = take_measurements(replies, owner, malicious=["2", "3"])
    assert torch.equal(found["t"], torch.full((2,), 2.0))
    assert all(MEASUREMENT_KEY not in r.content for r in replies)
    assert take_measurements(replies, owner, malicious=["2"]) is None


def test_the_evaluator_measures_the_published_trigger():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 2))
    with torch.no_grad():  # predicts class 1 exactly when x[1] > x[0]
        model[1].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        model[1].bias.zero_()
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    y = torch.zeros(2, dtype=torch.long)

    def asr_from(published):  # stamp the published value on feature 1
        stamped = x.clone()
        stamped[:, 1] = published["t"]
        return stamped, torch.ones(2, dtype=torch.long)

    evaluator = Evaluator(
        model, x, y, asr_x=x, asr_y=torch.ones(2, dtype=torch.long), asr_from=asr_from
    )
    state = model.state_dict()
    assert evaluator(state)["asr"] == 0.0
    assert evaluator(state, {"t": torch.tensor(1.5)})["asr"] == 0.5
    assert evaluator(state, {"t": torch.tensor(5.0)})["asr"] == 1.0
    assert evaluator(state)["asr"] == 1.0  # the newest trigger stays
