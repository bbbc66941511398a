"""Datasets: raw sources, one-time preparation, and client partitions.

``load_raw`` finds the IDX data (explicit root, Debian, hub, embedded subset),
``prepare`` resizes and normalises it once, ``partition_indices`` splits the train
indices across clients with flwr-datasets' partitioners.
"""

from fedlight.data.idx import read_idx
from fedlight.data.partition import PARTITIONS, partition_indices
from fedlight.data.prepare import PreparedData, load_dataset, prepare
from fedlight.data.sources import (
    DATASETS,
    DataNotFoundError,
    DatasetSpec,
    RawData,
    dataset_spec,
    load_raw,
)

__all__ = [
    "DATASETS",
    "PARTITIONS",
    "DataNotFoundError",
    "DatasetSpec",
    "PreparedData",
    "RawData",
    "dataset_spec",
    "load_dataset",
    "load_raw",
    "partition_indices",
    "prepare",
    "read_idx",
]
