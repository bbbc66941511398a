import pytest
import torch
from torch import nn

from fedlight.attacks.backdoor import Backdoor
from fedlight.evaluation import Evaluator


class CornerDetector(nn.Module):
    """Predicts 9 when the bottom-right pixel is bright, else the true-ish class 0."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = x[:, 0, -1, -1] > 0.5
        logits = torch.zeros(len(x), 10)
        logits[bright, 9] = 1.0
        logits[~bright, 0] = 1.0
        return logits + self.dummy


def test_asr_on_hand_built_case():
    # 6 test images: classes 0,0,0,9,1,2. The model predicts 0 on clean images.
    y = torch.tensor([0, 0, 0, 9, 1, 2])
    x = torch.zeros(6, 1, 8, 8)
    attack = Backdoor(target_label=9, trigger_size=2)
    ax, ay = attack.asr_set(x, y, pixel_max=1.0)
    ev = Evaluator(CornerDetector(), x, y, ax, ay, batch_size=4)
    m = ev(CornerDetector().state_dict())
    assert m["accuracy"] == pytest.approx(3 / 6)
    # every non-target triggered image (5 of them) is predicted 9
    assert m["asr"] == pytest.approx(1.0)
    assert len(ay) == 5


def test_asr_zero_for_model_without_backdoor():
    y = torch.tensor([0, 1, 2, 9])
    x = torch.zeros(4, 1, 8, 8)
    ax, ay = Backdoor(target_label=9, trigger_size=2).asr_set(x, y, pixel_max=0.1)
    ev = Evaluator(CornerDetector(), x, y, ax, ay)
    assert ev(CornerDetector().state_dict())["asr"] == 0.0
