"""Scale: wall time per round and peak memory for 100, 300 and 1,000 clients.

Each size is ``+experiment=mnist_1000`` with ``num_clients`` overridden (Dirichlet
0.5, 50 clients sampled per round, FedDefender), run by ``simulate`` in its own
subprocess on a fresh local Ray, so one size's memory is not another's. A thread
in that process samples, every ``--interval`` seconds:

- the driver's resident memory (``VmRSS``; ``VmHWM`` at the end is its peak), and
- the whole process tree's proportional set size (``Pss``: the driver, Ray's GCS,
  raylet and agents, every client actor and the defender): shared pages, such as
  the object store's copy of the data that every actor maps, count once in total
  instead of once per process, as RSS would.

Round boundaries come from simulate's per-round hook, so every round gets the
peak of its own samples. Targets (the issue's): 1,000 clients under 4 GiB in
total, the per-round tree peak flat from round 2 to the last round (within 5%),
and time per round independent of the number of clients.

    python benchmarks/scale.py                  # 100, 300, 1000 clients, 10 rounds
    python benchmarks/scale.py --quick          # 100 and 1000 clients, 4 rounds
    python benchmarks/scale.py --clients 1000 --rounds 3

``--quick`` writes ``results/scale-quick.json`` (``--out`` overrides), so it never
replaces the committed full result, ``results/scale.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "scale.json"
QUICK_RESULTS = RESULTS.with_name("scale-quick.json")
MIB = 1024**2
GIB_TARGET = 4.0
FLAT_TARGET = 0.05


def proc_children() -> dict[int, list[int]]:
    """Parent pid -> child pids for every process, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children = proc_children()
    found, frontier = [pid], [pid]
    while frontier:
        frontier = [c for p in frontier for c in children.get(p, [])]
        found += frontier
    return found


