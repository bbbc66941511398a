"""fedlight's ServerApp and ClientApp on Flower's own runtime: a local SuperLink,
two SuperNodes and ``flwr run``, in the clear and then secured (TLS with
certificates made here, SuperNode authentication)."""

from __future__ import annotations

import io
import json
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from deployment import (
    Deployment,
    Relay,
    make_certificates,
    make_node_key,
    missing_binaries,
    wait_for_exit,
)
from flwr.app import Context, RecordDict
from ports import free_port

from fedlight.apps import compose_run_config, config_dir, node_app
from fedlight.checks import ConfigError
from fedlight.client import fit_client
from fedlight.simulate import build_plan, prepare_experiment
from support import REPO

OVERRIDES = (
    "num_clients=2 num_rounds=1 client.epochs=1 dataset.max_train_samples=200 "
    "wandb.mode=disabled simulation.round_timeout_s=120 "
    "attack.malicious_clients=[0]"  # the attacks' own default is no attacker
)
RUN_TIMEOUT_S = 240

needs_flower = pytest.mark.skipif(
    bool(missing_binaries()),
    reason=f"Flower's commands are not installed: {missing_binaries()}",
)


# --- the apps' configuration, without a deployment ----------------------------


def test_run_config_composes_fedlight_config() -> None:
    cfg = compose_run_config(
        {"experiment": "mnist_20", "overrides": "num_rounds=2 defense=krum"}
    )
    assert cfg.num_clients == 20 and cfg.num_rounds == 2
    assert cfg.defense.name == "krum" and "_target_" not in cfg.defense
    # The experiment's threat model, and the server's bound on attackers.
    assert cfg.attack.name == "backdoor" and list(cfg.attack.malicious_clients) == [0]
    assert cfg.server.max_attackers == 1
    assert compose_run_config({"experiment": "", "overrides": ""}).num_rounds == 15


def test_pyproject_declares_the_apps_and_no_federations() -> None:
    """flwr 1.42 moves a [tool.flwr.federations] table out of pyproject.toml (and
    comments it out there) on ``flwr run``: connections belong in FLWR_HOME."""
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]
    assert "federations" not in tool
    components = tool["app"]["components"]
    assert components == {
        "serverapp": "fedlight.apps:server_app",
        "clientapp": "fedlight.apps:client_app",
    }
    assert set(tool["app"]["config"]) == {"experiment", "overrides", "out-dir"}


def test_fab_ships_the_package_and_its_configs() -> None:
    from flwr.cli.build import build_fab_from_disk

    names = set(zipfile.ZipFile(io.BytesIO(build_fab_from_disk(REPO))).namelist())
    assert {"fedlight/apps.py", "fedlight/client.py", "configs/config.yaml"} <= names
    assert "configs/experiment/mnist_20.yaml" in names
    assert not any(n.startswith(("tests/", "docs/", "benchmarks/")) for n in names)
    assert config_dir() == REPO / "configs"


def test_node_refuses_a_partition_count_unlike_the_run() -> None:
    context = Context(
        run_id=1,
        node_id=1,
        node_config={"partition-id": 0, "num-partitions": 3},
        state=RecordDict(),
        run_config={"experiment": "", "overrides": "num_clients=2"},
    )
    with pytest.raises(ConfigError, match="num-partitions=3"):
        node_app(context)


# --- real deployments ---------------------------------------------------------


