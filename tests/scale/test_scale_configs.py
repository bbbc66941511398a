"""The scale settings: the `cluster` simulation group, how start_ray joins a
cluster, and the 1,000-client experiment's partition and per-round sampling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf

from fedlight.checks import check_config
from fedlight.server import sample_clients
from support import REPO, compose_config


def test_cluster_group_has_every_key_of_local():
    local = OmegaConf.load(REPO / "configs" / "simulation" / "local.yaml")
    cluster = OmegaConf.load(REPO / "configs" / "simulation" / "cluster.yaml")
    assert set(local) <= set(cluster)
    assert set(local.client_resources) == set(cluster.client_resources)


def captured_init(monkeypatch, overrides: list[str]) -> dict[str, Any]:
    """The keyword arguments start_ray passes to ray.init for ``overrides``."""
    import ray

    from fedlight.simulate import start_ray

    seen: dict[str, Any] = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    assert start_ray(compose_config(overrides)) is True
    return seen


def test_joining_a_cluster_passes_only_the_address_and_init_args(monkeypatch):
    kwargs = captured_init(
        monkeypatch,
        [
            "simulation=cluster",
            "simulation.ray_address=10.0.0.1:6379",
            "+simulation.init_args.namespace=fedlight",
            "simulation.num_cpus=4",  # ignored when joining
            "simulation.ray_temp_dir=/tmp/x",  # ignored when joining
        ],
    )
    assert kwargs["address"] == "10.0.0.1:6379"
    assert kwargs["namespace"] == "fedlight"
    assert not {"num_cpus", "num_gpus", "_temp_dir"} & set(kwargs)


def test_local_ray_gets_cpus_and_temp_dir(monkeypatch, tmp_path: Path):
    kwargs = captured_init(
        monkeypatch,
        ["simulation.num_cpus=2", f"simulation.ray_temp_dir={tmp_path}"],
    )
    assert "address" not in kwargs
    assert kwargs["num_cpus"] == 2 and kwargs["_temp_dir"] == str(tmp_path)


def test_mnist_1000_samples_50_of_1000_clients_per_round():
    cfg = compose_config(["+experiment=mnist_1000"])
    check_config(cfg)
    assert (cfg.num_clients, cfg.clients_per_round) == (1000, 50)
    assert (cfg.partition.name, cfg.partition.alpha) == ("dirichlet", 0.5)
    rounds = [sample_clients(cfg.seed, r, 1000, 50) for r in range(1, 11)]
    for chosen in rounds:
        assert len(set(chosen)) == 50 and chosen == sorted(chosen)
        assert 0 <= chosen[0] and chosen[-1] < 1000
    assert len({tuple(c) for c in rounds}) == 10, "every round draws anew"
    assert rounds[0] == sample_clients(cfg.seed, 1, 1000, 50), "reproducible"
    # Over 10 rounds about 40% of the clients take part: sampling, not cycling.
    assert 300 < len({c for chosen in rounds for c in chosen}) <= 500


@pytest.mark.slow
def test_mnist_1000_partition_gives_every_client_data(data_root: Path):
    from fedlight.simulate import prepare_experiment

    cfg = compose_config(
        ["+experiment=mnist_1000", f"dataset.root={data_root}", "dataset.hub=false"]
    )
    experiment = prepare_experiment(cfg)  # the partitions a run uses
    data, parts = experiment.data, experiment.partitions
    sizes = np.array([len(p) for p in parts])
    assert len(parts) == 1000 and sizes.min() >= 1
    assert sizes.sum() == len(data.train_y)
    assert len(np.unique(np.concatenate(parts))) == len(data.train_y)