def status_kib(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` field in KiB (0 once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kib(pid: int) -> int:
    """A process's proportional set size in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemorySampler(threading.Thread):
    """Samples the driver's RSS and the tree's PSS; ``cut()`` closes a round."""

    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.pid = os.getpid()
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.driver_peak = 0
        self.tree_peak = 0
        self.overall_tree_peak = 0
        self.processes = 0

    def sample(self) -> None:
        pids = tree(self.pid)
        tree_pss = sum(pss_kib(p) for p in pids)
        driver = status_kib(self.pid, "VmRSS")
        with self.lock:
            self.driver_peak = max(self.driver_peak, driver)
            self.tree_peak = max(self.tree_peak, tree_pss)
            self.overall_tree_peak = max(self.overall_tree_peak, tree_pss)
            self.processes = max(self.processes, len(pids))

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.sample()

    def cut(self) -> tuple[float, float]:
        """The driver's and the tree's peaks (MiB) since the last cut."""
        self.sample()
        with self.lock:
            peaks = (self.driver_peak / 1024, self.tree_peak / 1024)
            self.driver_peak = self.tree_peak = 0
        return peaks


def measure(clients: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run one size in this process and return its figures."""
    from hydra import compose, initialize_config_module

    import fedlight.simulate as sim
    from fedlight.record import RoundRecord

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = [
        "+experiment=mnist_1000",
        f"num_clients={clients}",
        f"clients_per_round={args.per_round}",
        f"num_rounds={args.rounds}",
        f"client.epochs={args.epochs}",
        "wandb.mode=disabled",
        f"simulation.ray_temp_dir={args.ray_temp_dir}",
    ]
    if args.data:
        overrides.append(f"dataset.root={args.data}")
    with initialize_config_module(config_module="fedlight.configs", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)

    sampler = MemorySampler(args.interval)
    per_round: list[dict[str, float]] = []
    original = sim.log_round

    def log_round(record: RoundRecord, *a: Any, **kw: Any) -> None:
        driver, whole = sampler.cut()
        per_round.append(
            {
                "round": record.round,
                "seconds": record.seconds,
                "train_seconds": record.train_seconds,
                "defense_seconds": record.defense_seconds,
                "eval_seconds": record.eval_seconds,
                "driver_rss_peak_mib": driver,
                "tree_pss_peak_mib": whole,
            }
        )
        original(record, *a, **kw)

    sim.log_round = log_round  # simulate's per-round hook looks the name up here
    sampler.start()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="flscale-") as out:
        results = sim.simulate(cfg, out)
    total = time.perf_counter() - started
    sampler.stop_event.set()
    later = per_round[1:]
    tree_2, tree_last = later[0]["tree_pss_peak_mib"], later[-1]["tree_pss_peak_mib"]
    drv_2, drv_last = later[0]["driver_rss_peak_mib"], later[-1]["driver_rss_peak_mib"]
    return {
        "clients": clients,
        "clients_per_round": args.per_round,
        "rounds": args.rounds,
        "epochs": args.epochs,
        "data_source": results["data_source"],
        "seconds_total": total,
        # start-up: data, partitions, Ray, actor pool, node discovery (one query
        # per client), then the rounds
        "seconds_before_rounds": total - sum(r["seconds"] for r in per_round),
        "round_seconds_mean_2_on": statistics.mean(r["seconds"] for r in later),
        "round_seconds_median_2_on": statistics.median(r["seconds"] for r in later),
        "driver_peak_mib": status_kib(os.getpid(), "VmHWM") / 1024,
        "tree_peak_pss_mib": sampler.overall_tree_peak / 1024,
        "max_processes": sampler.processes,
        "tree_growth_round_2_to_last": (tree_last - tree_2) / tree_2,
        "driver_growth_round_2_to_last": (drv_last - drv_2) / drv_2,
        "per_round": per_round,
        "final_accuracy": results["final"]["accuracy"],
    }


def in_subprocess(clients: int, args: argparse.Namespace) -> dict[str, Any]:
    """:func:`measure` in a fresh process with its own short Ray temp dir."""
    ray_tmp = tempfile.mkdtemp(prefix="flray-")
    cmd = [
        sys.executable,
        __file__,
        "--measure",
        str(clients),
        "--per-round",
        str(args.per_round),
        "--rounds",
        str(args.rounds),
        "--epochs",
        str(args.epochs),
        "--interval",
        str(args.interval),
        "--ray-temp-dir",
        ray_tmp,
    ]
    if args.data:
        cmd += ["--data", str(args.data)]
    env = {**os.environ, "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}
    try:
        out = subprocess.run(
            cmd, check=True, stdout=subprocess.PIPE, text=True, env=env
        ).stdout
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    return json.loads(out.strip().splitlines()[-1])


def default_data() -> Path | None:
    """``$FEDLIGHT_DATA``, else ``../shared/data`` beside the checkout, if present."""
    root = Path(os.environ.get("FEDLIGHT_DATA", REPO.parent / "shared" / "data"))
    return root.resolve() if (root / "mnist").is_dir() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--per-round", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="100, 1000; 4 rounds")
    parser.add_argument("--interval", type=float, default=0.25, help="sampling, s")
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument(
        "--out", type=Path, help="default: results/scale.json, or -quick.json"
    )
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ray-temp-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure:
        figures = measure(args.measure, args)
        sys.stdout.flush()
        print(json.dumps(figures))
        return
    if args.quick:
        args.clients, args.rounds = [100, 1000], 4
    if args.out is None:
        args.out = QUICK_RESULTS if args.quick else RESULTS
    if args.rounds < 3:
        parser.error("--rounds must be >= 3 (round 1 warms up; growth needs two more)")

    rows = []
    print(
        f"{'clients':>7} {'s/round':>8} {'startup_s':>9} {'driver_MiB':>10} "
        f"{'tree_MiB':>9} {'tree_growth':>11}",
        file=sys.stderr,
    )
    for clients in args.clients:
        row = in_subprocess(clients, args)
        rows.append(row)
        print(
            f"{clients:>7} {row['round_seconds_median_2_on']:>8.2f} "
            f"{row['seconds_before_rounds']:>9.1f} {row['driver_peak_mib']:>10.0f} "
            f"{row['tree_peak_pss_mib']:>9.0f} "
            f"{row['tree_growth_round_2_to_last']:>+11.1%}",
            file=sys.stderr,
        )
    biggest = max(rows, key=lambda r: r["clients"])
    medians = [r["round_seconds_median_2_on"] for r in rows]
    payload = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "targets": {
            "largest_tree_peak_under_4_gib": biggest["tree_peak_pss_mib"]
            < GIB_TARGET * 1024,
            "tree_flat_round_2_to_last_within_5pct": all(
                abs(r["tree_growth_round_2_to_last"]) <= FLAT_TARGET for r in rows
            ),
            # the machine is shared and noisy: report the spread, judge by eye
            "round_seconds_max_over_min": max(medians) / min(medians),
        },
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
