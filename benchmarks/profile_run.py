"""Where a fedlight run spends its CPU: py-spy over every process of a short run.

Records ``simulate`` of one experiment with ``py-spy record --subprocesses``
(the driver, Ray's helper processes and every actor), then sorts the samples by
process (driver, client actors, defender, Ray's own) and by what the Python
stack was doing (imports, training steps, Lightning's loop, Flower and Ray
messaging, evaluation, defence, start-up). py-spy samples running threads only,
so the seconds are CPU seconds, not wall time. Prints a table and writes
``benchmarks/results/profile-LABEL.json`` with the table and the top frames.

    python benchmarks/profile_run.py --label after --rounds 3
    PYTHONPATH=../old-checkout python benchmarks/profile_run.py --label before

Needs ``py-spy`` (in the dev extra) and permission to ptrace child processes.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
RATE = 100  # samples per second and thread

# (category, pattern on a frame), first match from the innermost frame outwards.
CATEGORIES = [
    ("import", re.compile(r"^_find_and_load \(<frozen importlib")),
    ("train step", re.compile(r"\((fedlight/models/module|torch/(autograd|optim))")),
    ("evaluation", re.compile(r"\(fedlight/evaluation\.py")),
    ("defence", re.compile(r"\(fedlight/defenses/")),
    ("lightning loop", re.compile(r"\((pytorch_lightning|lightning_fabric)/")),
    ("ray start/stop", re.compile(r"^(init|shutdown) \(ray/_private/worker\.py")),
    ("flower", re.compile(r"\(flwr/")),
    ("ray", re.compile(r"\(ray/")),
]


def role(process: str, frames: set[str]) -> str:
    """A process's part in the run: a Ray worker by the code it ran (py-spy
    sees its command line from before Ray renames it), others by command line."""
    if any("fedlight/defenses/" in f for f in frames):
        return "defender actor"
    if any("ray_transport/ray_actor.py" in f for f in frames):
        return "client actor"
    for key, name in (
        ("default_worker", "other Ray worker"),
        ("dashboard", "Ray dashboard/agents"),
        ("runtime_env", "Ray dashboard/agents"),
        ("monitor", "Ray monitors"),
        ("raylet", "raylet"),
        ("gcs_server", "gcs"),
    ):
        if key in process:
            return name
    return "other process"


def category(frames: list[str]) -> str:
    """What the stack was doing: the first category whose pattern matches a
    frame, scanning from the innermost frame; imports win wherever they are."""
    if not frames:
        return "native (no Python frame)"
    if any(CATEGORIES[0][1].search(f) for f in frames):
        return "import"
    for name, pattern in CATEGORIES[1:]:
        if any(pattern.search(f) for f in reversed(frames)):
            return name
    return "other"


def summarise(raw: Path) -> dict[str, Any]:
    """CPU seconds per (role, category) and the hottest leaf frames per role."""
    table: dict[str, collections.Counter[str]] = collections.defaultdict(
        collections.Counter
    )
    leaves: dict[str, collections.Counter[str]] = collections.defaultdict(
        collections.Counter
    )
    samples = []
    seen: dict[str, set[str]] = collections.defaultdict(set)
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        parts = stack.split(";")
        processes = [p for p in parts if p.startswith("process ")]
        frames = [p for p in parts if not p.startswith(("process ", "thread "))]
        process = processes[-1] if len(processes) > 1 else "driver"
        seen[process].update(frames)
        samples.append((process, frames, int(count)))
    roles = {p: "driver" if p == "driver" else role(p, f) for p, f in seen.items()}
    for process, frames, count in samples:
        who = roles[process]
        n = count / RATE
        table[who][category(frames)] += n
        if frames:
            leaves[who][frames[-1]] += n
    return {
        "cpu_s": {w: dict(c.most_common()) for w, c in sorted(table.items())},
        "top_frames": {w: c.most_common(8) for w, c in sorted(leaves.items())},
    }


def record(args: argparse.Namespace, raw: Path) -> float:
    """Run this script's ``--inner`` mode under py-spy; its wall time."""
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("profile_run: py-spy is not installed (pip install py-spy)")
    inner = [sys.executable, __file__, "--inner", "--experiment", args.experiment]
    inner += ["--rounds", str(args.rounds)]
    start = time.perf_counter()
    subprocess.run(
        [spy, "record", "--subprocesses", "--nonblocking", "-r", str(RATE)]
        + ["--format", "raw", "-o", str(raw), "--", *inner],
        check=True,
    )
    return time.perf_counter() - start


def run_inner(experiment: str, rounds: int) -> None:
    """The profiled part: one ``simulate`` call, as ``fedlight.run`` makes it."""
    from hydra import compose, initialize_config_module

    from fedlight.simulate import simulate

    root = Path(os.environ.get("FEDLIGHT_DATA", REPO.parent / "shared" / "data"))
    with tempfile.TemporaryDirectory(prefix="flr-") as tmp:
        with initialize_config_module("fedlight.configs", version_base="1.3"):
            cfg = compose(
                "config",
                [
                    f"+experiment={experiment}",
                    f"dataset.root={root.resolve()}",
                    "wandb.mode=disabled",
                    f"num_rounds={rounds}",
                    f"simulation.ray_temp_dir={tmp}",
                ],
            )
        start = time.perf_counter()
        simulate(cfg, Path(tmp) / "run")
        print(f"simulate: {time.perf_counter() - start:.1f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="mnist_20")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--label", default="run")
    parser.add_argument("--raw", type=Path, help="keep py-spy's samples in this file")
    parser.add_argument(
        "--from-raw", type=Path, help="summarise an earlier --raw file, run nothing"
    )
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        run_inner(args.experiment, args.rounds)
        return 0
    wall = None
    with tempfile.TemporaryDirectory() as tmp:
        raw = args.from_raw or args.raw or Path(tmp) / "profile.txt"
        if args.from_raw is None:
            wall = record(args, raw)
        report = summarise(raw)
    report.update(
        experiment=args.experiment,
        rounds=args.rounds,
        wall_s=wall,
        loadavg=os.getloadavg(),
        date=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    names = [n for n, _ in CATEGORIES] + ["native (no Python frame)"]
    width = max(len(n) for n in names)
    took = "" if wall is None else f": {wall:.1f} s wall"
    print(f"{args.experiment}, {args.rounds} rounds{took} (CPU seconds below)")
    for who, cats in report["cpu_s"].items():
        total = sum(cats.values())
        print(f"{who} ({total:.1f} s)")
        for name, secs in cats.items():
            print(f"  {name:<{width}} {secs:6.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"profile-{args.label}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
