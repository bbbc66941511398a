"""``python -m fedlight.report DIR [DIR ...] [--out OUT]``: one table over runs.

Reads every run directory under each DIR (a Hydra multirun, or any tree of runs)
that holds ``results.json`` beside its resolved ``config.yaml``, groups the runs
by setting (experiment name, the task keys a run overrode, training-set size),
attack (with the attack keys that tell it apart) and defence, and writes

- ``OUT/table.md``: mean ± 95% confidence half-width over seeds of final clean
  accuracy, final and max ASR, detection precision / recall / false-positive
  rate (each run's mean over the rounds where it is defined), wall time; one
  section per setting and attack, with its plot; first, when there are several
  settings (or targets), an overview with a line per defence and a column per
  setting for each headline metric, ✗ marking a cell where a seed misses a
  ``--target`` bound, and in how many seeds each defence held (:func:`holds`)
  against FedAvg's clean accuracy on the same task;
- ``OUT/table.csv``: the same numbers, mean, std and CI in separate columns;
- ``OUT/<setting>-<attack>.png``: clean accuracy, and the ASR, detection recall
  and false-positive rate where defined, per round, one line per defence (mean
  over seeds).

Runs without ``results.json`` (an interrupted sweep) are listed, not counted.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import logging
import math
import re
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedlight.detection import round_detection
from fedlight.schedule import last_attacked_round, parse_rounds, scheduled

log = logging.getLogger("fedlight")

METRICS = (
    "accuracy",
    "asr",
    "max_asr",
    "max_asr_after_1",
    "asr_after_stop",
    "precision",
    "recall",
    "fpr",
    "attacker_weight",
    "defense_seconds",
    "seconds",
    "accuracy_drop",
)
HEADERS = {
    "accuracy": "final clean acc.",
    "asr": "final ASR",
    "max_asr": "max ASR",
    "max_asr_after_1": "max ASR r≥2",
    "asr_after_stop": "ASR after stop",
    "precision": "precision",
    "recall": "recall",
    "fpr": "FPR",
    "attacker_weight": "attacker weight r≥2",
    "defense_seconds": "defence s/round",
    "seconds": "wall time (s)",
    "accuracy_drop": "acc. below FedAvg",
}


@dataclass
class Run:
    """One finished run: where it is, what it was, what it measured."""

    path: Path
    experiment: str
    attack: str
    defense: str
    seed: int
    dataset: str
    train_samples: int | None
    metrics: dict[str, float | None]
    accuracy_curve: list[float]
    asr_curve: list[float | None]
    fpr_curve: list[float | None] = field(default_factory=list)
    recall_curve: list[float | None] = field(default_factory=list)
    task: str = ""  # what FedAvg's clean accuracy depends on (see task_key)
    commit: str | None = None  # the code that ran (results.json's "code")
    # What the run set otherwise than its experiment (see experiment_overrides):
    # task keys name their own setting, attack keys their own attack cell.
    task_overrides: tuple[str, ...] = ()
    attack_overrides: tuple[str, ...] = ()
    # Attack overrides every run of its setting shares: in the caption, not the label.
    shared: tuple[str, ...] = ()
    attackers: int | None = None  # how many malicious clients (results.json)

    @property
    def attacked(self) -> bool:
        """Whether a malicious client took part: not ``attack=none``, and not an
        attack with no malicious client (``attack.malicious_clients=[]``)."""
        return self.attack != "none" and self.attackers != 0

    @property
    def clean(self) -> bool:
        """FedAvg without an attacker, whose ASR (where the attack has a trigger)
        is the trigger's floor on a model nobody poisoned."""
        return self.defense == "none" and not self.attacked


@dataclass
class Row:
    """The runs of one (setting, attack, defence) cell, summarised over seeds."""

    setting: str
    attack: str
    defense: str
    seeds: list[int]
    # Per metric, the seeds' values where defined; mean and std derive from them.
    values: dict[str, list[float]] = field(default_factory=dict)
    # Seeds where the defence held (see :func:`holds`) and seeds judged; None
    # without an ASR or without FedAvg's no-attack run of the same setting.
    held: tuple[int, int] | None = None
    # Whether any seed had an attacker: detection targets judge only such cells.
    attacked: bool = True

    @property
    def section(self) -> str:
        return section(self.setting, self.attack)

    @functools.cached_property
    def mean(self) -> dict[str, float | None]:
        return {m: statistics.fmean(v) if v else None for m, v in self.values.items()}

    @functools.cached_property
    def std(self) -> dict[str, float | None]:
        """The sample std (n - 1); None with fewer than two values."""
        return {
            m: statistics.stdev(v) if len(v) > 1 else None
            for m, v in self.values.items()
        }

    @functools.cached_property
    def ci95(self) -> dict[str, float | None]:
        """Half-width of the 95% confidence interval of the mean (Student t with
        n - 1 degrees of freedom); None with fewer than two values."""
        from scipy.stats import t as student_t  # ~1.5 s to import: only when asked

        return {
            m: float(student_t.ppf(0.975, len(v) - 1))
            * statistics.stdev(v)
            / math.sqrt(len(v))
            if len(v) > 1
            else None
            for m, v in self.values.items()
        }


# A defence holds a run when the backdoor stays out after round 1 at FedAvg's
# clean accuracy: max ASR after round 1 at most HOLD_ASR and final clean accuracy
# at most HOLD_ACCURACY_DROP below FedAvg's without attack in the same setting.
HOLD_ASR = 0.05
HOLD_ACCURACY_DROP = 0.02
# A holds-pivot cell with no finished run: the table says it was not run (a cell
# the compute did not reach) rather than leaving it blank like "undefined".
NOT_RUN = "not run"
# A holds-pivot cell left unrun because the plain attack (the zoo's ``backdoor``)
# already broke that defence in that setting: held in none of its judged seeds.
# The adaptive table runs only defences that held (fedlight.holding), and says so.
PLAIN_ATTACK = "backdoor"
BROKEN = "broken by the plain attack"
# A holds-pivot cell of another defence in an attack's floor column (FedAvg
# alone, nothing poisoned: see floor_reading): not meant to run there.
FLOOR_ONLY = "–"


def holds(run: Run, clean_accuracy: float) -> bool:
    """Whether the defence held in ``run`` (see HOLD_ASR, HOLD_ACCURACY_DROP)."""
    asr, acc = run.metrics["max_asr_after_1"], run.metrics["accuracy"]
    return (
        asr is not None
        and acc is not None
        and asr <= HOLD_ASR
        and acc >= clean_accuracy - HOLD_ACCURACY_DROP
    )


