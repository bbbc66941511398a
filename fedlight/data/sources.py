"""Where the raw (Fashion-)MNIST arrays come from, tried in a fixed order.

1. An explicit data root (``dataset.root`` or the ``FEDLIGHT_DATA`` env var): read
   ``<root>/<folder>/`` and nothing else, so a wrong path fails loudly instead of
   silently training on other data.
2. Debian's ``dataset-fashion-mnist`` package (fmnist only).
3. The Hugging Face hub through flwr-datasets, behind a bounded reachability probe,
   because an unreachable hub otherwise takes ~23 s per name to fail.
4. The 10k-image MNIST subset shipped inside the package (mnist only).
5. Otherwise :class:`DataNotFoundError`, one line naming every way to provide data.
"""

from __future__ import annotations

import logging
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from fedlight.data.idx import read_idx

if TYPE_CHECKING:
    import datasets

log = logging.getLogger(__name__)

ROOT_ENV_VAR = "FEDLIGHT_DATA"
# Debian's dataset-* packages install under /usr/share/datasets/<folder>/.
DEBIAN_DATA_DIR = Path("/usr/share/datasets")
# Hard bound on one hub download after the probe succeeded (~30 MB per dataset);
# the worker thread is abandoned, not killed, when it is exceeded.
HUB_LOAD_TIMEOUT_S = 600.0
DEFAULT_HUB_ENDPOINT = "https://huggingface.co"

# The four IDX files of a dataset folder (each may also end in .gz).
IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the loaders need to know about one dataset name."""

    folder: str  # sub-folder of a data root, and of DEBIAN_DATA_DIR
    hub_name: str  # Hugging Face dataset id, loaded through flwr-datasets
    debian_package: str | None = None  # installs DEBIAN_DATA_DIR/<folder>/
    embedded: str | None = None  # folder under fedlight/data/embedded/
    embedded_tag: str | None = None  # how an embedded copy shows up in `source`
    num_classes: int = 10
    class_names: tuple[str, ...] = ()


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        folder="mnist",
        hub_name="ylecun/mnist",
        embedded="mnist",
        embedded_tag="mnist-10k-subset",
        class_names=tuple(str(d) for d in range(10)),
    ),
    "fmnist": DatasetSpec(
        folder="fashion-mnist",
        hub_name="zalando-datasets/fashion_mnist",
        debian_package="dataset-fashion-mnist",
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
}


@dataclass(frozen=True)
class RawData:
    """Decoded splits as loaded, before any resizing or normalisation."""

    train_images: np.ndarray  # (N, 28, 28) uint8
    train_labels: np.ndarray  # (N,) int64
    test_images: np.ndarray  # (M, 28, 28) uint8
    test_labels: np.ndarray  # (M,) int64
    source: str  # "local:/abs/dir", "debian:/dir", "hub:<id>" or "embedded:<tag>"


class DataNotFoundError(RuntimeError):
    """No source could provide the dataset; the message says how to provide it."""


class _HubUnavailable(RuntimeError):
    """The hub was skipped or failed; the message says why."""


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of ``name``, or a ValueError naming the allowed names."""
    if name not in DATASETS:
        raise ValueError(f"dataset.name={name!r} is not one of {', '.join(DATASETS)}")
    return DATASETS[name]


def resolve_root(root: str | os.PathLike[str] | None) -> Path | None:
    """The explicit data root: ``root`` if given, else $FEDLIGHT_DATA, else None."""
    if root is None or str(root) == "":
        root = os.environ.get(ROOT_ENV_VAR) or None
    return None if root is None else Path(root).expanduser().resolve()