def start_run(dep: Deployment, connection: str, out_dir: Path) -> str:
    """``flwr run`` the checkout on ``connection``; the run id."""
    run_config = f'overrides="{OVERRIDES}" out-dir="{out_dir}"'
    proc = dep.flwr(
        "run", str(REPO), connection, "--run-config", run_config, "--format", "json"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr + dep.logs()
    return json.loads(proc.stdout)["run-id"]


def expected_client_0(
    data_root: Path, tmp: Path
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """What client 0 sends in round 1, computed here as the simulation would:
    its metrics and four short stretches of its trained weights.

    Several stretches, because the HTTP body crosses the relay in chunks whose
    boundaries vary from run to run: one stretch can be split by a chunk header
    (it happened once here), four far apart cannot all be."""
    cfg = compose_run_config({"overrides": OVERRIDES}, [f"dataset.root={data_root}"])
    exp = prepare_experiment(cfg)
    plan = build_plan(cfg, exp, tmp)
    threads = torch.get_num_threads()
    try:
        state, metrics = fit_client(
            exp.client_spec(cfg, exp.bundle(), 1),
            0,
            plan.initial_arrays.to_torch_state_dict(),
            1,
        )
    finally:
        torch.set_num_threads(threads)
    # Raw float32 bytes inside the update's npy payload, from the largest tensor.
    biggest = max(state.values(), key=lambda t: t.numel()).numpy().ravel()
    starts = [len(biggest) * k // 5 for k in range(1, 5)]
    return metrics, [biggest[i : i + 8].copy() for i in starts]


def holds_floats(blob: bytes, stretch: np.ndarray) -> bool:
    """Whether ``blob`` carries ``stretch`` as consecutive float32 values, equal
    to rounding: the SuperNode's process trains the same steps but its float
    sums can differ from ours in the last bits (a byte-exact search failed in CI)."""
    n = len(stretch)
    for align in range(4):
        usable = (len(blob) - align) // 4 * 4
        values = np.frombuffer(blob, dtype="<f4", count=usable // 4, offset=align)
        if len(values) < n:
            continue
        windows = np.lib.stride_tricks.sliding_window_view(values, n)
        with np.errstate(invalid="ignore"):
            close = np.isclose(windows, stretch, rtol=1e-4, atol=1e-6).all(axis=1)
        if close.any():
            return True
    return False


def check_results(out_dir: Path, client_0: dict[str, Any]) -> dict[str, Any]:
    """results.json of a finished 2-client, 1-round run; client 0 as in simulation."""
    results = json.loads((out_dir / "results.json").read_text())
    assert results["malicious_clients"] == ["0"]
    assert results["data_source"].startswith("local:")
    (record,) = results["rounds"]
    assert record["participants"] == ["0", "1"] and record["failures"] == {}
    assert 0.0 <= record["accuracy"] <= 1.0 and record["loss"] > 0
    assert set(record["clients"]) == {"0", "1"}
    got = record["clients"]["0"]
    assert got["train-examples"] == client_0["train-examples"] == 100
    assert got["train-loss"] == pytest.approx(client_0["train-loss"], abs=1e-5)
    assert (out_dir / "config.yaml").is_file()
    return results


@pytest.mark.slow
@needs_flower
def test_flwr_run_on_a_local_deployment(tmp_path: Path, data_root: Path) -> None:
    """Insecure SuperLink + 2 SuperNodes; also the control for the TLS test: the
    relay in front of SuperNode 0 sees its update in clear text."""
    client_0, update_floats = expected_client_0(data_root, tmp_path / "expected")
    dep = Deployment(tmp_path, {"FEDLIGHT_DATA": str(data_root)})
    relay = None
    try:
        port = free_port()
        dep.superlink(port, tls=None, auth=False)
        relay = Relay(port)
        for pid, address in enumerate((relay.port, port)):
            dep.supernode(
                f"supernode-{pid}",
                f"127.0.0.1:{address}",
                f"partition-id={pid} num-partitions=2 num-threads=1",
            )
        dep.connection("fedlight-local", port)
        out_dir = tmp_path / "run"
        run_id = start_run(dep, "fedlight-local", out_dir)
        status = dep.wait_for_run(
            "fedlight-local", run_id, out_dir / "results.json", RUN_TIMEOUT_S
        )
        assert status == "finished:completed", status + dep.logs()
        check_results(out_dir, client_0)

        upstream = relay.upstream
        assert b"POST /v1/fleet/" in upstream and b"num-examples" in upstream
        # the trained weights, readable by anyone
        assert any(holds_floats(upstream, s) for s in update_floats)
    finally:
        if relay is not None:
            relay.close()
        dep.stop()


@pytest.mark.slow
@needs_flower
def test_secure_deployment_refuses_strangers_and_encrypts_updates(
    tmp_path: Path, data_root: Path
) -> None:
    """TLS from certificates made here, SuperNode authentication with registered
    keys: the registered SuperNodes train; one without a key and one with an
    unregistered key are refused; nothing readable crosses the wire."""
    client_0, update_floats = expected_client_0(data_root, tmp_path / "expected")
    certs = make_certificates(tmp_path / "certs")
    keys = tmp_path / "keys"
    keys.mkdir()
    node_keys = [make_node_key(keys, f"supernode-{i}") for i in range(2)]
    stranger_key, _ = make_node_key(keys, "stranger")

    dep = Deployment(tmp_path, {"FEDLIGHT_DATA": str(data_root)})
    relay = None
    try:
        port = free_port()
        dep.superlink(port, tls=certs, auth=True)
        dep.connection("fedlight-secure", port, certs.ca_cert)
        for _, public in node_keys:
            reg = dep.flwr("supernode", "register", str(public), "fedlight-secure")
            assert reg.returncode == 0, reg.stdout + reg.stderr
            assert "registered successfully" in reg.stdout

        # Strangers first: their refusal must not depend on the run.
        nameless = dep.supernode(
            "stranger-without-key",
            f"127.0.0.1:{port}",
            "partition-id=0 num-partitions=2",
            ca_cert=certs.ca_cert,
        )
        unknown = dep.supernode(
            "stranger-unregistered-key",
            f"127.0.0.1:{port}",
            "partition-id=1 num-partitions=2",
            ca_cert=certs.ca_cert,
            private_key=stranger_key,
        )
        relay = Relay(port)
        for pid, ((private, _), address) in enumerate(
            zip(node_keys, (relay.port, port), strict=True)
        ):
            dep.supernode(
                f"supernode-{pid}",
                f"127.0.0.1:{address}",
                f"partition-id={pid} num-partitions=2 num-threads=1",
                ca_cert=certs.ca_cert,
                private_key=private,
            )

        # Refused: the SuperLink answers 412 and the SuperNode exits with an error.
        assert wait_for_exit(nameless, 90) == 1, dep.logs()
        assert "[code: 2001] SuperNode authentication is enabled" in nameless.log()
        assert wait_for_exit(unknown, 90) == 1, dep.logs()
        assert "[code: 2004] Failed to activate SuperNode" in unknown.log()

        out_dir = tmp_path / "run"
        run_id = start_run(dep, "fedlight-secure", out_dir)
        status = dep.wait_for_run(
            "fedlight-secure", run_id, out_dir / "results.json", RUN_TIMEOUT_S
        )
        assert status == "finished:completed", status + dep.logs()
        check_results(out_dir, client_0)

        # Encrypted: every connection of SuperNode 0 opens with a TLS handshake
        # record, and neither its requests nor its update can be read on the wire.
        assert relay.streams
        for up, down in relay.streams:
            assert bytes(up[:1]) == b"\x16", bytes(up[:16])  # TLS handshake
            if down:
                assert bytes(down[:1]) == b"\x16", bytes(down[:16])
        upstream = relay.upstream
        assert len(upstream) > 50_000  # the update did go through the relay
        assert b"/v1/fleet" not in upstream and b"num-examples" not in upstream
        assert not any(holds_floats(upstream, s) for s in update_floats)

        # And the SuperLink speaks nothing but TLS: a plain HTTP request fails.
        with pytest.raises(httpx.HTTPError):
            httpx.post(
                f"http://127.0.0.1:{port}/v1/fleet/register-node",
                content=b"",
                timeout=10,
            )
    finally:
        if relay is not None:
            relay.close()
        dep.stop()