def _mean_defined(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not None (nor NaN); None if there are none."""
    kept = [float(v) for v in values if v is not None and not math.isnan(v)]
    return statistics.fmean(kept) if kept else None


def _choices(run_dir: Path) -> dict[str, str]:
    """Hydra's record of the config-group options a run used (empty if absent)."""
    path = run_dir / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return {}
    hydra = (yaml.safe_load(path.read_text()) or {}).get("hydra", {})
    return dict((hydra.get("runtime") or {}).get("choices") or {})


def _label(config: dict[str, Any], choices: dict[str, str], group: str) -> str:
    """The plug-in a run used for ``group``: its registered name in the run's
    config, else Hydra's record of the choice (runs of fedlight before the
    registry), else the class name of the old ``_target_``."""
    node = config.get(group) or {}
    if "name" in node:
        return str(node["name"])
    if group in choices:
        return choices[group]
    return str(node.get("_target_", "?")).rsplit(".", 1)[-1]


# Keys that change how a defence runs, not what it decides.
_EXECUTION_KEYS = frozenset(
    {"engine", "max_memory_mb", "remote", "num_cpus", "num_gpus"}
)


@functools.cache
def _shipped(group: str, name: str) -> dict[str, Any]:
    """The declared defaults of plug-in ``name``; for a shipped preset
    (``configs/defense/normclip_weights.yaml``) its plug-in's defaults with the
    preset's values; empty for an unknown name."""
    from fedlight.params import defaults

    registry = _registry(group)
    if name in registry:
        return defaults(registry.get(name).params)
    import fedlight.configs

    path = Path(fedlight.configs.__file__).parent / group / f"{name}.yaml"
    if not path.is_file():
        return {}
    preset = yaml.safe_load(path.read_text()) or {}
    values: dict[str, Any] = {}
    for base in preset.pop("defaults", None) or []:
        if isinstance(base, str) and base != "_self_":
            values.update(_shipped(group, base))
    return {**values, **preset}


def _registry(group: str) -> Any:
    from fedlight.attacks import ATTACKS
    from fedlight.defenses import DEFENSES

    return {"defense": DEFENSES, "attack": ATTACKS}[group]


def _overridden(group: str, name: str, values: dict[str, Any]) -> list[str]:
    """``key=value`` for each key of the shipped ``group/name.yaml`` that the run
    set otherwise (keys null in the file are resolved at run time: skipped)."""
    shipped = _shipped(group, name)
    changed = []
    for key, default in shipped.items():
        if key.startswith("_") or default is None or key in _EXECUTION_KEYS:
            continue
        if key in values and values[key] != default:
            value = "null" if values[key] is None else values[key]
            changed.append(f"{key}={value}")
    return changed


def defense_label(config: dict[str, Any], choices: dict[str, str]) -> str:
    """The defence's config name (``krum``), with ``_weights`` for norm clipping
    of whole weights chosen by ``defense.variant=weights``, and the keys a run
    overrode in brackets (``feddefender_robust [memory_decay=0]``) so that an
    ablation's variants never share a cell."""
    name = _label(config, choices, "defense")
    values = config.get("defense") or {}
    if values.get("variant") == "weights":
        if "weights" not in name:
            name += "_weights"
    changed = _overridden("defense", name, values)
    bound = (config.get("server") or {}).get("max_attackers", 1)
    if name != "none" and bound != 1:
        changed.append(f"max_attackers={bound}")
    return f"{name} [{', '.join(changed)}]" if changed else name


def attack_label(config: dict[str, Any], choices: dict[str, str]) -> str:
    """The attack's config name (``backdoor``), plus `` xS`` when it scales its
    update (model replacement) so scaled and plain runs never share a cell."""
    name = _label(config, choices, "attack")
    scale = (config.get("attack") or {}).get("scale", 1) or 1
    if float(scale) != 1.0:
        name += f" x{float(scale):g}"
    return name


# The learning task beside the experiment's name: where the data lives and how it
# is fetched are not part of it, nor the training-set cap (setting_key's own).
_TASK_NODES: dict[str, tuple[str, ...] | None] = {
    "dataset": ("name", "image_size"),
    "model": None,
    "partition": None,
    "client": None,
}
_TASK_KEYS = ("num_clients", "clients_per_round", "num_rounds")


@functools.cache
def _experiment_config(experiment: str, attack: str) -> dict[str, Any] | None:
    """What ``+experiment=EXPERIMENT attack=ATTACK`` composes to with this
    checkout's configs; None for a name that is no shipped experiment."""
    from omegaconf import OmegaConf

    import fedlight.configs
    from fedlight.registry import compose_config

    folder = Path(fedlight.configs.__file__).parent / "experiment"
    if not (folder / f"{experiment}.yaml").is_file():
        return None
    overrides = [f"+experiment={experiment}"]
    if attack in _registry("attack"):
        overrides.append(f"attack={attack}")
    try:
        cfg = compose_config(overrides)
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except Exception as err:  # noqa: BLE001 - a report must not die on one config
        log.warning("cannot compose %s: %s", " ".join(overrides), err)
        return None


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return str(value)


def _differences(
    run: dict[str, Any], base: dict[str, Any], keys: Iterable[str], prefix: str = ""
) -> list[str]:
    """``prefix+key=value`` for each of ``keys`` that both configs hold and the
    run set otherwise."""
    return [
        f"{prefix}{key}={_show(run[key])}"
        for key in keys
        if key in run and key in base and run[key] != base[key]
    ]


def experiment_overrides(
    config: dict[str, Any], attack: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The task keys and the attack keys a run set otherwise than its experiment
    (``+experiment=NAME attack=ATTACK`` composed with this checkout's configs):
    ``partition.alpha=0.3`` on ``mnist_20_dirichlet05`` is another setting, and
    ``gate=True`` on ``whitebox_robust`` another attack, never the same cell.
    Nothing for a run whose experiment is not shipped."""
    base = _experiment_config(str(config.get("name", "")), attack)
    if base is None:
        return (), ()
    task = _differences(config, base, _TASK_KEYS)
    for node, keys in _TASK_NODES.items():
        ours, theirs = config.get(node) or {}, base.get(node) or {}
        task += _differences(ours, theirs, keys or theirs, prefix=f"{node}.")
    ours, theirs = config.get("attack") or {}, base.get("attack") or {}
    # in the shipped order; the name is the label's, and the scale its `xS`
    attack_keys = [k for k in theirs if k not in ("name", "scale")]
    return tuple(task), tuple(_differences(ours, theirs, attack_keys))


def share_attack_overrides(runs: list[Run]) -> None:
    """Label each run's attack with the overrides that tell it apart from other
    runs of its setting (``whitebox_robust [gate=True]``); overrides every run of
    the setting shares (the test settings' attacker, target and trigger) go to
    ``shared``, which the caption states once."""
    by_setting: dict[str, list[Run]] = {}
    for run in runs:
        by_setting.setdefault(setting_key(run), []).append(run)
    for members in by_setting.values():
        for run in members:
            if run.attackers == 0 and run.attack != "none":
                run.attack += " [no attacker]"
        attacked = [r for r in members if r.attacked]
        common = (
            set.intersection(*(set(r.attack_overrides) for r in attacked))
            if attacked
            else set()
        )
        for run in attacked:
            own = [o for o in run.attack_overrides if o not in common]
            run.shared = tuple(o for o in run.attack_overrides if o in common)
            if own:
                run.attack = f"{run.attack} [{', '.join(own)}]"


def trained_on(first_round: dict[str, Any], num_clients: int | None) -> int | None:
    """How many training images a run's clients held: the sum of their
    ``train-examples`` in a round every client took part in; None where a round
    had only some of them (the sum would undercount)."""
    clients = first_round.get("clients") or {}
    participants = first_round.get("participants") or []
    if not num_clients or not len(participants) == len(clients) == num_clients:
        return None  # a client that did not take part or failed: no full count
    try:
        return int(sum(float(c["train-examples"]) for c in clients.values()))
    except (KeyError, TypeError, ValueError):
        return None


def load_run(results_path: Path) -> Run | None:
    """The run whose ``results.json`` is at ``results_path``; None if unreadable."""
    run_dir = results_path.parent
    try:
        results = json.loads(results_path.read_text())
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, ValueError, yaml.YAMLError) as err:
        log.warning("skipping %s: %s", run_dir, err)
        return None
    choices = _choices(run_dir)
    rounds = results.get("rounds") or []
    if not rounds:
        log.warning("skipping %s: results.json has no rounds", run_dir)
        return None
    malicious = [str(c) for c in results.get("malicious_clients") or []]
    rounds = recount(rounds, malicious, config)
    asr_curve = [r.get("asr") for r in rounds]
    fpr_curve = [r.get("fpr") for r in rounds]
    recall_curve = [r.get("recall") for r in rounds]
    metrics: dict[str, float | None] = {
        "accuracy": rounds[-1].get("accuracy"),
        "asr": rounds[-1].get("asr"),
        "max_asr": max((a for a in asr_curve if a is not None), default=None),
        "max_asr_after_1": max(
            (a for a in asr_curve[1:] if a is not None), default=None
        ),
        "asr_after_stop": asr_after_stop(asr_curve, config),
        "precision": _mean_defined(r.get("precision") for r in rounds),
        "recall": _mean_defined(recall_curve),
        "fpr": _mean_defined(fpr_curve),
        "attacker_weight": max(
            (
                r["attacker_weight"]
                for r in rounds[1:]
                if r.get("attacker_weight") is not None
            ),
            default=None,
        ),
        "defense_seconds": _mean_defined(r.get("defense_seconds") for r in rounds),
        "seconds": results.get("seconds"),
        "accuracy_drop": None,  # set by summarise, against FedAvg's clean runs
    }
    dataset = config.get("dataset") or {}
    train_samples = dataset.get("max_train_samples")
    held = trained_on(rounds[0], config.get("num_clients"))
    if train_samples is not None and held is not None and held < train_samples:
        train_samples = None  # the cap is above the dataset's size: it kept all
    task, attack_changed = experiment_overrides(
        config, _label(config, choices, "attack")
    )
    return Run(
        path=run_dir,
        experiment=experiment_name(config),
        attack=attack_label(config, choices),
        defense=defense_label(config, choices),
        seed=int(config.get("seed", 0)),
        dataset=str(dataset.get("name", "?")),
        train_samples=train_samples,
        metrics=metrics,
        accuracy_curve=[float(r["accuracy"]) for r in rounds],
        asr_curve=asr_curve,
        fpr_curve=fpr_curve,
        recall_curve=recall_curve,
        task=task_key(config, train_samples),
        commit=_commit(results.get("code")),
        task_overrides=task,
        attack_overrides=attack_changed,
        attackers=_count(results.get("malicious_clients")),
    )


def _count(clients: Any) -> int | None:
    """How many malicious clients results.json names; None if it does not say."""
    return len(clients) if isinstance(clients, list) else None


def _commit(code: dict[str, Any] | None) -> str | None:
    """A short commit, marked ``+changes`` when the checkout had edits."""
    if not code or not code.get("commit"):
        return None
    return code["commit"][:7] + ("+changes" if code.get("dirty") else "")


def task_key(config: dict[str, Any], train_samples: int | None) -> str:
    """The learning task without the attack and defence: data, split, clients,
    model and training. Runs with the same key share FedAvg's clean accuracy
    (``mnist_20``, ``mnist_20_scaling`` and ``mnist_20_noattack`` do)."""
    partition = config.get("partition") or {}
    client = config.get("client") or {}
    parts = [
        (config.get("dataset") or {}).get("name"),
        train_samples,
        partition.get("name"),
        partition.get("alpha") if partition.get("name") == "dirichlet" else None,
        config.get("num_clients"),
        config.get("clients_per_round"),
        config.get("num_rounds"),
        (config.get("model") or {}).get("name"),
        client.get("epochs"),
        client.get("lr"),
        client.get("batch_size"),
    ]
    return "/".join(str(p) for p in parts)


def asr_after_stop(
    asr_curve: list[float | None], config: dict[str, Any]
) -> float | None:
    """Durability: the mean ASR over the rounds after the attackers' last
    scheduled round (``attack.rounds``); None if they attacked until the end."""
    text = (config.get("attack") or {}).get("rounds")
    if not text:
        return None
    try:
        last = last_attacked_round(text)
    except ValueError:
        return None
    return None if last is None else _mean_defined(asr_curve[last:])


def recount(
    rounds: list[dict[str, Any]], malicious: list[str], config: dict[str, Any]
) -> list[dict[str, Any]]:
    """The round records with a scheduled attacker's honest rounds (outside
    ``attack.rounds``) counted as the server now counts them
    (:func:`fedlight.detection.attacking`): neither malicious nor benign in the
    detection metrics, no attacker weight. Runs recorded before that rule counted
    it as malicious in every round; for the others this changes nothing."""
    text = str((config.get("attack") or {}).get("rounds") or "")
    if not text or not malicious:
        return rounds
    try:
        parse_rounds(text)
    except ValueError:
        return rounds
    out = []
    for record in rounds:
        if not scheduled(text, int(record["round"])):
            excluded = {*(record.get("flagged") or []), *(record.get("rejected") or {})}
            recorded = ("precision", "recall", "fpr")
            detection = round_detection(
                excluded,
                malicious,
                record.get("participants") or [],
                record.get("weights"),
                attacks=False,
                scored=any(record.get(k) is not None for k in recorded),
            )
            record = {**record, **detection}
        out.append(record)
    return out


def experiment_name(config: dict[str, Any]) -> str:
    """The experiment a run's config belongs to: its ``name``, as
    ``--experiment`` takes it."""
    return str(config.get("name", "default"))


def _experiment_of(run_dir: Path) -> str | None:
    """The experiment an unfinished run belongs to; None where its config
    cannot be read."""
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return experiment_name(config) if isinstance(config, dict) else None


def find_runs(root: Path) -> tuple[list[Run], list[Path]]:
    """Finished runs under ``root``, and run directories without results.

    A run directory is one with ``config.yaml``; W&B's folders are skipped.
    """
    runs, unfinished = [], []
    for config_path in sorted(root.rglob("config.yaml")):
        run_dir = config_path.parent
        if run_dir.name == ".hydra" or "wandb" in run_dir.relative_to(root).parts:
            continue
        results_path = run_dir / "results.json"
        if not results_path.is_file():
            unfinished.append(run_dir)
            continue
        run = load_run(results_path)
        if run is None:
            unfinished.append(run_dir)
        else:
            runs.append(run)
    return runs, unfinished


def setting_key(run: Run) -> str:
    """The setting a run belongs to: the experiment, the task keys it overrode
    (``mnist_20_dirichlet05 [partition.alpha=0.3]``), and the training-set cap
    when there is one (a subsampled run never shares a cell with a full one)."""
    key = run.experiment
    if run.task_overrides:
        key += f" [{', '.join(run.task_overrides)}]"
    if run.train_samples is None:
        return key
    return f"{key} ({run.train_samples} train)"


def section(setting: str, attack: str) -> str:
    """The heading (and plot name) of one setting under one attack."""
    return f"{setting} / {attack}"


def _defense_rank(name: str) -> tuple[int, str]:
    """The defence's declared place in the report's order (its registry order)."""
    order, _ = _registry("defense").rank(name.split(" ")[0].removesuffix("_weights"))
    return order, name


def set_accuracy_drop(runs: list[Run]) -> dict[str, float]:
    """Set each run's ``accuracy_drop``: FedAvg's mean clean accuracy without
    attack on the run's task (from the clean runs among ``runs``) minus the run's
    final accuracy; left None where the task has no clean run. Returns the clean
    accuracy per task."""
    clean_runs: dict[str, list[float]] = {}
    for run in runs:
        if run.clean:
            clean_runs.setdefault(run.task, []).append(float(run.metrics["accuracy"]))
    clean = {task: statistics.fmean(accs) for task, accs in clean_runs.items()}
    for run in runs:
        accuracy = run.metrics["accuracy"]
        if run.task in clean and accuracy is not None:
            run.metrics["accuracy_drop"] = clean[run.task] - float(accuracy)
    return clean


def summarise(runs: list[Run]) -> list[Row]:
    """One row per (setting, attack, defence): mean, std and 95% CI over seeds of
    every metric, and in how many seeds the defence held.

    The std is the sample std (n - 1); None with a single seed or where a metric
    is undefined (no ASR without a target; no detection without scores). Holding
    needs FedAvg's run without an attacker on the same task (:attr:`Run.clean`);
    without it ``held`` and ``accuracy_drop`` (FedAvg's mean
    clean accuracy on the run's task minus the run's) are None.
    """
    clean = set_accuracy_drop(runs)
    cells: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        cells.setdefault((setting_key(run), run.attack, run.defense), []).append(run)
    rows = []
    for (setting, attack, defense), members in cells.items():
        members.sort(key=lambda r: r.seed)
        values = {
            metric: [
                float(r.metrics[metric])
                for r in members
                if r.metrics[metric] is not None
            ]
            for metric in METRICS
        }
        attacked = any(r.attacked for r in members)
        seeds = [r.seed for r in members]
        rows.append(Row(setting, attack, defense, seeds, values, attacked=attacked))
    for row in rows:
        members = cells[(row.setting, row.attack, row.defense)]
        judged = [
            r
            for r in members
            if r.metrics["max_asr_after_1"] is not None
            and r.task in clean
            and r.attackers != 0
        ]
        if judged:
            row.held = (sum(holds(r, clean[r.task]) for r in judged), len(judged))
    rows.sort(key=lambda r: (r.setting, r.attack, _defense_rank(r.defense)))
    return rows


# The overview's metrics: what a reader scans first to compare defences.
OVERVIEW = (
    "max_asr_after_1",
    "recall",
    "precision",
    "fpr",
    "attacker_weight",
    "accuracy",
    "accuracy_drop",
    "defense_seconds",
)
_OPERATORS = {"<=": float.__le__, ">=": float.__ge__}
# Targets about catching attackers: a cell without any (no attack, or nobody
# malicious) is not judged on them. Precision is defined there (a false flag
# makes it 0), but those flags are what the FPR target judges.
ATTACKER_TARGETS = frozenset({"precision"})


@dataclass(frozen=True)
class Target:
    """A bound every seed of a cell must meet (``recall>=0.95``)."""

    metric: str
    op: str
    bound: float

    def met(self, value: float) -> bool:
        return _OPERATORS[self.op](float(value), self.bound)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.bound:g}"


def parse_target(text: str) -> Target:
    """``METRIC<=X`` or ``METRIC>=X``; a ValueError naming the allowed metrics and
    operators otherwise."""
    match = re.fullmatch(r"\s*(\w+)\s*(<=|>=)\s*(\S+)\s*", text)
    if not match:
        raise ValueError(f"--target {text!r} is not METRIC<=NUMBER or METRIC>=NUMBER")
    metric, op, bound = match.groups()
    if metric not in METRICS:
        raise ValueError(
            f"--target {text!r}: metric {metric!r} is not one of {', '.join(METRICS)}"
        )
    try:
        value = float(bound)
    except ValueError:
        raise ValueError(f"--target {text!r}: {bound!r} is not a number") from None
    return Target(metric, op, value)


def overview(
    rows: list[Row],
    targets: Iterable[Target] = (),
    floors: dict[str, str] | None = None,
) -> list[str]:
    """Markdown pivots, one per headline metric: a line per defence, a column per
    setting, so an ablation reads across; means only (the sections below give the
    spread). A cell misses a target (✗) when any of its seeds does: "every
    setting, every seed" is the claim a target stands for. A floor's column
    (``floors``' values: FedAvg alone, nothing poisoned) reads "–" for the other
    defences in the holds pivot, which were never meant to run there."""
    floor_labels = set((floors or {}).values())
    sections = list(dict.fromkeys(r.section for r in rows))
    # A setting's name alone heads its column unless it ran under several attacks.
    unique = len({r.setting for r in rows}) == len(sections)
    titles = {r.section: r.setting for r in rows} if unique else {}
    defenses = sorted({r.defense for r in rows}, key=_defense_rank)
    by_cell = {(r.section, r.defense): r for r in rows}
    by_metric = _by_metric(targets)
    out = []
    judged = [
        name for name in sections if any(r.held for r in rows if r.section == name)
    ]
    if judged:
        setting_of = {r.section: r.setting for r in rows}
        attack_of = {r.section: r.attack for r in rows}
        lines = []
        for defense in defenses:
            cells = [
                _held(by_cell[(n, defense)])
                if (n, defense) in by_cell
                else FLOOR_ONLY
                if attack_of[n] in floor_labels
                else _unrun(by_cell, setting_of[n], defense)
                for n in judged
            ]
            if any(c not in (NOT_RUN, BROKEN, FLOOR_ONLY) for c in cells):
                lines.append("| " + defense + " | " + " | ".join(cells) + " |")
        legend = f"{NOT_RUN}: no finished run of that defence in that setting."
        if any(attack_of[n] in floor_labels for n in judged):
            legend += (
                f" {FLOOR_ONLY} in a floor's column: that attack's trigger on FedAvg "
                "with nothing poisoned, run for FedAvg alone."
            )
        if any(BROKEN in line for line in lines):
            legend += (
                f" {BROKEN}: not run under this attack because the plain attack "
                f"(`{PLAIN_ATTACK}`) already broke it in this setting (held in 0 of "
                "its seeds; its numbers are in that column)."
            )
        out += [
            "### holds (seeds where max ASR r≥2 ≤ "
            f"{HOLD_ASR:g} at clean accuracy within {HOLD_ACCURACY_DROP:g} "
            "of FedAvg without attack)",
            "",
            legend,
            "",
        ]
        out.append("| defence | " + " | ".join(titles.get(s, s) for s in judged) + " |")
        out.append("|" + "---|" * (len(judged) + 1))
        out += lines
        out.append("")
    for metric in OVERVIEW:
        # Only the settings where some defence defines the metric (no ASR column
        # for a run without attack); no pivot at all where none does.
        defined = {r.section for r in rows if r.mean[metric] is not None}
        columns = [name for name in sections if name in defined]
        if not columns:
            continue
        bounds = by_metric.get(metric, [])
        heading = HEADERS[metric]
        if bounds:
            heading += f" (target {_limits(bounds)})"
        out += [f"### {heading}", ""]
        out.append(
            "| defence | " + " | ".join(titles.get(s, s) for s in columns) + " |"
        )
        out.append("|" + "---|" * (len(columns) + 1))
        for defense in defenses:
            cells = [defense]
            for name in columns:
                row = by_cell.get((name, defense))
                if row is None or row.mean[metric] is None:
                    cells.append("")
                    continue
                text = _cell(row.mean[metric], None, metric)  # std: in the sections
                cells.append(text + _missed(row, metric, bounds))
            if any(cells[1:]):  # a defence that defines nothing here gets no line
                out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return out


def _unrun(by_cell: dict[tuple[str, str], Row], setting: str, defense: str) -> str:
    """A holds-pivot cell with no run: :data:`BROKEN` where the defence's plain
    attack cell in the same setting held in none of its judged seeds, else
    :data:`NOT_RUN`. FedAvg (``none``) is never left out for being broken: it is
    every attack's floor."""
    if defense == "none":
        return NOT_RUN
    plain = by_cell.get((section(setting, PLAIN_ATTACK), defense))
    if plain is not None and plain.held is not None and plain.held[0] == 0:
        return BROKEN
    return NOT_RUN


def parse_floor(text: str) -> tuple[str, str]:
    """``ATTACK=FLOOR``: the attack label whose cells are read against the
    floor, and the label of FedAvg's runs that measure its floor (the attack
    poisoning nothing), both as the report names them."""
    attack, sep, floor = text.partition("=")
    if not sep or not attack.strip() or not floor.strip():
        raise ValueError(
            f"--floor {text!r}: expected ATTACK=FLOOR, e.g. "
            "'a3fl=a3fl [boost=1, poison_fraction=0]'"
        )
    return attack.strip(), floor.strip()


def floor_reading(rows: list[Row], floors: dict[str, str]) -> list[str]:
    """For an attack whose trigger reaches some ASR on a model nobody poisoned
    (A3FL's adversarial patch), each of its judged cells read against that floor:
    a defence that held in no seed is "at the trigger's floor" when its mean max
    ASR after round 1 is within the floor's mean + 95% half-width (FedAvg's runs
    of the floor label, same setting), else "broken"."""
    metric = "max_asr_after_1"
    by_cell = {(r.section, r.defense): r for r in rows}
    lines = []
    for row in rows:
        if row.attack not in floors or row.held is None:
            continue
        floor = by_cell.get((section(row.setting, floors[row.attack]), "none"))
        bound = None
        if floor is not None and floor.mean[metric] is not None:
            bound = floor.mean[metric] + (floor.ci95[metric] or 0.0)
        value = row.mean[metric]
        if row.held[0] > 0:
            verdict = "held" if row.held[0] == row.held[1] else "unreliable"
        elif bound is None:
            verdict = "no floor run"
        elif value is not None and value <= bound:
            verdict = "at the trigger's floor"
        else:
            verdict = "broken"
        floor_text = (
            "–"
            if floor is None
            else _cell(floor.mean[metric], floor.ci95[metric], metric)
        )
        lines.append(
            f"| {row.setting} | {row.attack} | {row.defense} | {_held(row)} | "
            f"{_cell(value, row.ci95[metric], metric)} | {floor_text} | {verdict} |"
        )
    if not lines:
        return []
    return [
        "### Read against the trigger's floor",
        "",
        "An attack whose trigger FedAvg obeys with nothing poisoned is read against "
        "that floor: a cell that held in no seed is at the trigger's floor when its "
        "mean max ASR r≥2 is at most the floor's mean + 95% half-width, else broken.",
        "",
        "| setting | attack | defence | holds | max ASR r≥2 | floor (FedAvg, "
        "nothing poisoned) | reading |",
        "|---|---|---|---|---|---|---|",
        *lines,
        "",
    ]


def _by_metric(targets: Iterable[Target]) -> dict[str, list[Target]]:
    """The targets grouped by the metric they bound."""
    grouped: dict[str, list[Target]] = {}
    for target in targets:
        grouped.setdefault(target.metric, []).append(target)
    return grouped


def _limits(bounds: Sequence[Target]) -> str:
    """``<= 0.05, >= 0.9``: the bounds as a heading shows them."""
    return ", ".join(f"{t.op} {t.bound:g}" for t in bounds)


def _missed(row: Row, metric: str, bounds: Sequence[Target]) -> str:
    """`` ✗`` when a seed of ``row`` misses one of ``bounds`` (a target about
    catching attackers is not judged where nobody attacked), else ``""``."""
    applies = row.attacked or metric not in ATTACKER_TARGETS
    if applies and any(not t.met(v) for t in bounds for v in row.values[metric]):
        return " ✗"
    return ""


LAYOUTS = ("pivot", "scorecard")


def scorecards(rows: list[Row], targets: Iterable[Target] = ()) -> list[str]:
    """One table per defence, a line per setting it ran in: seeds, holds, and the
    overview's metrics (plus any metric a target bounds), mean ± the 95% CI, ✗
    where a seed misses a target. For a study of one or two defences over many
    settings (a held-out test table), where the pivots grow too wide to read."""
    by_metric = _by_metric(targets)
    metrics = [m for m in METRICS if m in OVERVIEW or m in by_metric]
    out = []
    for defense in sorted({r.defense for r in rows}, key=_defense_rank):
        mine = [r for r in rows if r.defense == defense]
        shown = [m for m in metrics if any(r.mean[m] is not None for r in mine)]
        heads = []
        for metric in shown:
            limits = _limits(by_metric.get(metric, []))
            heads.append(HEADERS[metric] + (f" ({limits})" if limits else ""))
        out += [f"### {defense}", ""]
        out.append("| setting | seeds | holds | " + " | ".join(heads) + " |")
        out.append("|" + "---|" * (len(shown) + 3))
        for row in mine:
            cells = [row.section, str(len(row.seeds)), _held(row)]
            for metric in shown:
                text = _cell(row.mean[metric], row.ci95[metric], metric)
                if row.mean[metric] is not None:
                    text += _missed(row, metric, by_metric.get(metric, []))
                cells.append(text)
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return out


def _cell(mean: float | None, spread: float | None, metric: str) -> str:
    if mean is None:
        return "–"
    spec = {"seconds": ".0f", "defense_seconds": ".2f"}.get(metric, ".3f")
    text = _number(mean, spec)
    if spread is not None:
        text += " ± " + format(spread, spec)
    return text


def _number(value: float, spec: str) -> str:
    """``value`` formatted; a tiny negative that rounds to zero reads 0, not -0."""
    text = format(value, spec)
    return text.lstrip("-") if float(text) == 0 else text


def _held(row: Row) -> str:
    """``held/seeds`` (the failure rate is the rest); – where undefined."""
    return f"{row.held[0]}/{row.held[1]}" if row.held else "–"


def slug(text: str) -> str:
    """A file name for a section: ``mnist_20 / backdoor`` -> ``mnist_20-backdoor``."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-")


def write_csv(rows: list[Row], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        header = ["setting", "attack", "defense", "seeds", "num_seeds"]
        for metric in METRICS:
            header += [f"{metric}_mean", f"{metric}_std", f"{metric}_ci95"]
        header += ["held", "judged"]
        writer.writerow(header)
        for row in rows:
            line: list[Any] = [
                row.setting,
                row.attack,
                row.defense,
                " ".join(map(str, row.seeds)),
                len(row.seeds),
            ]
            for metric in METRICS:
                for value in (row.mean[metric], row.std[metric], row.ci95[metric]):
                    line.append("" if value is None else f"{value:.6g}")
            line += list(row.held) if row.held else ["", ""]
            writer.writerow(line)


LINE_COLORS = 10  # matplotlib's default cycle, tab10
LINE_STYLES = (("-", "o"), ("--", "s"), (":", "^"))


def line_styles(names: list[str]) -> dict[str, dict[str, str]]:
    """A colour, line style and marker per name, distinct for up to 30 names:
    the colour cycle alone repeats after 10, and a zoo plot has 21 defences."""
    styles = {}
    for i, name in enumerate(names):
        linestyle, marker = LINE_STYLES[(i // LINE_COLORS) % len(LINE_STYLES)]
        styles[name] = {
            "color": f"C{i % LINE_COLORS}",
            "linestyle": linestyle,
            "marker": marker,
        }
    return styles


def defines(runs: list[Run], attr: str) -> bool:
    """Whether some round of some run has a value of this Run curve."""
    return any(v is not None for r in runs for v in getattr(r, attr))


def plot_panels(runs: list[Run]) -> list[tuple[str, str]]:
    """The (title, Run curve) panels of a setting's plot: clean accuracy, then
    each of the ASR, the detection recall and the false-positive rate that some
    run defines. Without an attacker recall is undefined and every flag false,
    so the FPR is what tells defences apart there; with one, recall says in
    which rounds the attacker was caught and the FPR what that cost the honest."""
    panels = [("clean accuracy", "accuracy_curve")]
    for title, attr in (
        ("attack success rate", "asr_curve"),
        ("detection recall", "recall_curve"),
        ("false-positive rate", "fpr_curve"),
    ):
        if defines(runs, attr):
            panels.append((title, attr))
    return panels


def mean_curve(runs: list[Run], attr: str) -> list[float | None]:
    """Per round, the mean over seeds of a Run curve where defined, up to the
    shortest run's last round."""
    length = min(len(getattr(r, attr)) for r in runs)
    return [_mean_defined(getattr(r, attr)[i] for r in runs) for i in range(length)]


REFERENCE = "none"  # FedAvg, drawn in every row of a split plot to compare with
REFERENCE_STYLE = {"color": "black", "linestyle": "-", "marker": "o"}
ROW_TITLES = ("defences that flag clients", "defences that weight, clip or add noise")


def flags_clients(runs: list[Run]) -> bool:
    """Whether a defence excludes whole clients: some run of it has a recall or
    an FPR (a defence that only weights, clips or adds noise flags nobody)."""
    return defines(runs, "recall_curve") or defines(runs, "fpr_curve")


def plot_rows(by_defense: dict[str, list[Run]]) -> list[tuple[str, list[str]]]:
    """The rows of a setting's plot, each a title and its defences in report
    order. Up to :data:`LINE_COLORS` defences share one untitled row; more are
    split into those that flag clients and the rest, at most
    :data:`LINE_COLORS` to a row, with FedAvg (``none``) in every row as the
    reference, so that no two lines of a panel share a colour: the zoo's 21
    lines in one panel were told apart by line style alone."""
    names = sorted(by_defense, key=_defense_rank)
    if len(names) <= LINE_COLORS:
        return [("", names)]
    reference = [n for n in names if n == REFERENCE]
    others = [n for n in names if n != REFERENCE]
    flagging = [n for n in others if flags_clients(by_defense[n])]
    rest = [n for n in others if n not in flagging]
    rows = []
    for title, members in zip(ROW_TITLES, (flagging, rest), strict=True):
        chunks = [
            members[i : i + LINE_COLORS] for i in range(0, len(members), LINE_COLORS)
        ]
        for k, chunk in enumerate(chunks, 1):
            part = f" ({k}/{len(chunks)})" if len(chunks) > 1 else ""
            rows.append((title + part, reference + chunk))
    return rows


def row_styles(names: list[str]) -> dict[str, dict[str, str]]:
    """Line styles for one row of a plot: FedAvg black, the others from
    :func:`line_styles` in order."""
    styles = line_styles([n for n in names if n != REFERENCE])
    if REFERENCE in names:
        return {REFERENCE: REFERENCE_STYLE, **styles}
    return styles


def plot_setting(setting: str, runs: list[Run], path: Path) -> Path:
    """Clean accuracy and the ASR, detection recall and FPR where defined (see
    :func:`plot_panels`) per round, one line per defence averaged over seeds,
    one row per group of :func:`plot_rows`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    by_defense: dict[str, list[Run]] = {}
    for run in runs:
        by_defense.setdefault(run.defense, []).append(run)
    rows = plot_rows(by_defense)
    row_panels = [
        plot_panels([r for n in names for r in by_defense[n]]) for _, names in rows
    ]
    columns = max(len(panels) for panels in row_panels)
    fig, axes = plt.subplots(
        len(rows),
        columns,
        figsize=(5.2 * columns, 3.6 * len(rows)),
        dpi=110,
        squeeze=False,
    )
    for row_axes, (row_title, names), panels in zip(
        axes, rows, row_panels, strict=True
    ):
        styles = row_styles(names)
        for ax, (title, attr) in zip(row_axes, panels, strict=False):
            for defense, style in styles.items():
                ys = mean_curve(by_defense[defense], attr)
                if all(y is None for y in ys):
                    continue  # e.g. no recall or FPR: it excludes no whole client
                ax.plot(
                    range(1, len(ys) + 1),
                    [float("nan") if y is None else y for y in ys],
                    markersize=3,
                    linewidth=1.2,
                    label=defense,
                    **style,
                )
            ax.set_title(title)
            ax.set_xlabel("round")
            ax.set_ylim(-0.02, 1.02)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        if row_title:
            row_axes[0].set_ylabel(row_title, fontsize=9)
        for ax in row_axes[len(panels) :]:
            ax.axis("off")
        # beside the row's panels, not over the curves it names; from the
        # accuracy panel, the one where every defence has a line
        handles, labels = row_axes[0].get_legend_handles_labels()
        row_axes[len(panels) - 1].legend(
            handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5)
        )
    fig.suptitle(setting, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def caption(runs: list[Run]) -> str:
    """What the numbers are, including which settings ran on a training subset."""
    lines = [
        "Mean ± the half-width of its 95% confidence interval over seeds (Student "
        "t, n - 1 degrees of freedom; the mean alone with one seed). Holds: in how "
        f"many seeds the defence held: max ASR after round 1 <= {HOLD_ASR:g} at a "
        f"final clean accuracy at most {HOLD_ACCURACY_DROP:g} below FedAvg's "
        "without attack on the same data, split, clients and training (the mean "
        "of the `defense=none` runs without an attacker; – without them); the other "
        "seeds are its failure rate. "
        "Final = after the last round. ASR: share of "
        "triggered test images whose true class is not the target that the global "
        "model assigns to the target (a clean model scores near 0; `[no attacker]` "
        "rows measure the trigger on FedAvg without any attacker: that floor); – "
        "where the attack has no target. Precision / recall / FPR: each run's "
        "mean over the rounds where defined (flagged or excluded clients against "
        "the round's attackers); – for defences that exclude no whole client. "
        "With no attack every flag is false: recall is undefined, precision 0 "
        "wherever a client was flagged, and the FPR is what counts. Max ASR "
        "r≥2: the highest ASR after round 1. Attacker weight r≥2: the attacking "
        "clients' highest share of the aggregation weight after round 1. Acc. "
        "below FedAvg: FedAvg's mean clean accuracy without attack on the same "
        "task minus the run's final accuracy. Defence s/round: the server-side "
        "defence's mean wall time per round; wall time: the whole run, Ray "
        "start-up included (both depend on what else the machine was running).",
    ]
    commits: dict[str, int] = {}
    for run in runs:
        key = run.commit or "not recorded"
        commits[key] = commits.get(key, 0) + 1
    lines.append(
        "Code: "
        + ", ".join(f"`{c}` ({n} runs)" for c, n in sorted(commits.items()))
        + "."
    )
    shared: dict[str, tuple[str, ...]] = {}
    for run in runs:
        if run.shared:
            shared.setdefault(setting_key(run), run.shared)
    if shared:
        lines.append(
            "Attack settings every attacked run of a setting shares beyond its "
            "experiment's: "
            + "; ".join(f"*{k}*: {', '.join(v)}" for k, v in sorted(shared.items()))
            + "."
        )
    capped = sorted(
        {(r.experiment, r.dataset, r.train_samples) for r in runs if r.train_samples}
    )
    for experiment, dataset, samples in capped:
        lines.append(
            f"*{experiment}* trained on a {samples}-image subset of {dataset} "
            "(`dataset.max_train_samples`), not the full training set."
        )
    return "\n\n".join(lines)


def write_markdown(
    rows: list[Row],
    runs: list[Run],
    unfinished: list[Path],
    plots: dict[str, Path],
    path: Path,
    roots: Sequence[Path],
    targets: Iterable[Target] = (),
    layout: str = "pivot",
    floors: dict[str, str] | None = None,
    experiments: Sequence[str] = (),
) -> None:
    header = ["defence", "seeds", "holds", *(HEADERS[m] for m in METRICS)]
    where = ", ".join(f"`{r}`" for r in roots)
    if experiments:
        where += f" (experiments {', '.join(experiments)} only)"
    out = [f"# Defences compared: {where}", "", caption(runs), ""]
    targets = list(targets)
    if len({r.section for r in rows}) > 1 or targets:
        out += ["## Overview", ""]
        if targets:
            out += [
                "✗: at least one seed misses the target ("
                + ", ".join(map(str, targets))
                + "). Empty: not defined for that defence or setting, or not run.",
                "",
            ]
        if layout == "scorecard":
            out += scorecards(rows, targets)
        else:
            out += overview(rows, targets, floors)
        out += floor_reading(rows, floors or {})
    for name in dict.fromkeys(r.section for r in rows):
        out += [f"## {name}", ""]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        for row in (r for r in rows if r.section == name):
            cells = [row.defense, str(len(row.seeds)), _held(row)]
            cells += [_cell(row.mean[m], row.ci95[m], m) for m in METRICS]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        if name in plots:
            out += [f"![{name}]({plots[name].name})", ""]
    if unfinished:
        out += [
            f"{len(unfinished)} run director{'y' if len(unfinished) == 1 else 'ies'} "
            "without results.json (unfinished or failed), not counted:",
            "",
        ]
        out += [f"- `{p}`" for p in unfinished]
        out.append("")
    path.write_text("\n".join(out))


def report(
    root: Path | Sequence[Path],
    out: Path,
    targets: Iterable[Target] = (),
    layout: str = "pivot",
    floors: dict[str, str] | None = None,
    experiments: Sequence[str] = (),
) -> list[Row]:
    """Write table.md, table.csv and one PNG per setting for the runs under root
    (one folder, or several: a study and the FedAvg runs it shares with another);
    table.md opens with an overview across settings, marking missed targets:
    ``layout`` ``pivot`` (a line per defence, a column per setting, one table per
    metric) or ``scorecard`` (a table per defence, a line per setting).
    ``floors`` maps an attack label to the label of FedAvg's runs that measure
    its trigger's floor (:func:`floor_reading`). ``experiments``, when given,
    keeps only those experiments' runs: a study that shares a folder of
    references with others (the zoo's clean runs) reads only its own."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    roots = [root] if isinstance(root, Path) else list(root)
    runs, unfinished = [], []
    for folder in roots:
        found, left = find_runs(folder)
        runs += found
        unfinished += left
    where = ", ".join(map(str, roots))
    if not runs:
        raise FileNotFoundError(
            f"no run with results.json and config.yaml under {where}"
        )
    if experiments:
        names = sorted({r.experiment for r in runs})
        missing = [e for e in experiments if e not in names]
        if missing:
            raise FileNotFoundError(
                f"experiment {', '.join(missing)}: no finished run under {where}; "
                f"experiments found: {', '.join(names)}"
            )
        runs = [r for r in runs if r.experiment in experiments]
        unfinished = [
            d for d in unfinished if _experiment_of(d) in (*experiments, None)
        ]
    out.mkdir(parents=True, exist_ok=True)
    share_attack_overrides(runs)
    rows = summarise(runs)
    plots = {}
    for name in dict.fromkeys(r.section for r in rows):
        members = [r for r in runs if section(setting_key(r), r.attack) == name]
        plots[name] = plot_setting(name, members, out / f"{slug(name)}.png")
    write_csv(rows, out / "table.csv")
    write_markdown(
        rows,
        runs,
        unfinished,
        plots,
        out / "table.md",
        roots,
        targets,
        layout,
        floors,
        experiments,
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fedlight.report",
        description="Table and plots over every run (results.json) under DIR.",
    )
    parser.add_argument(
        "dir",
        type=Path,
        nargs="+",
        help="multirun folders or any trees of runs (one table over all of them)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: DIR/report)"
    )
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="METRIC<=X|METRIC>=X",
        help="mark overview cells where a seed misses this bound (repeatable), "
        f"METRIC one of {', '.join(METRICS)}",
    )
    parser.add_argument(
        "--layout",
        default="pivot",
        help="overview: pivot (a line per defence, a column per setting) or "
        "scorecard (a table per defence, a line per setting)",
    )
    parser.add_argument(
        "--experiment",
        action="append",
        default=[],
        metavar="NAME",
        help="only the runs of this experiment (config `name`, e.g. mnist_20; "
        "repeatable): for a DIR shared with other studies",
    )
    parser.add_argument(
        "--floor",
        action="append",
        default=[],
        metavar="ATTACK=FLOOR",
        help="read ATTACK's cells against FedAvg's runs labelled FLOOR (the attack "
        "poisoning nothing), e.g. 'a3fl=a3fl [boost=1, poison_fraction=0]' "
        "(repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        targets = [parse_target(text) for text in args.target]
        floors = dict(parse_floor(text) for text in args.floor)
        if args.layout not in LAYOUTS:
            raise ValueError(
                f"--layout {args.layout!r} is not one of {', '.join(LAYOUTS)}"
            )
    except ValueError as err:
        print(f"fedlight.report: error: {err}", file=sys.stderr)
        return 2
    for folder in args.dir:
        if not folder.is_dir():
            print(
                f"fedlight.report: error: {folder} is not a directory", file=sys.stderr
            )
            return 2
    out = args.out or args.dir[0] / "report"
    try:
        rows = report(args.dir, out, targets, args.layout, floors, args.experiment)
    except FileNotFoundError as err:
        print(f"fedlight.report: error: {err}", file=sys.stderr)
        return 2
    print(f"{len(rows)} rows -> {out / 'table.md'}, {out / 'table.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
