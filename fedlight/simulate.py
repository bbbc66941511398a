"""``simulate(cfg, out_dir)``: one federated experiment, start to finish.

Validates the config, loads and partitions the data, starts (or joins) Ray,
runs Flower's simulation engine with fedlight's ClientApp and ServerApp, and
writes ``results.json``, the per-round plot and the resolved config into
``out_dir``. The Hydra entry point :mod:`fedlight.run` is a thin wrapper.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord
from omegaconf import DictConfig, OmegaConf

from fedlight.attacks import Attack
from fedlight.checkpoint import FILENAME as CHECKPOINT
from fedlight.checkpoint import MEMORY_DIR, load_checkpoint, memory_rounds
from fedlight.checks import (
    ConfigError,
    build_attack,
    build_defense,
    check_config,
    check_gpu_budget,
)
from fedlight.client import ClientSpec, make_client_app
from fedlight.console import RoundProgress, log_round, summary_table
from fedlight.data import PreparedData, load_dataset, partition_indices
from fedlight.defenses import DefenseContext
from fedlight.evaluation import Evaluator
from fedlight.models import build_model
from fedlight.plotting import plot_rounds
from fedlight.record import RoundRecord
from fedlight.server import ServerPlan, make_server_app
from fedlight.tracking import Tracker

log = logging.getLogger("fedlight")


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically: a killed run never leaves a half-written file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


def start_ray(cfg: DictConfig) -> bool:
    """Start a local Ray (or join ``simulation.ray_address``); True if we did."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    sim = cfg.simulation
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "log_to_driver": False,
        "configure_logging": True,
    }
    if sim.ray_address:
        # Joining: the cluster's nodes declare their CPUs, GPUs and temp dirs.
        kwargs["address"] = sim.ray_address
    else:
        kwargs["num_cpus"] = sim.num_cpus or os.cpu_count()
        if sim.num_gpus is not None:
            kwargs["num_gpus"] = sim.num_gpus
        if sim.ray_temp_dir:
            kwargs["_temp_dir"] = str(Path(sim.ray_temp_dir).resolve())
    # simulation.init_args (cluster.yaml): namespace, runtime_env, ...
    if sim.get("init_args"):
        kwargs.update(OmegaConf.to_container(sim.init_args, resolve=True))
    ray.init(**kwargs)
    return True


