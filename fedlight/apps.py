"""fedlight's ServerApp and ClientApp for Flower's own runtime (``flwr run``).

The same pieces as :func:`fedlight.simulate.simulate`, so an experiment moves from
the simulation engine to a real deployment (a SuperLink and one SuperNode per
client) without changing its results:

- ``server_app`` composes fedlight's Hydra config from the run config (keys
  ``experiment``, ``overrides``, ``out-dir`` of ``[tool.flwr.app.config]``,
  overridable with ``flwr run --run-config``), builds the plan ``simulate()``
  builds and runs :func:`fedlight.server.run_rounds`; it writes ``results.json``
  into the run directory on the SuperLink's machine.
- ``client_app`` takes its partition from the SuperNode's node config
  (``--node-config "partition-id=0 num-partitions=2"``), loads the data from its
  own machine's files (``data-root`` in the node config, else ``dataset.root`` /
  ``$FEDLIGHT_DATA``), partitions it with the run's seed exactly as the server
  would, and trains with :func:`fedlight.client.fit_client`.

No Ray here: the data bundle is a plain dict (:func:`fedlight.client.resolve_bundle`
accepts one), and every message runs in a fresh ClientApp process.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from omegaconf import DictConfig

from fedlight.checks import ConfigError, check_config
from fedlight.client import make_client_app
from fedlight.registry import compose_config
from fedlight.server import run_rounds
from fedlight.simulate import (
    build_plan,
    finish_run,
    make_tracker,
    open_run_dir,
    prepare_experiment,
    track_rounds,
)

log = logging.getLogger("fedlight")

#: The run-config keys fedlight reads (defaults in pyproject's [tool.flwr.app.config]).
EXPERIMENT_KEY = "experiment"
OVERRIDES_KEY = "overrides"
OUT_DIR_KEY = "out-dir"
#: Node-config keys: Flower's own partition keys plus fedlight's optional ones.
PARTITION_KEY = "partition-id"
NUM_PARTITIONS_KEY = "num-partitions"
DATA_ROOT_KEY = "data-root"
NUM_THREADS_KEY = "num-threads"


def config_dir() -> Path:
    """fedlight's Hydra config folder.

    Flower puts the app's FAB (which ships ``configs/`` beside ``fedlight/``) first
    on ``sys.path``, so the ``fedlight`` imported there has no ``fedlight.configs``
    subpackage: look beside the package first, then in the installed package.
    """
    beside = Path(__file__).resolve().parents[1] / "configs"
    if (beside / "config.yaml").is_file():
        return beside
    return Path(str(files("fedlight.configs")))


def hydra_overrides(run_config: dict[str, Any]) -> list[str]:
    """The Hydra overrides a run config asks for, in command-line form."""
    overrides = []
    experiment = str(run_config.get(EXPERIMENT_KEY) or "").strip()
    if experiment:
        overrides.append(f"+experiment={experiment}")
    overrides += shlex.split(str(run_config.get(OVERRIDES_KEY) or ""))
    return overrides


def compose_run_config(
    run_config: dict[str, Any], extra: list[str] | None = None
) -> DictConfig:
    """fedlight's config for a Flower run, composed as ``fedlight.run`` would.

    ``extra`` overrides come last (a node's own data root, for instance).
    """
    overrides = [*hydra_overrides(run_config), *(extra or [])]
    return compose_config(overrides, config_dir())


def run_dir(context: Context) -> Path:
    """Where the ServerApp writes: ``out-dir``, else ``outputs/flwr-run/<time>``.

    A relative path is relative to the working directory of the process that
    runs the ServerApp (the SuperLink's, with its default subprocess isolation).
    """
    chosen = str(context.run_config.get(OUT_DIR_KEY) or "").strip()
    if chosen:
        return Path(chosen).expanduser()
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    return Path("outputs") / "flwr-run" / f"{stamp}-{context.run_id}"


def _show_fedlight_logs() -> None:
    """Send fedlight's round lines to stderr: ``flwr log`` and the SuperLink's
    output show them (Hydra sets this up in simulation)."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[fedlight] %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


server_app = ServerApp()
# A round's replies are polled from the SuperLink over the network: every 0.1 s
# with one reply out, 1 s with ten or more (Flower's own loop sleeps 3 s).
DEPLOYMENT_POLL_S = 0.1


@server_app.main()
def server_main(grid: Grid, context: Context) -> None:
    """Run one fedlight experiment over the SuperNodes connected to this SuperLink."""
    started = time.perf_counter()
    _show_fedlight_logs()
    cfg = compose_run_config(dict(context.run_config))
    check_config(cfg)
    out_dir, resumed = open_run_dir(cfg, run_dir(context))
    log.info("run %s: writing to %s", context.run_id, out_dir.resolve())
    exp = prepare_experiment(cfg)
    plan = build_plan(cfg, exp, out_dir, resumed)
    plan.poll_s = DEPLOYMENT_POLL_S
    tracker = make_tracker(cfg, out_dir)
    track_rounds(cfg, plan, tracker)
    run_rounds(grid, plan)
    finish_run(cfg, exp, plan, out_dir, tracker, started)


def node_config_value(context: Context, key: str) -> Any:
    """A node-config value, or None: SuperNodes set only what they are given."""
    return context.node_config.get(key)


def node_app(context: Context) -> ClientApp:
    """The simulation's ClientApp, built for this node from its own data files.

    Raises :class:`ConfigError` when the node's ``num-partitions`` disagrees with
    the run's ``num_clients``: its partition would hold other samples than the
    server assumes.
    """
    extra = []
    if (root := node_config_value(context, DATA_ROOT_KEY)) is not None:
        extra.append(f"dataset.root={root}")
    cfg = compose_run_config(dict(context.run_config), extra)
    check_config(cfg)
    partitions = node_config_value(context, NUM_PARTITIONS_KEY)
    if partitions is not None and int(partitions) != cfg.num_clients:
        raise ConfigError(
            f"node config {NUM_PARTITIONS_KEY}={partitions} does not match the "
            f"run's num_clients={cfg.num_clients}"
        )
    exp = prepare_experiment(cfg)
    threads = node_config_value(context, NUM_THREADS_KEY) or os.cpu_count() or 1
    return make_client_app(exp.client_spec(cfg, exp.bundle(), int(threads)))


client_app = ClientApp()


@client_app.train()
def client_train(msg: Message, context: Context) -> Message:
    """Train on this node's partition, as a simulated client would."""
    return node_app(context)(msg, context)


@client_app.query()
def client_query(msg: Message, context: Context) -> Message:
    """Tell the server which partition this node holds."""
    return node_app(context)(msg, context)
