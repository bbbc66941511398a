"""What Flower, Ray and Lightning cost: fedlight's full stack against a plain loop.

Runs one experiment twice in this process, from the same composed config (same
data, partitions, seeds, hyperparameters and defence): first through
:func:`fedlight.simulate.simulate` (Ray start-up and shut-down included), then
through :func:`fedlight.reference.run_reference`, the plain sequential PyTorch
loop kept as the oracle (on every core unless ``--threads``). Neither wall time
includes Python's imports (``import fedlight.simulate`` takes about 5 s).

- ``wall_s``: the call, end to end; ``ratio`` = fedlight / reference.
- ``time_to_first_round_s``: from the call to round 1's record; ``startup_s``
  is that minus round 1's own time.
- ``per_round_s``: median round time (train, defence and evaluation).
- ``per_fit_overhead_ms``: median over fits of the client's ``fit-seconds``
  minus its ``train-seconds`` (the time inside Lightning's training batches:
  forward, backward, optimiser step); "missing" if the clients report none.
  ``per_fit_overhead_round_ms`` is the driver's view (see :func:`fit_overhead`).
- ``samples_per_s``: training samples (fits x epochs x partition) over ``wall_s``.

Both runs record the load average and CPU pressure before and after, and fits
that stalled (a multi-threaded loop waits for a descheduled thread): on a
shared machine compare ratios only between runs at a similar load. Results are
merged into the JSON file under "quick" or "full", per experiment.

    python benchmarks/overhead.py --quick                      # mnist_20, 3 rounds
    python benchmarks/overhead.py --experiment mnist_20 --experiment fmnist_20
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from fedlight.reference import run_reference

RESULTS = Path(__file__).resolve().parent / "results" / "overhead.json"
REPO = Path(__file__).resolve().parents[1]
QUICK_ROUNDS = 3
TARGETS = {"ratio": 1.0, "per_fit_overhead_ms": 30.0, "time_to_first_round_s": 15.0}


def data_root() -> Path:
    """``$FEDLIGHT_DATA``, else ``../shared/data`` beside the checkout."""
    return Path(os.environ.get("FEDLIGHT_DATA", REPO.parent / "shared" / "data"))


def compose_experiment(
    name: str, quick: bool, ray_tmp: str, extra: list[str]
) -> DictConfig:
    """The config ``python -m fedlight.run +experiment=NAME`` would run."""
    overrides = [
        f"+experiment={name}",
        f"dataset.root={data_root().resolve()}",
        "wandb.mode=disabled",
        f"simulation.ray_temp_dir={ray_tmp}",
        *([f"num_rounds={QUICK_ROUNDS}"] if quick else []),
        *extra,
    ]
    with initialize_config_module(config_module="fedlight.configs", version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


class RoundClock(logging.Handler):
    """Notes when fedlight logs round 1's line: the first round record's arrival."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.first_round_at: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.first_round_at is None and str(record.msg).startswith("[round "):
            self.first_round_at = time.perf_counter()


def run_fedlight(cfg: DictConfig, verbose: bool) -> dict[str, Any]:
    """``simulate(cfg)`` timed from the call, with round 1's arrival time."""
    from fedlight.simulate import simulate

    logger = logging.getLogger("fedlight")
    clock = RoundClock()
    logger.addHandler(clock)
    level = logger.level
    logger.setLevel(logging.INFO)  # log_round's lines must reach the clock
    if not verbose:
        logger.propagate = False
    out_dir = Path(tempfile.mkdtemp(prefix="fedlight-overhead-"))
    try:
        start = time.perf_counter()
        results = simulate(cfg, out_dir)
        wall = time.perf_counter() - start
    finally:
        logger.removeHandler(clock)
        logger.setLevel(level)
        logger.propagate = True
        shutil.rmtree(out_dir, ignore_errors=True)
    first = None if clock.first_round_at is None else clock.first_round_at - start
    return {"results": results, "wall_s": wall, "time_to_first_round_s": first}


def run_plain(cfg: DictConfig, threads: int | None) -> dict[str, Any]:
    """The reference loop, timed from the call."""
    start = time.perf_counter()
    results = run_reference(cfg, num_threads=threads)
    wall = time.perf_counter() - start
    results.pop("final_state")
    rest = sum(r["seconds"] for r in results["rounds"][1:])
    return {"results": results, "wall_s": wall, "time_to_first_round_s": wall - rest}


def fits(results: dict[str, Any]) -> list[dict[str, float]]:
    """Every client fit's metrics, over all rounds."""
    return [m for r in results["rounds"] for m in r["clients"].values()]


def summarise(run: dict[str, Any], epochs: int) -> dict[str, Any]:
    """The figures both systems report."""
    results = run["results"]
    rounds = results["rounds"]
    samples = sum(m["train-examples"] * epochs for m in fits(results))
    train_time = sum(r["train_seconds"] for r in rounds)
    first = run["time_to_first_round_s"]
    return {
        "wall_s": run["wall_s"],
        "time_to_first_round_s": first,
        "startup_s": None if first is None else first - rounds[0]["seconds"],
        "per_round_s": statistics.median(r["seconds"] for r in rounds),
        "per_round_split_s": {
            k: statistics.median(r[f"{k}_seconds"] for r in rounds)
            for k in ("train", "defense", "eval")
        },
        "samples": samples,
        "samples_per_s": samples / run["wall_s"],
        "train_samples_per_s": samples / train_time if train_time else None,
        "accuracy": results["final"]["accuracy"],
        "asr": results["final"]["asr"],
        "loss": results["final"]["loss"],
    }


def fit_overhead(fed: dict[str, Any], slots: int) -> dict[str, Any]:
    """Per-fit overhead, from the client's view and from the driver's.

    ``per_fit_overhead_ms``: median of ``fit-seconds - train-seconds``: Lightning's
    loop between batches. ``per_fit_overhead_round_ms``: median over rounds of
    (train phase x ``slots`` - sum of ``train-seconds``) / fits, which adds what
    the client's clock misses: Trainer construction, messages, scheduling and
    slots left idle at the end of a round.
    """
    all_fits = fits(fed)
    if not all_fits or not all(
        "fit-seconds" in m and "train-seconds" in m for m in all_fits
    ):
        return {
            "per_fit_overhead_ms": None,
            "per_fit_overhead_round_ms": None,
            "source": "MISSING: the clients report no train-seconds/fit-seconds",
        }
    per_round = [
        (
            r["train_seconds"] * min(slots, len(c))
            - sum(m["train-seconds"] for m in c.values())
        )
        / len(c)
        for r in fed["rounds"]
        if (c := r["clients"])
    ]
    return {
        "per_fit_overhead_ms": 1000
        * statistics.median(m["fit-seconds"] - m["train-seconds"] for m in all_fits),
        "per_fit_overhead_round_ms": 1000 * statistics.median(per_round),
        "fit_s_median": statistics.median(m["fit-seconds"] for m in all_fits),
        "train_s_median": statistics.median(m["train-seconds"] for m in all_fits),
        "source": "fit-seconds - train-seconds, as the clients report them",
    }


def round_trace(results: dict[str, Any]) -> list[dict[str, Any]]:
    """What each round decided, to see where two runs part."""
    return [
        {
            "round": r["round"],
            "accuracy": r["accuracy"],
            "asr": r["asr"],
            "flagged": r["flagged"],
            "confidence": r["malicious_confidence"],
            "seconds": r["seconds"],
        }
        for r in results["rounds"]
    ]


def agreement(fed: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """How closely the two runs agree: final metrics, and flags per round."""
    diff: dict[str, Any] = {}
    for key in ("accuracy", "asr", "loss"):
        a, b = fed["final"][key], ref["final"][key]
        diff[f"{key}_diff"] = None if a is None or b is None else a - b
    diff["same_flags_every_round"] = all(
        a["flagged"] == b["flagged"]
        for a, b in zip(fed["rounds"], ref["rounds"], strict=True)
    )
    diff["identical_round_metrics"] = all(
        (a["accuracy"], a["loss"], a["asr"]) == (b["accuracy"], b["loss"], b["asr"])
        for a, b in zip(fed["rounds"], ref["rounds"], strict=True)
    )
    return diff


def load() -> dict[str, Any]:
    """The 1, 5 and 15 minute load averages, and the share of the last 10 s in
    which some task waited for a CPU (Linux PSI), if the kernel reports it."""
    report: dict[str, Any] = {"loadavg": [round(x, 2) for x in os.getloadavg()]}
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0].split()
        report["cpu_pressure_avg10"] = float(some[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        pass
    return report


def stalls(results: dict[str, Any]) -> dict[str, Any]:
    """Fits that trained over 5x slower per example than the fastest fit: on a
    shared machine a multi-threaded loop can wait seconds for a descheduled
    thread (the fastest fit, not the median, so that many stalls still show)."""
    timed = [
        (m["train-seconds"], m["train-examples"])
        for m in fits(results)
        if "train-seconds" in m and m.get("train-examples")
    ]
    if not timed:
        return {"stalled_fits": None, "train_s_max": None}
    fastest = min(t / n for t, n in timed)
    return {
        "stalled_fits": sum(t / n > 5 * fastest for t, n in timed),
        "train_s_max": max(t for t, _ in timed),
    }


def bench(
    name: str, quick: bool, threads: int | None, verbose: bool, extra: list[str]
) -> dict[str, Any]:
    """Both runs of one experiment, and what they say together."""
    ray_tmp = tempfile.mkdtemp(prefix="flray-")  # short: Unix sockets < 108 chars
    try:
        cfg = compose_experiment(name, quick, ray_tmp, extra)
        epochs = cfg.client.epochs
        load_before = load()
        fed = run_fedlight(cfg, verbose)
        load_mid = load()
        ref = run_plain(cfg, threads)
        load_after = load()
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    fed_summary = summarise(fed, epochs)
    slots = int(
        (cfg.simulation.num_cpus or os.cpu_count() or 1)
        // cfg.simulation.client_resources.num_cpus
    )
    fed_summary.update(fit_overhead(fed["results"], max(1, slots)))
    fed_summary["rounds"] = round_trace(fed["results"])
    ref_summary = summarise(ref, epochs)
    ref_fits = [m["train-seconds"] for m in fits(ref["results"])]
    ref_summary["train_s_median"] = statistics.median(ref_fits)
    fed_summary.update(stalls(fed["results"]))
    ref_summary.update(stalls(ref["results"]))
    ref_summary["num_threads"] = ref["results"]["num_threads"]
    ref_summary["rounds"] = round_trace(ref["results"])
    ratio = fed["wall_s"] / ref["wall_s"]
    overhead = fed_summary["per_fit_overhead_ms"]
    first = fed_summary["time_to_first_round_s"]
    return {
        "config": {
            "num_rounds": cfg.num_rounds,
            "num_clients": cfg.num_clients,
            "clients_per_round": cfg.clients_per_round,
            "epochs": epochs,
            "batch_size": cfg.client.batch_size,
            "client_num_cpus": cfg.simulation.client_resources.num_cpus,
            "data_source": fed["results"]["data_source"],
            "overrides": extra,
        },
        "fedlight": fed_summary,
        "reference": ref_summary,
        "ratio": ratio,
        # A stalled fit means the machine was oversubscribed: the times then
        # measure the neighbours, not fedlight or the loop.
        "timing_clean": fed_summary["stalled_fits"] == 0
        and ref_summary["stalled_fits"] == 0,
        "agreement": agreement(fed["results"], ref["results"]),
        "targets_met": {
            "ratio": ratio <= TARGETS["ratio"],
            "per_fit_overhead_ms": None
            if overhead is None
            else overhead <= TARGETS["per_fit_overhead_ms"],
            "time_to_first_round_s": None
            if first is None
            else first <= TARGETS["time_to_first_round_s"],
        },
        "load_average": {
            "before": load_before,
            "between": load_mid,
            "after": load_after,
        },
    }


def _f(value: float | None, spec: str) -> str:
    """``value`` formatted, or a dash as wide as the spec's width."""
    if value is None:
        width = spec.lstrip("+").split(".")[0]
        return "-".rjust(int(width) if width.isdigit() else 1)
    return format(value, spec)


def _load(report: dict[str, Any]) -> str:
    psi = report.get("cpu_pressure_avg10")
    return f"{report['loadavg'][0]:.2f}" + ("" if psi is None else f" (PSI {psi:.0f}%)")


def table(experiments: dict[str, Any]) -> str:
    """The report as a fixed-width table, one row per system and experiment."""
    head = (
        f"{'experiment':<12} {'system':<10} {'wall s':>7} {'ratio':>5} "
        f"{'startup':>7} {'1st rnd':>7} {'round s':>7} {'fit ovh':>7} "
        f"{'rnd ovh':>7} {'samples/s':>9} {'accuracy':>8} {'ASR':>6}"
    )
    units = f"{'':<24}{'s':>7} {'':>5} {'s':>7} {'s':>7} {'median':>7} "
    units += f"{'ms/fit':>7} {'ms/fit':>7}"
    lines = [head, units, "-" * len(head)]
    for name, e in experiments.items():
        for system in ("fedlight", "reference"):
            s = e[system]
            ratio = e["ratio"] if system == "fedlight" else 1.0
            lines.append(
                f"{name:<12} {system:<10} {s['wall_s']:7.1f} {ratio:5.2f} "
                f"{_f(s['startup_s'], '7.1f')} "
                f"{_f(s['time_to_first_round_s'], '7.1f')} {s['per_round_s']:7.2f} "
                f"{_f(s.get('per_fit_overhead_ms'), '7.0f')} "
                f"{_f(s.get('per_fit_overhead_round_ms'), '7.0f')} "
                f"{s['samples_per_s']:9.0f} {_f(s['accuracy'], '8.4f')} "
                f"{_f(s['asr'], '6.3f')}"
            )
        a = e["agreement"]
        lines.append(
            f"{'':<12} {'diff':<10} accuracy {_f(a['accuracy_diff'], '+.4f')}, "
            f"ASR {_f(a['asr_diff'], '+.4f')}, loss {_f(a['loss_diff'], '+.2e')}; "
            f"same flags every round: {a['same_flags_every_round']}; "
            f"identical round metrics: {a['identical_round_metrics']}"
        )
        ref, fed = e["reference"], e["fedlight"]
        lines.append(
            f"{'':<12} {'':<10} "
            f"{'timing clean' if e['timing_clean'] else 'TIMING UNRELIABLE'}: "
            f"reference threads {ref['num_threads']}; stalled "
            f"fits (train > 5x median): fedlight {fed['stalled_fits']}, reference "
            f"{ref['stalled_fits']} (slowest {_f(ref['train_s_max'], '.2f')} s)"
        )
        lines.append(
            f"{'':<12} {'':<10} fit overhead: {fed['source']}; load "
            f"{_load(e['load_average']['before'])} -> "
            f"{_load(e['load_average']['after'])}"
        )
    return "\n".join(lines)


def write_report(path: Path, mode: str, report: dict[str, Any]) -> None:
    """Merge ``report`` into ``path`` under ``mode`` ("quick" or "full"): a run of
    one experiment keeps the other experiments' and the other mode's entries."""
    saved: dict[str, Any] = {}
    if path.is_file():
        saved = json.loads(path.read_text())
    section = saved.setdefault(mode, {"experiments": {}})
    section["experiments"].update(report.pop("experiments"))
    section.update(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(saved, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--experiment",
        action="append",
        help="experiment config name (repeatable; default mnist_20)",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_ROUNDS} rounds instead of all"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of the reference loop (default: every core)",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        help="an extra Hydra override for both runs (e.g. num_clients=4)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--verbose", action="store_true", help="fedlight's round log")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("WANDB_SILENT", "true")

    experiments = {
        name: bench(name, args.quick, args.threads, args.verbose, args.override)
        for name in args.experiment or ["mnist_20"]
    }
    print(table(experiments))
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
        },
        "targets": TARGETS,
        "experiments": experiments,
    }
    write_report(args.output, "quick" if args.quick else "full", report)
    print(f"wrote {args.output} ({'quick' if args.quick else 'full'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
