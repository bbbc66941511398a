"""The LightningModule every client trains, and a fast in-memory batch iterable."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import pytorch_lightning as pl
import torch
from torch import nn

from fedlight.attacks.base import TrainingHooks
from fedlight.models.kernels import batch_layout, make_optimizer, to_layout


class TensorBatches:
    """Shuffled mini-batches over in-memory tensors.

    Slicing a permuted tensor per batch avoids a DataLoader's per-sample
    indexing and collation: the data is already decoded, resized and normalised.
    A partition up to ``gather_limit_bytes`` is permuted with one gather per
    epoch and its batches are views (a gather per batch costs ~0.07 ms, a third
    of Lightning's time between batches); a larger one is gathered per batch.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        generator: torch.Generator | None = None,
        shuffle: bool = True,
        gather_limit_bytes: int = 256 * 2**20,
    ) -> None:
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.generator = generator
        self.shuffle = shuffle
        self.gather_limit_bytes = gather_limit_bytes

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y, order = self.x, self.y, None
        if self.shuffle:
            order = torch.randperm(len(y), generator=self.generator)
            if x.element_size() * x.nelement() <= self.gather_limit_bytes:
                x, y, order = x[order], y[order], None  # batches are now slices
        for start in range(0, len(y), self.batch_size):
            end = start + self.batch_size
            if order is None:
                yield x[start:end], y[start:end]
            else:
                idx = order[start:end]
                yield x[idx], y[idx]


class Classifier(pl.LightningModule):
    """Cross-entropy training of any classifier with Adam or SGD.

    Keeps running sums of loss and accuracy instead of ``self.log`` so that a
    logger-less Trainer inside a Ray actor stays cheap; read them with
    :meth:`train_metrics` after ``fit``. ``memory_format`` and ``fused``
    choose the kernels (:mod:`fedlight.models.kernels`), not the computation.
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float = 1e-3,
        optimizer: str = "adam",
        hooks: TrainingHooks | None = None,
        memory_format: str = "contiguous",
        fused: bool = False,
    ):
        super().__init__()
        self.model = to_layout(model, memory_format)
        self.memory_format = memory_format
        self.fused = fused
        self.lr = lr
        self.optimizer_name = optimizer
        self.hooks = hooks or TrainingHooks()  # an attacker's changes to training
        self.reset_metrics()

    def reset_metrics(self) -> None:
        self._loss_sum = torch.zeros(())
        self._correct = torch.zeros((), dtype=torch.long)
        self._seen = 0
        self.train_seconds = 0.0  # forward, backward and optimiser steps only
        self._batch_start = 0.0

    def on_train_batch_start(self, batch: object, batch_idx: int) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(
        self, outputs: object, batch: object, batch_idx: int
    ) -> None:
        if self.hooks.after_step is not None:
            with torch.no_grad():
                self.hooks.after_step(self.model)
        self.train_seconds += time.perf_counter() - self._batch_start

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.hooks.before_step is not None:
            self.hooks.before_step(self.model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        x = batch_layout(x, self.memory_format)
        logits = self.model(x)
        loss = nn.functional.cross_entropy(logits, y)
        if self.hooks.extra_loss is not None:
            loss = loss + self.hooks.extra_loss(self.model, x, y, logits)
        with torch.no_grad():
            self._loss_sum = self._loss_sum.to(loss.device) + loss.detach() * len(y)
            correct = (logits.argmax(1) == y).sum()
            self._correct = self._correct.to(loss.device) + correct
            self._seen += len(y)
        return loss

    def train_metrics(self) -> dict[str, float]:
        """Mean loss and accuracy over every sample seen since the last reset."""
        seen = max(self._seen, 1)
        return {
            "train-loss": float(self._loss_sum) / seen,
            "train-accuracy": float(self._correct) / seen,
            "train-seconds": self.train_seconds,
        }

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return make_optimizer(
            self.model.parameters(), self.optimizer_name, self.lr, self.fused
        )
