"""partition_indices: sizes, coverage, label skew and determinism."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner

from fedlight.data.idx import read_idx
from fedlight.data.partition import partition_indices


@pytest.fixture(scope="module")
def mnist_labels(data_root: Path) -> np.ndarray:
    return read_idx(data_root / "mnist" / "train-labels-idx1-ubyte.gz").astype(np.int64)


def _assert_disjoint_cover(parts: list[np.ndarray], n: int) -> None:
    for part in parts:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0)  # sorted, no repeats
    merged = np.concatenate(parts)
    assert len(merged) == n
    np.testing.assert_array_equal(np.sort(merged), np.arange(n))


def _label_skew(parts: list[np.ndarray], labels: np.ndarray) -> float:
    """Mean total-variation distance of each partition's labels from the global mix."""
    overall = np.bincount(labels, minlength=10) / len(labels)
    distances = [
        0.5 * np.abs(np.bincount(labels[p], minlength=10) / len(p) - overall).sum()
        for p in parts
        if len(p)
    ]
    return float(np.mean(distances))


@pytest.mark.parametrize(
    ("num_partitions", "expected_sizes"),
    [
        (20, [3000] * 20),  # 60000 = 20 * 3000
        (23, [2608] * 7 + [2609] * 16),  # 60000 = 23 * 2608 + 16
    ],
)
def test_iid_sizes_disjoint_cover(
    mnist_labels: np.ndarray, num_partitions: int, expected_sizes: list[int]
) -> None:
    parts = partition_indices(mnist_labels, num_partitions, "iid", seed=0)

    assert len(parts) == num_partitions
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert sorted(sizes) == expected_sizes
    _assert_disjoint_cover(parts, len(mnist_labels))
    assert _label_skew(parts, mnist_labels) < 0.1


def test_iid_hand_worked() -> None:
    parts = partition_indices(np.array([0, 1] * 5), 3, "iid", seed=0)

    assert [len(p) for p in parts] == [4, 3, 3]
    _assert_disjoint_cover(parts, 10)


def test_iid_seeded(mnist_labels: np.ndarray) -> None:
    a = partition_indices(mnist_labels, 5, "iid", seed=3)
    b = partition_indices(mnist_labels, 5, "iid", seed=3)
    c = partition_indices(mnist_labels, 5, "iid", seed=4)

    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_dirichlet_disjoint_cover(mnist_labels: np.ndarray) -> None:
    parts = partition_indices(mnist_labels, 20, "dirichlet", alpha=0.5, seed=0)

    assert len(parts) == 20
    _assert_disjoint_cover(parts, len(mnist_labels))


def test_dirichlet_skew_grows_as_alpha_falls(mnist_labels: np.ndarray) -> None:
    skews = [
        _label_skew(
            partition_indices(mnist_labels, 20, "dirichlet", alpha=a), mnist_labels
        )
        for a in (100.0, 1.0, 0.1)
    ]

    assert skews[0] < 0.1 < skews[1] < skews[2]


def test_dirichlet_seeded(mnist_labels: np.ndarray) -> None:
    def run(seed: int) -> list[np.ndarray]:
        return partition_indices(mnist_labels, 10, "dirichlet", alpha=0.5, seed=seed)

    a, b, c = run(1), run(1), run(2)

    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert [len(p) for p in a] != [len(p) for p in c]


def test_dirichlet_min_partition_size(mnist_labels: np.ndarray) -> None:
    parts = partition_indices(
        mnist_labels, 10, "dirichlet", alpha=0.5, seed=0, min_partition_size=100
    )

    assert min(len(p) for p in parts) >= 100


def _oracle(labels: np.ndarray, kind: str, num_partitions: int) -> list[np.ndarray]:
    """The partitioners used the plain way: default format, row-by-row columns."""
    table = datasets.Dataset.from_dict({"idx": np.arange(len(labels)), "label": labels})
    table = table.shuffle(seed=7)
    partitioner = (
        IidPartitioner(num_partitions)
        if kind == "iid"
        else DirichletPartitioner(
            num_partitions, "label", alpha=0.5, min_partition_size=0, seed=7
        )
    )
    partitioner.dataset = table
    return [
        np.sort(np.array(list(partitioner.load_partition(i)["idx"])))
        for i in range(num_partitions)
    ]


@pytest.mark.parametrize("kind", ["iid", "dirichlet"])
def test_matches_plain_partitioner_use(mnist_labels: np.ndarray, kind: str) -> None:
    labels = mnist_labels[:600]

    fast = partition_indices(labels, 7, kind, alpha=0.5, seed=7)

    for got, expected in zip(fast, _oracle(labels, kind, 7), strict=True):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("kind", ["iid", "dirichlet"])
def test_thousand_partitions_of_sixty_thousand(kind: str) -> None:
    labels = np.tile(np.arange(10), 6000)

    parts = partition_indices(labels, 1000, kind, seed=0)

    assert len(parts) == 1000
    _assert_disjoint_cover(parts, 60000)
    if kind == "iid":
        assert {len(p) for p in parts} == {60}


def test_unknown_kind() -> None:
    with pytest.raises(
        ValueError, match="partition.name='x' is not one of iid, dirichlet"
    ):
        partition_indices(np.zeros(10, np.int64), 2, "x")


@pytest.mark.parametrize("num_partitions", [0, 11])
def test_bad_partition_count(num_partitions: int) -> None:
    with pytest.raises(ValueError, match="num_partitions"):
        partition_indices(np.zeros(10, np.int64), num_partitions)
