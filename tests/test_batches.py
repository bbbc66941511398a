"""TensorBatches: the fast paths (one gather per epoch, views per batch) give
exactly the batches of the plain definition, a gather per batch."""

from __future__ import annotations

import pytest
import torch

from fedlight.models.module import TensorBatches


def plain_batches(x, y, batch_size, seed):
    """The definition: a permutation per epoch, consecutive slices of it."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return [
        (x[order[i : i + batch_size]], y[order[i : i + batch_size]])
        for i in range(0, len(y), batch_size)
    ]


@pytest.mark.parametrize("limit", [256 * 2**20, 0])  # gather per epoch / per batch
@pytest.mark.parametrize("n", [1, 31, 32, 100])
def test_batches_match_the_plain_definition(limit: int, n: int) -> None:
    x = torch.randn(n, 1, 4, 4)
    y = torch.arange(n)
    batches = TensorBatches(
        x, y, 32, torch.Generator().manual_seed(3), gather_limit_bytes=limit
    )
    got = list(batches)
    want = plain_batches(x, y, 32, 3)
    assert len(got) == len(want) == len(batches)
    for (gx, gy), (wx, wy) in zip(got, want, strict=True):
        assert torch.equal(gx, wx) and torch.equal(gy, wy)


def test_epochs_reshuffle_and_unshuffled_keeps_order() -> None:
    x, y = torch.randn(64, 2), torch.arange(64)
    batches = TensorBatches(x, y, 16, torch.Generator().manual_seed(0))
    first = torch.cat([b for _, b in batches])
    second = torch.cat([b for _, b in batches])
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(64))
    assert not torch.equal(first, second)  # the generator moves on between epochs
    ordered = TensorBatches(x, y, 16, shuffle=False)
    assert torch.equal(torch.cat([b for _, b in ordered]), y)
