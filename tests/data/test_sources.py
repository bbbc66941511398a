"""load_raw: source order, explicit roots without fallback, bounded hub attempts."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from fedlight.data import sources
from fedlight.data.sources import DataNotFoundError, load_raw
from support import (
    EMBEDDED_MNIST_TEST_COUNTS,
    EMBEDDED_MNIST_TRAIN_COUNTS,
    MNIST_TEST_COUNTS,
    MNIST_TRAIN_COUNTS,
)

MakeRoot = Callable[..., Path]


def _no_hub(*_: object) -> None:
    raise AssertionError("the hub must not be tried here")


def test_real_root_mnist(data_root: Path) -> None:
    raw = load_raw("mnist", str(data_root), hub=False)

    assert raw.source == f"local:{(data_root / 'mnist').resolve()}"
    assert raw.train_images.shape == (60000, 28, 28)
    assert raw.test_images.shape == (10000, 28, 28)
    assert raw.train_images.dtype == np.uint8
    assert raw.train_labels.dtype == raw.test_labels.dtype == np.int64
    assert np.bincount(raw.train_labels).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(raw.test_labels).tolist() == MNIST_TEST_COUNTS


def test_real_root_fmnist_from_env(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDLIGHT_DATA", str(data_root))
    monkeypatch.setattr(sources, "_load_hub", _no_hub)

    raw = load_raw("fmnist", None)

    assert raw.source.startswith("local:") and raw.source.endswith("fashion-mnist")
    assert raw.train_images.shape == (60000, 28, 28)
    assert raw.test_labels.shape == (10000,)
    assert np.bincount(raw.train_labels).tolist() == [6000] * 10


@pytest.mark.parametrize("gz", [True, False])
def test_tiny_root_gz_or_unpacked(make_root: MakeRoot, gz: bool) -> None:
    root = make_root("fashion-mnist", n_train=20, n_test=10, gz=gz)

    raw = load_raw("fmnist", root)

    assert raw.train_images.shape == (20, 28, 28)
    assert raw.test_images.shape == (10, 28, 28)
    np.testing.assert_array_equal(raw.train_labels, np.arange(20) % 10)


def test_explicit_root_missing_file_has_no_fallback(
    make_root: MakeRoot, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_root("mnist", skip=("t10k-labels-idx1-ubyte",))
    monkeypatch.setattr(sources, "_load_hub", _no_hub)

    with pytest.raises(DataNotFoundError) as err:
        load_raw("mnist", root)  # the embedded mnist would be there: not used

    message = str(err.value)
    assert str(root / "mnist") in message
    assert "t10k-labels-idx1-ubyte" in message
    assert "train-images" not in message
    assert "\n" not in message


def test_env_root_missing_folder_has_no_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDLIGHT_DATA", str(tmp_path / "empty"))

    with pytest.raises(DataNotFoundError, match="FEDLIGHT_DATA"):
        load_raw("mnist", None, hub=False)


def test_embedded_fallback(data_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fedlight.data.sources"):
        raw = load_raw("mnist", None, hub=False)

    assert raw.source == "embedded:mnist-10k-subset"
    assert "embedded:mnist-10k-subset" in caplog.text
    # the shipped copy is the 10,000-image subset, not the full offline folder
    assert raw.train_images.shape == (7996, 28, 28)
    assert raw.test_images.shape == (2004, 28, 28)
    assert np.bincount(raw.train_labels).tolist() == EMBEDDED_MNIST_TRAIN_COUNTS
    assert np.bincount(raw.test_labels).tolist() == EMBEDDED_MNIST_TEST_COUNTS
    # every one of its images is a distinct image of full MNIST's train split,
    # byte for byte and with the same label (both subset splits come from there)
    local = load_raw("mnist", data_root)
    label_of = {
        image.tobytes(): label
        for image, label in zip(local.train_images, local.train_labels, strict=True)
    }
    images = np.concatenate([raw.train_images, raw.test_images])
    labels = np.concatenate([raw.train_labels, raw.test_labels])
    assert len({image.tobytes() for image in images}) == len(images)
    found = [label_of.get(image.tobytes()) for image in images]
    assert found == labels.tolist()


def test_embedded_after_unreachable_hub() -> None:
    raw = load_raw("mnist", None, hub=True)  # HF_ENDPOINT is a closed port

    assert raw.source == "embedded:mnist-10k-subset"
    assert len(raw.train_labels) == 7996 and len(raw.test_labels) == 2004


def test_debian_location(make_root: MakeRoot, monkeypatch: pytest.MonkeyPatch) -> None:
    debian = make_root("fashion-mnist", root=Path(str(sources.DEBIAN_DATA_DIR)))
    monkeypatch.setattr(sources, "_load_hub", _no_hub)

    raw = load_raw("fmnist", None)

    assert raw.source == f"debian:{debian / 'fashion-mnist'}"


def _assert_fmnist_not_found(message: str) -> None:
    assert "\n" not in message
    for way in (
        "FEDLIGHT_DATA",
        "dataset.root",
        "fashion-mnist/",
        "dataset-fashion-mnist",
        "zalando-datasets/fashion_mnist",
    ):
        assert way in message


def test_fmnist_nothing_available_fails_fast() -> None:
    start = time.monotonic()
    with pytest.raises(DataNotFoundError) as err:
        load_raw("fmnist", None, hub=True)

    assert time.monotonic() - start < 5.0
    _assert_fmnist_not_found(str(err.value))


def test_default_endpoint_without_network_fails_fast(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HF_ENDPOINT")
    try:
        sources._probe_hub("zalando-datasets/fashion_mnist", 2.0)
    except sources._HubUnavailable:
        pass
    else:
        pytest.skip("the hub is reachable from this machine")

    start = time.monotonic()
    with pytest.raises(DataNotFoundError) as err:
        load_raw("fmnist", None, hub=True, hub_timeout_s=2.0)

    assert time.monotonic() - start < 4.0
    _assert_fmnist_not_found(str(err.value))


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An endpoint that accepts TCP connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)  # the kernel completes handshakes; nobody ever reads
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def test_unanswered_probe_is_bounded(
    monkeypatch: pytest.MonkeyPatch, silent_server: str
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", silent_server)

    start = time.monotonic()
    with pytest.raises(DataNotFoundError) as err:
        load_raw("fmnist", None, hub=True, hub_timeout_s=1.0)

    assert time.monotonic() - start < 4.0
    assert "timed out" in str(err.value)
    _assert_fmnist_not_found(str(err.value))


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Lets a deliberately hanging hub load end when the test is over."""
    event = threading.Event()
    yield event
    event.set()


