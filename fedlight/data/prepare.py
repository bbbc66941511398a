"""Turn raw uint8 images into normalised float32 tensors, once, for every client.

Decoding and resizing happen once per run on the whole split (vectorised, chunked),
not per sample in a DataLoader, so a partition is just an index array into
:class:`PreparedData`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fedlight.data.sources import RawData, dataset_spec, load_raw

log = logging.getLogger(__name__)

# Images resized per interpolate call: bounds the float32 temporaries to ~100 MB.
CHUNK_SIZE = 8192


@dataclass(frozen=True)
class PreparedData:
    """Normalised splits plus what a model and a trigger need to know about them.

    ``mean``/``std`` are computed on the train images actually kept (after resizing
    and sub-sampling), in [0, 1] pixel space, so the normalised train split has mean
    0 and std 1; the test split is normalised with the same numbers.
    """

    train_x: np.ndarray  # (N, 1, S, S) float32, (x - mean) / std with x in [0, 1]
    train_y: np.ndarray  # (N,) int64
    test_x: np.ndarray  # (M, 1, S, S) float32
    test_y: np.ndarray  # (M,) int64
    mean: float
    std: float
    num_classes: int
    source: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        _, channels, height, width = self.train_x.shape
        return channels, height, width

    def pixel_max(self) -> float:
        """A saturated (white, 1.0) pixel in normalised space, e.g. for triggers."""
        return (1.0 - self.mean) / self.std

    def pixel_min(self) -> float:
        """A black (0.0) pixel in normalised space."""
        return (0.0 - self.mean) / self.std


def prepare(
    raw: RawData,
    image_size: int = 32,
    max_train_samples: int | None = None,
    seed: int = 0,
    num_classes: int = 10,
) -> PreparedData:
    """Resize both splits to ``image_size`` (bilinear) and normalise them.

    ``max_train_samples`` keeps a seeded random subset of the train split (in the
    original order), e.g. to shrink experiments; None keeps everything.
    """
    if image_size < 1:
        raise ValueError(f"dataset.image_size={image_size} must be >= 1")
    train_images, train_labels = raw.train_images, raw.train_labels
    if max_train_samples is not None:
        if max_train_samples < 1:
            raise ValueError(
                f"dataset.max_train_samples={max_train_samples} must be >= 1 or null"
            )
        if max_train_samples < len(train_labels):
            rng = np.random.default_rng(seed)
            keep = np.sort(
                rng.choice(len(train_labels), size=max_train_samples, replace=False)
            )
            train_images, train_labels = train_images[keep], train_labels[keep]

    train_x, (total, total_sq) = _resize_unit(train_images, image_size)
    test_x, _ = _resize_unit(raw.test_images, image_size)
    mean = total / train_x.size
    std = max(total_sq / train_x.size - mean * mean, 0.0) ** 0.5
    # E[x^2] - mean^2 leaves rounding noise, not an exact 0: compare with a
    # fraction of one grey level (1/255) instead.
    if std < 1e-3:
        raise ValueError(f"{raw.source}: train images are constant (std {std:.1e})")
    for x in (train_x, test_x):  # in place: these arrays are ours
        x -= mean
        x /= std
    return PreparedData(
        train_x=train_x,
        train_y=np.asarray(train_labels, dtype=np.int64),
        test_x=test_x,
        test_y=np.asarray(raw.test_labels, dtype=np.int64),
        mean=mean,
        std=std,
        num_classes=num_classes,
        source=raw.source,
    )


def load_dataset(
    name: str,
    root: str | os.PathLike[str] | None,
    image_size: int = 32,
    max_train_samples: int | None = None,
    seed: int = 0,
    hub: bool = True,
    hub_timeout_s: float = 10.0,
) -> PreparedData:
    """:func:`load_raw` then :func:`prepare`: the one call a run needs."""
    spec = dataset_spec(name)
    raw = load_raw(name, root, hub=hub, hub_timeout_s=hub_timeout_s)
    data = prepare(
        raw,
        image_size=image_size,
        max_train_samples=max_train_samples,
        seed=seed,
        num_classes=spec.num_classes,
    )
    log.info(
        "Prepared %s: train %s, test %s, mean %.4f, std %.4f",
        name,
        data.train_x.shape,
        data.test_x.shape,
        data.mean,
        data.std,
    )
    return data


def _resize_unit(
    images: np.ndarray, size: int
) -> tuple[np.ndarray, tuple[float, float]]:
    """(N, H, W) uint8 -> (N, 1, size, size) float32 in [0, 1], bilinear, no AA.

    Also returns the sum and sum of squares of the result, gathered per chunk so
    the statistics need no second pass and no full-size float64 temporary.
    """
    n, height, width = images.shape
    out = torch.empty((n, 1, size, size), dtype=torch.float32)
    total = total_sq = 0.0
    src = torch.from_numpy(np.ascontiguousarray(images))
    with torch.no_grad():
        for start in range(0, n, CHUNK_SIZE):
            chunk = src[start : start + CHUNK_SIZE].unsqueeze(1).float().div_(255.0)
            if (height, width) != (size, size):
                chunk = F.interpolate(
                    chunk,
                    size=(size, size),
                    mode="bilinear",
                    align_corners=False,
                    antialias=False,
                )
            out[start : start + CHUNK_SIZE] = chunk
            # float32 sums per chunk are exact to ~1e-9 (torch reduces pairwise);
            # accumulating the chunks in Python floats keeps it that way.
            total += float(chunk.sum())
            total_sq += float(chunk.square().sum())
    return out.numpy(), (total, total_sq)
