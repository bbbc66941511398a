"""Server-side metrics, defined as the backdoor literature defines them.

- clean accuracy / loss: on the untouched test split;
- attack success rate (ASR): the share of test images whose true class is not the
  target which, with the trigger stamped, the model predicts as the target (a
  model without the backdoor scores near 0, not near 10%).

Detection precision / recall / FPR live in :mod:`fedlight.detection`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

State = dict[str, torch.Tensor]


@dataclass
class Evaluator:
    """Clean accuracy, loss and ASR of a global model on fixed test tensors."""

    model: nn.Module
    test_x: torch.Tensor
    test_y: torch.Tensor
    asr_x: torch.Tensor | None = None
    asr_y: torch.Tensor | None = None
    batch_size: int = 1024
    device: str = "cpu"
    # Rebuilds (asr_x, asr_y) from an attacker's published trigger, for attacks
    # whose trigger changes over the rounds (Attack.published).
    asr_from: Callable[[State], tuple[torch.Tensor, torch.Tensor] | None] | None = None

    def __post_init__(self) -> None:
        self.model = self.model.to(self.device).eval()

    @torch.no_grad()
    def _predict(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """(accuracy, mean cross-entropy) of the current model on (x, y)."""
        correct, loss_sum = 0, 0.0
        for start in range(0, len(y), self.batch_size):
            xb = x[start : start + self.batch_size].to(self.device)
            yb = y[start : start + self.batch_size].to(self.device)
            logits = self.model(xb)
            loss_sum += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
        n = max(len(y), 1)
        return correct / n, loss_sum / n

    def __call__(
        self, state: dict[str, torch.Tensor], published: State | None = None
    ) -> dict[str, float | None]:
        """Metrics of ``state``; with ``published``, the ASR of that trigger."""
        if published and self.asr_from is not None:
            made = self.asr_from(published)
            if made is not None:
                self.asr_x, self.asr_y = made
        self.model.load_state_dict(state)
        accuracy, loss = self._predict(self.test_x, self.test_y)
        asr = None
        if self.asr_x is not None and self.asr_y is not None and len(self.asr_y):
            asr, _ = self._predict(self.asr_x, self.asr_y)
        return {"accuracy": accuracy, "loss": loss, "asr": asr}