def test_hanging_hub_load_is_bounded(
    monkeypatch: pytest.MonkeyPatch, release: threading.Event
) -> None:
    monkeypatch.setattr(sources, "_probe_hub", lambda name, timeout_s: None)
    monkeypatch.setattr(sources, "_load_hub_splits", lambda name: release.wait(60))
    monkeypatch.setattr(sources, "HUB_LOAD_TIMEOUT_S", 0.5)

    start = time.monotonic()
    with pytest.raises(DataNotFoundError, match="within 0.5 s"):
        load_raw("fmnist", None)

    assert time.monotonic() - start < 3.0


def test_offline_mode_skips_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline_load(name: str) -> None:
        raise ConnectionError(f"{name} is not in the cache")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(sources, "_probe_hub", _no_hub)
    monkeypatch.setattr(sources, "_load_hub_splits", offline_load)

    with pytest.raises(DataNotFoundError, match="not in the cache"):
        load_raw("fmnist", None)


def _image_split(images: np.ndarray, labels: np.ndarray) -> datasets.Dataset:
    """A split shaped like the hub's: PIL images in an Image feature, int labels."""
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(im) for im in images], "label": labels.tolist()},
        features=datasets.Features(
            {"image": datasets.Image(), "label": datasets.Value("int64")}
        ),
    )


def test_hub_split_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    splits = {
        "train": _image_split(train, np.arange(6) % 10),
        "test": _image_split(test, np.array([9, 8, 7, 6])),
    }
    monkeypatch.setattr(sources, "_probe_hub", lambda name, timeout_s: None)
    monkeypatch.setattr(sources, "_load_hub_splits", lambda name: splits)

    raw = load_raw("fmnist", None)

    assert raw.source == "hub:zalando-datasets/fashion_mnist"
    np.testing.assert_array_equal(raw.train_images, train)
    np.testing.assert_array_equal(raw.test_images, test)
    assert raw.train_images.dtype == np.uint8
    assert raw.test_labels.dtype == np.int64
    np.testing.assert_array_equal(raw.test_labels, [9, 8, 7, 6])


def test_unknown_name() -> None:
    with pytest.raises(
        ValueError, match="dataset.name='x' is not one of mnist, fmnist"
    ):
        load_raw("x", None)


def test_mismatched_counts(make_root: MakeRoot, write_idx: Callable[..., Path]) -> None:
    root = make_root("mnist", n_train=20)
    write_idx(root / "mnist" / "train-labels-idx1-ubyte.gz", np.zeros(19, np.uint8))

    with pytest.raises(ValueError, match="do not match"):
        load_raw("mnist", root)
