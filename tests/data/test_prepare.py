"""prepare/load_dataset: shapes, dtypes, normalisation, resizing, sub-sampling."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedlight.data.prepare import PreparedData, load_dataset, prepare
from fedlight.data.sources import RawData, load_raw

# fedlight.data re-exports the function prepare(), which shadows the module's name
prepare_module = importlib.import_module("fedlight.data.prepare")


@pytest.fixture(scope="module")
def mnist_raw(data_root: Path) -> RawData:
    return load_raw("mnist", data_root)


@pytest.fixture(scope="module")
def mnist(mnist_raw: RawData) -> PreparedData:
    return prepare(mnist_raw)


def test_shapes_and_dtypes(mnist: PreparedData) -> None:
    assert mnist.train_x.shape == (60000, 1, 32, 32)
    assert mnist.test_x.shape == (10000, 1, 32, 32)
    assert mnist.train_x.dtype == mnist.test_x.dtype == np.float32
    assert mnist.train_y.dtype == mnist.test_y.dtype == np.int64
    assert mnist.input_shape == (1, 32, 32)
    assert mnist.num_classes == 10
    assert mnist.source.startswith("local:")


def test_normalisation(mnist: PreparedData) -> None:
    assert abs(float(mnist.train_x.mean(dtype=np.float64))) < 1e-4
    assert abs(float(mnist.train_x.std(dtype=np.float64)) - 1.0) < 1e-4
    assert 0.05 < mnist.mean < 0.3 and 0.2 < mnist.std < 0.45  # MNIST-like ink
    assert mnist.pixel_max() == pytest.approx((1.0 - mnist.mean) / mnist.std)
    assert mnist.pixel_min() == pytest.approx(-mnist.mean / mnist.std)
    # bilinear interpolation never leaves [0, 1]: saturated pixels hit pixel_max
    assert mnist.train_x.max() == pytest.approx(mnist.pixel_max(), abs=1e-5)
    assert mnist.train_x.min() == pytest.approx(mnist.pixel_min(), abs=1e-5)


def test_native_size_is_exact(mnist_raw: RawData) -> None:
    data = prepare(mnist_raw, image_size=28)

    pixels = data.train_x[:, 0] * data.std + data.mean
    np.testing.assert_allclose(pixels, mnist_raw.train_images / 255.0, atol=1e-5)


def test_chunked_resize_matches_per_image_loop(
    mnist_raw: RawData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vectorised path against a plain per-image oracle, across chunk edges."""
    images = mnist_raw.test_images[:7]
    monkeypatch.setattr(prepare_module, "CHUNK_SIZE", 3)
    raw = RawData(images, np.arange(7), images, np.arange(7), "test")

    data = prepare(raw, image_size=20)

    for i, image in enumerate(images):
        unit = torch.from_numpy(image).float()[None, None] / 255.0
        expected = F.interpolate(unit, size=(20, 20), mode="bilinear")[0].numpy()
        got = data.test_x[i] * data.std + data.mean
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_max_train_samples(mnist_raw: RawData) -> None:
    first = prepare(mnist_raw, image_size=28, max_train_samples=100, seed=1)
    again = prepare(mnist_raw, image_size=28, max_train_samples=100, seed=1)
    other = prepare(mnist_raw, image_size=28, max_train_samples=100, seed=2)

    assert first.train_x.shape == (100, 1, 28, 28)
    assert first.test_x.shape == (10000, 1, 28, 28)  # the test split is never cut
    np.testing.assert_array_equal(first.train_y, again.train_y)
    np.testing.assert_array_equal(first.train_x, again.train_x)
    assert not np.array_equal(first.train_x, other.train_x)
    # every kept row is a real train row, with its own label
    originals = {
        img.tobytes(): lab
        for img, lab in zip(mnist_raw.train_images, mnist_raw.train_labels, strict=True)
    }
    pixels = np.rint((first.train_x[:, 0] * first.std + first.mean) * 255.0)
    for img, lab in zip(pixels.astype(np.uint8), first.train_y, strict=True):
        assert originals[img.tobytes()] == lab


def test_max_train_samples_above_size_keeps_all(mnist_raw: RawData) -> None:
    data = prepare(mnist_raw, image_size=8, max_train_samples=10**6)

    assert data.train_x.shape == (60000, 1, 8, 8)
    np.testing.assert_array_equal(data.train_y, mnist_raw.train_labels)  # in order


@pytest.mark.parametrize("kwargs", [{"image_size": 0}, {"max_train_samples": 0}])
def test_invalid_arguments(mnist_raw: RawData, kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        prepare(mnist_raw, **kwargs)


def test_constant_images_rejected() -> None:
    images = np.full((4, 28, 28), 7, dtype=np.uint8)
    raw = RawData(images, np.arange(4), images, np.arange(4), "flat")

    with pytest.raises(ValueError, match="constant"):
        prepare(raw)


def test_load_dataset_full_fmnist(data_root: Path) -> None:
    data = load_dataset("fmnist", str(data_root), image_size=32)

    assert data.train_x.shape == (60000, 1, 32, 32)
    assert data.test_x.shape == (10000, 1, 32, 32)
    assert np.bincount(data.train_y).tolist() == [6000] * 10
    assert abs(float(data.train_x.mean(dtype=np.float64))) < 1e-4
    # normalised with the train statistics, so the test split is only close to 0/1
    assert abs(float(data.test_x.mean(dtype=np.float64))) < 0.05


def test_load_dataset_unknown_name() -> None:
    with pytest.raises(ValueError, match="not one of mnist, fmnist"):
        load_dataset("cifar10", None)