def load_raw(
    name: str,
    root: str | os.PathLike[str] | None,
    hub: bool = True,
    hub_timeout_s: float = 10.0,
) -> RawData:
    """Load the train and test splits of ``name`` from the first source that has it.

    ``root`` None falls back to $FEDLIGHT_DATA; an explicit root is the only source
    tried. ``hub_timeout_s`` bounds the hub reachability probe (and the whole hub
    attempt in HF_HUB_OFFLINE mode); a started download is bounded by
    HUB_LOAD_TIMEOUT_S.
    """
    spec = dataset_spec(name)
    explicit = resolve_root(root)
    if explicit is not None:
        folder = explicit / spec.folder
        missing = _missing_files(folder)
        if missing:
            raise DataNotFoundError(
                f"dataset.root/{ROOT_ENV_VAR} is {explicit}, but {folder} lacks "
                f"{', '.join(f'{m}[.gz]' for m in missing)}: put the IDX files "
                f"there, or unset the root to use the default sources"
            )
        return _logged(name, _read_folder(folder, f"local:{folder}"))

    tried: list[str] = []
    if spec.debian_package is not None:
        folder = DEBIAN_DATA_DIR / spec.folder
        if not _missing_files(folder):
            return _logged(name, _read_folder(folder, f"debian:{folder}"))
        tried.append(f"no {spec.debian_package} files in {folder}")

    if hub:
        try:
            return _logged(name, _load_hub(spec, hub_timeout_s))
        except _HubUnavailable as err:
            log.warning("Hub source for %s unavailable: %s", name, err)
            tried.append(f"hub {spec.hub_name}: {err}")
    else:
        tried.append("hub disabled")

    if spec.embedded is not None:
        embedded = _load_embedded(spec)
        if embedded is not None:
            return _logged(name, embedded)
        tried.append("embedded copy missing from the installed package")

    raise DataNotFoundError(_how_to_provide(name, spec, tried, hub))


def _logged(name: str, raw: RawData) -> RawData:
    log.info(
        "Dataset %s: %d train / %d test images from %s",
        name,
        len(raw.train_labels),
        len(raw.test_labels),
        raw.source,
    )
    return raw


def _how_to_provide(name: str, spec: DatasetSpec, tried: list[str], hub: bool) -> str:
    """One line naming every way to make ``name`` available."""
    files = ", ".join(IDX_FILES.values())
    ways = [
        f"set {ROOT_ENV_VAR} or dataset.root to a folder holding {spec.folder}/ "
        f"with the IDX files {files} (each optionally .gz)"
    ]
    if spec.debian_package is not None:
        ways.append(
            f"install Debian's {spec.debian_package} "
            f"(fills {DEBIAN_DATA_DIR / spec.folder})"
        )
    enable = "" if hub else "enable hub loading and "
    ways.append(f"{enable}allow network access to the hub dataset {spec.hub_name}")
    if spec.embedded is not None:
        ways.append("reinstall fedlight with its package data (embedded subset)")
    reasons = " ".join("; ".join(tried).split())  # never more than one line
    return f"No {name} data found ({reasons}). Provide it: {'; or '.join(ways)}."


# --- local IDX folders (explicit root, Debian, embedded) ---------------------------