class _DropDeprecation(logging.Filter):
    """Drop Flower's notice that ``run_simulation`` is deprecated: fedlight
    chooses the in-process simulation engine on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "DEPRECATED FEATURE" not in str(record.msg)


def quiet_libraries() -> None:
    """Keep the console for fedlight's own lines: Flower's INFO chatter, Ray's
    and alembic's setup lines go to WARNING."""
    for name in ("flwr", "ray", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    flwr_logger = logging.getLogger("flwr")
    if not any(isinstance(f, _DropDeprecation) for f in flwr_logger.filters):
        flwr_logger.addFilter(_DropDeprecation())


# Keys that may change between a run and its resumption without changing results.
_RESUMABLE_KEYS = ("resume", "wandb", "simulation", "faults", "name", "skip_finished")


def config_fingerprint(cfg: DictConfig) -> str:
    """A hash of everything that determines a run's results."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    for key in _RESUMABLE_KEYS:
        plain.pop(key, None)
    text = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resume_state(cfg: DictConfig, out_dir: Path) -> dict[str, Any] | None:
    """The checkpoint to resume from, checked against ``cfg``; None for a new run."""
    if not cfg.get("resume"):
        return None
    path = out_dir / CHECKPOINT
    if not path.is_file():
        raise ConfigError(
            f"resume={cfg.resume!r} is not allowed: {path} does not exist "
            "(give the run directory of an earlier run of this config)"
        )
    state = load_checkpoint(path)
    if state["fingerprint"] != config_fingerprint(cfg):
        raise ConfigError(
            f"resume={cfg.resume!r} is not allowed: that run used a different config "
            f"(see {out_dir / 'config.yaml'}); only wandb, simulation and faults "
            "settings may change on resume"
        )
    return state


@dataclass
class Experiment:
    """The data, partitions and attack of one run: what server and clients share.

    Both runtimes build it from the config with :func:`prepare_experiment`, so a
    ClientApp on a SuperNode that loads its own files partitions them exactly as
    the simulation does.
    """

    data: PreparedData
    partitions: list[np.ndarray]
    attack: Attack

    @property
    def malicious(self) -> list[str]:
        """The attackers' partition ids, as results speak of them."""
        return [str(c) for c in self.attack.malicious_clients]

    def bundle(self) -> dict[str, Any]:
        """What a client needs of the data: the train split and the partitions."""
        return {
            "train_x": self.data.train_x,
            "train_y": self.data.train_y,
            "partitions": self.partitions,
            "pixel_max": self.data.pixel_max(),
        }

    def evaluator(self, cfg: DictConfig) -> Evaluator:
        """Server-side clean accuracy, loss and ASR on the test split."""
        data = self.data
        test_x, test_y = torch.from_numpy(data.test_x), torch.from_numpy(data.test_y)
        asr = self.attack.asr_set(test_x, test_y, data.pixel_max())
        attack, pixel_max = self.attack, data.pixel_max()
        return Evaluator(
            build_model(cfg.model.name, data.num_classes, data.input_shape[0]),
            test_x,
            test_y,
            asr_x=asr[0] if asr else None,
            asr_y=asr[1] if asr else None,
            batch_size=cfg.eval.batch_size,
            device=cfg.device,
            asr_from=lambda trigger: attack.asr_set(test_x, test_y, pixel_max, trigger),
        )

    def defense_context(self, cfg: DictConfig) -> DefenseContext:
        """What the defence may know besides the replies."""
        return DefenseContext(
            model=cfg.model.name,
            num_classes=self.data.num_classes,
            input_shape=self.data.input_shape,
            mean=self.data.mean,
            std=self.data.std,
            seed=cfg.seed,
            max_attackers=cfg.server.max_attackers,
            device=cfg.device,
            memory_format=cfg.model.get("memory_format") or "contiguous",
        )

    def client_spec(
        self,
        cfg: DictConfig,
        data: Any,
        num_threads: int,
        memory_dir: Path | None = None,
        resumed_after: int = 0,
    ) -> ClientSpec:
        """The ClientApp's spec; ``data`` is :meth:`bundle` or a Ray ref to it;
        ``memory_dir``: where attackers also keep their memory (a simulation's)."""
        return ClientSpec(
            data=data,
            model=cfg.model.name,
            num_classes=self.data.num_classes,
            in_channels=self.data.input_shape[0],
            attack=self.attack,
            epochs=cfg.client.epochs,
            lr=cfg.client.lr,
            batch_size=cfg.client.batch_size,
            optimizer=cfg.client.optimizer,
            memory_format=cfg.model.get("memory_format") or "contiguous",
            fused_optimizer=bool(cfg.client.get("fused_optimizer", False)),
            device=cfg.device,
            seed=cfg.seed,
            num_threads=num_threads,
            faults=OmegaConf.to_container(cfg.faults, resolve=True),
            memory_dir=str(memory_dir) if memory_dir is not None else None,
            resumed_after=resumed_after,
        )


def prepare_experiment(cfg: DictConfig) -> Experiment:
    """Load and partition the data and build the attack, seeded by ``cfg.seed``."""
    data = load_dataset(
        cfg.dataset.name,
        cfg.dataset.root,
        image_size=cfg.dataset.image_size,
        max_train_samples=cfg.dataset.max_train_samples,
        seed=cfg.seed,
        hub=cfg.dataset.hub,
        hub_timeout_s=cfg.dataset.hub_timeout_s,
    )
    log.info(
        "data: %s (%d train, %d test)", data.source, len(data.train_y), len(data.test_y)
    )
    partitions = partition_indices(
        data.train_y,
        cfg.num_clients,
        kind=cfg.partition.name,
        alpha=cfg.partition.alpha,
        seed=cfg.seed,
        min_partition_size=cfg.partition.min_partition_size,
    )
    attack: Attack = build_attack(cfg)
    return Experiment(data=data, partitions=partitions, attack=attack)


# What decides a run's results: an edit elsewhere (docs, a remade table) is not
# a change of the code that ran.
CODE_PATHS = ("fedlight", "configs", "pyproject.toml")


def code_version(root: Path | None = None) -> dict[str, Any] | None:
    """The git commit of the fedlight checkout that ran, and whether its tracked
    code (:data:`CODE_PATHS`) differed from it (results name the code they came
    from); None outside a git checkout."""
    root = root or Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            [
                *("git", "-C", str(root), "status", "--porcelain"),
                *("--untracked-files=no", "--", *CODE_PATHS),
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "dirty": bool(status)}


def finished_results(cfg: DictConfig, out_dir: str | Path) -> dict[str, Any] | None:
    """With ``skip_finished``, the results of this very config already finished in
    ``out_dir`` (a sweep rerun into the same folder resumes instead of redoing).

    A finished run of another config there is never overwritten: that is an error.
    """
    out_dir = Path(out_dir)
    results, config = out_dir / "results.json", out_dir / "config.yaml"
    if not cfg.get("skip_finished") or cfg.get("resume") or not results.is_file():
        return None
    if not config.is_file() or (
        config_fingerprint(OmegaConf.load(config)) != config_fingerprint(cfg)
    ):
        raise ConfigError(
            f"skip_finished=true is not allowed here: {out_dir} holds a finished run "
            "of another config (give the sweep its own hydra.sweep.dir)"
        )
    log.info("already finished: %s (skip_finished=true)", out_dir)
    return json.loads(results.read_text())


def open_run_dir(
    cfg: DictConfig, out_dir: str | Path
) -> tuple[Path, dict[str, Any] | None]:
    """The run directory (``cfg.resume`` wins) and the checkpoint to resume from.

    A new run gets the resolved ``config.yaml``.
    """
    out_dir = Path(cfg.resume) if cfg.get("resume") else Path(out_dir)
    resumed = resume_state(cfg, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if resumed is None:
        OmegaConf.save(cfg, out_dir / "config.yaml", resolve=True)
    else:
        log.info("resuming %s after round %d", out_dir, resumed["round"])
    return out_dir, resumed


def build_plan(
    cfg: DictConfig,
    exp: Experiment,
    out_dir: Path,
    resumed: dict[str, Any] | None = None,
) -> ServerPlan:
    """The server side: evaluator, defence strategy and the round loop's plan.

    ``on_round`` is left unset for the caller (console, W&B).
    """
    data = exp.data
    num_classes = data.num_classes
    torch.manual_seed(cfg.seed)
    template = build_model(cfg.model.name, num_classes, data.input_shape[0])

    evaluator = exp.evaluator(cfg)
    defense = build_defense(cfg, exp.defense_context(cfg))
    initial = template.state_dict() if resumed is None else resumed["arrays"]
    if resumed is not None:
        defense.load_state_dict(resumed["defense"])
    return ServerPlan(
        defense=defense,
        initial_arrays=ArrayRecord(initial),
        evaluator=evaluator,
        num_rounds=cfg.num_rounds,
        num_clients=cfg.num_clients,
        clients_per_round=cfg.clients_per_round,
        malicious=exp.malicious,
        attack_rounds=str(exp.attack.rounds),
        seed=cfg.seed,
        round_timeout_s=cfg.simulation.round_timeout_s,
        min_replies=cfg.simulation.min_replies,
        max_norm_ratio=cfg.server.max_norm_ratio,
        max_norm=cfg.server.max_norm,
        checkpoint_path=out_dir / CHECKPOINT,
        fingerprint=config_fingerprint(cfg),
        rounds=[RoundRecord.from_dict(r) for r in resumed["rounds"]] if resumed else [],
        resumed_after=resumed_rounds(cfg, exp, resumed, out_dir / MEMORY_DIR),
    )


def resumed_rounds(
    cfg: DictConfig,
    exp: Experiment,
    resumed: dict[str, Any] | None,
    memory_dir: Path | None = None,
) -> list[int]:
    """The rounds after which the run was resumed, this resume included; warns
    when the attack's clients keep memory across rounds
    (:attr:`fedlight.attacks.base.Attack.remembers`) and ``memory_dir`` holds
    none of it up to the checkpoint's round: it restarts empty."""
    if resumed is None:
        return []
    after = [*resumed.get("resumed_after", []), int(resumed["round"])]
    if not exp.attack.remembers:
        return after
    attackers = exp.attack.malicious_clients if memory_dir is not None else []
    kept = [
        c
        for c in attackers
        if any(r <= after[-1] for r in memory_rounds(memory_dir, c))
    ]
    if kept:
        log.info(
            "resume: attackers %s read their memory back from %s", kept, memory_dir
        )
    else:
        log.warning(
            "resume: attack=%s keeps each attacker's memory across rounds on the "
            "client, and %s holds none of it; it restarts empty after "
            "round %d, so later rounds differ from an uninterrupted run "
            "(results.json records resumed_after)",
            cfg.attack.name,
            memory_dir,
            after[-1],
        )
    return after


def make_tracker(cfg: DictConfig, out_dir: Path) -> Tracker:
    """The W&B run (or its offline/disabled stand-in) for ``cfg``."""
    return Tracker(
        OmegaConf.to_container(cfg, resolve=True),
        out_dir,
        mode=cfg.wandb.mode,
        project=cfg.wandb.project,
        entity=cfg.wandb.entity,
        group=cfg.wandb.group,
        tags=[cfg.dataset.name, cfg.attack.name, cfg.defense.name, *cfg.wandb.tags],
        name=cfg.name,
    )


def track_rounds(cfg: DictConfig, plan: ServerPlan, tracker: Tracker) -> None:
    """Print, show and log every round: sets ``plan.on_round``, replays resumed
    rounds into the progress bar and the (new) W&B run."""
    progress = RoundProgress(cfg.num_rounds)
    progress.start()

    def on_round(record: RoundRecord) -> None:
        log_round(
            record,
            plan.malicious,
            num_inputs=cfg.defense.get("num_inputs"),
            # The block's title is the defence's class name, as the original
            # FedDefender code prints it (``***FedDefender Output Round N ***``).
            defense=type(plan.defense).__name__,
        )
        progress.update(record)
        tracker.log_round(record)

    for record in plan.rounds:  # the new W&B run gets the whole history
        progress.update(record)
        tracker.log_round(record)
    plan.on_round = on_round


def finish_run(
    cfg: DictConfig,
    exp: Experiment,
    plan: ServerPlan,
    out_dir: Path,
    tracker: Tracker,
    started: float,
) -> dict[str, Any]:
    """Check every round ran; write ``results.json``, the plot and the summary."""
    if len(plan.rounds) != cfg.num_rounds:
        raise RuntimeError(
            f"the run ended after {len(plan.rounds)} of {cfg.num_rounds} rounds"
        )
    last = plan.rounds[-1]
    results = {
        "name": cfg.name,
        "malicious_clients": exp.malicious,
        "data_source": exp.data.source,
        "rounds": [r.to_dict() for r in plan.rounds],
        "final": {"accuracy": last.accuracy, "loss": last.loss, "asr": last.asr},
        "seconds": time.perf_counter() - started,
        "code": code_version(),
    }
    if plan.resumed_after:
        results["resumed_after"] = plan.resumed_after
    write_json(out_dir / "results.json", results)
    plot = plot_rounds(
        plan.rounds,
        out_dir / f"{cfg.partition.name}-{cfg.model.name}-{cfg.dataset.name}.png",
        title=(
            f"{cfg.name}: {cfg.attack.name} attack, "
            f"{cfg.defense.name}, {cfg.num_clients} clients"
        ),
    )
    log.info("\n%s", summary_table(plan.rounds))
    log.info("wrote %s", out_dir / "results.json")
    tracker.finish(results, out_dir / "results.json", [plot])
    return results


def simulate(cfg: DictConfig, out_dir: str | Path) -> dict[str, Any]:
    """Run the experiment ``cfg`` and return what ``results.json`` holds.

    With ``resume=RUN_DIR`` the run continues in RUN_DIR from its checkpoint
    (and ``out_dir`` is ignored).
    """
    started = time.perf_counter()
    quiet_libraries()
    check_config(cfg)
    done = finished_results(cfg, out_dir)
    if done is not None:
        return done
    out_dir, resumed = open_run_dir(cfg, out_dir)
    exp = prepare_experiment(cfg)
    plan = build_plan(cfg, exp, out_dir, resumed)
    tracker = make_tracker(cfg, out_dir)
    track_rounds(cfg, plan, tracker)

    res = cfg.simulation.client_resources
    ray_started = start_ray(cfg)
    try:
        import ray

        check_gpu_budget(cfg, ray.cluster_resources())
        from flwr.simulation import run_simulation

        spec = exp.client_spec(
            cfg,
            ray.put(exp.bundle()),
            num_threads=max(1, int(res.num_cpus)),
            memory_dir=out_dir / MEMORY_DIR if exp.attack.remembers else None,
            resumed_after=int(resumed["round"]) if resumed else 0,
        )
        run_simulation(
            server_app=make_server_app(plan),
            client_app=make_client_app(spec),
            num_supernodes=cfg.num_clients,
            backend_config={
                "client_resources": {
                    "num_cpus": float(res.num_cpus),
                    "num_gpus": float(res.num_gpus),
                    # Ray restarts a client actor whose process died; the
                    # message it was running fails and the round goes on.
                    "max_restarts": -1,
                }
            },
        )
    finally:
        if ray_started:
            import ray

            if ray.is_initialized():
                ray.shutdown()
    return finish_run(cfg, exp, plan, out_dir, tracker, started)
