"""``simulation.ray_address`` joins a running Ray cluster: a two-node cluster on
loopback runs the smoke experiment with client actors on both nodes, and the
results equal a local run's for the same seed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from raynodes import LoopbackCluster, running

from support import SMOKE, compose_config


def without_timing(value: Any) -> Any:
    """``value`` without its wall-clock figures (``seconds``, ``train_seconds``,
    ``fit-seconds``, ...), which differ between any two runs."""
    if isinstance(value, dict):
        return {
            k: without_timing(v) for k, v in value.items() if not k.endswith("seconds")
        }
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def actor_placement(address: str) -> tuple[set[str], dict[str, set[str]]]:
    """The cluster's alive node ids and, per actor class, the nodes its actors
    ran on, from the GCS's actor table (it keeps finished jobs' actors)."""
    import ray
    from ray._private import state

    ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    try:
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        placed: dict[str, set[str]] = {}
        for actor in state.actors().values():
            placed.setdefault(actor["ActorClassName"], set()).add(
                actor["Address"]["NodeID"]
            )
    finally:
        ray.shutdown()
    return nodes, placed


@pytest.mark.slow
def test_cluster_run_uses_both_nodes_and_matches_local_run(
    data_root: Path, tmp_path: Path, ray_tmp: str
) -> None:
    from fedlight.simulate import simulate

    overrides = [*SMOKE, f"dataset.root={data_root}", "seed=3"]
    local_cfg = compose_config(
        [*overrides, "simulation.num_cpus=2", f"simulation.ray_temp_dir={ray_tmp}"]
    )
    simulate(local_cfg, tmp_path / "local")

    cluster = LoopbackCluster(num_cpus=1, workers=1)
    with cluster:
        ours = cluster.pids()
        address = f"simulation.ray_address={cluster.address}"
        cfg = compose_config([*overrides, "simulation=cluster", address])
        assert cfg.simulation.ray_address == cluster.address
        simulate(cfg, tmp_path / "cluster")
        nodes, placed = actor_placement(cluster.address)
    assert not [pid for pid in ours if running(pid)], "our Ray processes outlived us"

    # One CPU per node and one per client actor: the pool spans both nodes.
    assert len(nodes) == 2
    assert placed.get("ClientAppActor") == nodes, placed
    local = json.loads((tmp_path / "local" / "results.json").read_text())
    remote = json.loads((tmp_path / "cluster" / "results.json").read_text())
    assert [r["participants"] for r in remote["rounds"]] == [["0", "1", "2", "3"]] * 2
    assert without_timing(remote) == without_timing(local)