def _find_file(folder: Path, stem: str) -> Path | None:
    """``stem`` or ``stem.gz`` inside ``folder``; the unpacked file reads faster."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _missing_files(folder: Path) -> list[str]:
    return [stem for stem in IDX_FILES.values() if _find_file(folder, stem) is None]


def _read_folder(folder: Path, source: str) -> RawData:
    paths = {key: _find_file(folder, stem) for key, stem in IDX_FILES.items()}
    arrays = {key: read_idx(path) for key, path in paths.items() if path is not None}
    return _checked(arrays, source)


def _load_embedded(spec: DatasetSpec) -> RawData | None:
    """The subset shipped as package data; works from a wheel (zip-safe)."""
    base = resources.files("fedlight.data") / "embedded" / str(spec.embedded)
    arrays: dict[str, np.ndarray] = {}
    for key, stem in IDX_FILES.items():
        entry = base / f"{stem}.gz"
        if not entry.is_file():
            return None
        with resources.as_file(entry) as path:
            arrays[key] = read_idx(path)
    return _checked(arrays, f"embedded:{spec.embedded_tag}")


def _checked(arrays: dict[str, np.ndarray], source: str) -> RawData:
    """Validate shapes and turn labels into int64, the dtype torch losses want."""
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{source}: {split} images {images.shape} and labels {labels.shape} "
                f"do not match"
            )
    return RawData(
        train_images=arrays["train_images"],
        train_labels=arrays["train_labels"].astype(np.int64),
        test_images=arrays["test_images"],
        test_labels=arrays["test_labels"].astype(np.int64),
        source=source,
    )


# --- the hub ------------------------------------------------------------------------

T = TypeVar("T")


def _hub_offline_mode() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {
        "1",
        "ON",
        "YES",
        "TRUE",
    }


def _probe_hub(hub_name: str, timeout_s: float) -> None:
    """Ask the hub API ($HF_ENDPOINT honoured) whether ``hub_name`` is served.

    A real HTTP(S) request, not a bare TCP connect: sandboxes and proxies accept
    connections to anything, and only an HTTP answer shows the hub is there.
    """
    endpoint = (os.environ.get("HF_ENDPOINT") or DEFAULT_HUB_ENDPOINT).rstrip("/")
    url = f"{endpoint}/api/datasets/{hub_name}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            pass
    except urllib.error.HTTPError as err:
        raise _HubUnavailable(f"{url} answered HTTP {err.code}") from err
    except (OSError, ValueError) as err:  # URLError, timeouts, malformed endpoint
        reason = getattr(err, "reason", err)
        raise _HubUnavailable(f"{url} unreachable ({reason})") from err


def _bounded(fn: Callable[[], T], timeout_s: float, what: str) -> T:
    """Run ``fn`` in a daemon thread and give up waiting after ``timeout_s``.

    A thread, not a socket timeout, because DNS lookups and the datasets library's
    retries are not bounded by any one setting.
    """
    result: dict[str, object] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as err:  # handed to the caller, which re-raises
            result["error"] = err

    worker = threading.Thread(target=target, name=f"fedlight-{what}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise _HubUnavailable(f"{what} gave no answer within {timeout_s:g} s")
    if "error" in result:
        err = result["error"]
        if isinstance(err, _HubUnavailable):
            raise err
        raise _HubUnavailable(f"{what} failed ({type(err).__name__}: {err})") from err
    return result["value"]  # type: ignore[return-value]


def _load_hub(spec: DatasetSpec, timeout_s: float) -> RawData:
    """Download both full splits through flwr-datasets, or raise _HubUnavailable.

    In HF_HUB_OFFLINE mode the load can only hit the local cache, so the probe is
    skipped and the whole load gets the short bound instead.
    """
    if _hub_offline_mode():
        load_bound = timeout_s
    else:
        # the socket timeout normally fires first; the thread bound covers DNS
        _bounded(
            lambda: _probe_hub(spec.hub_name, timeout_s), timeout_s + 1.0, "hub probe"
        )
        load_bound = HUB_LOAD_TIMEOUT_S
    splits = _bounded(
        lambda: _load_hub_splits(spec.hub_name), load_bound, f"hub load {spec.hub_name}"
    )
    arrays: dict[str, np.ndarray] = {}
    for split, dataset in splits.items():
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = hub_split_to_arrays(
            dataset
        )
    return _checked(arrays, f"hub:{spec.hub_name}")


def _load_hub_splits(hub_name: str) -> dict[str, datasets.Dataset]:
    from flwr_datasets import FederatedDataset

    # shuffle=False keeps the published order; nothing is partitioned here.
    fds = FederatedDataset(dataset=hub_name, partitioners={}, shuffle=False)
    return {"train": fds.load_split("train"), "test": fds.load_split("test")}


def hub_split_to_arrays(split: datasets.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) uint8 images and (N,) int64 labels from an image/label split."""
    images = np.stack(
        [np.asarray(image.convert("L"), dtype=np.uint8) for image in split["image"]]
    )
    labels = np.asarray(split.with_format("arrow")["label"], dtype=np.int64)
    return images, labels
