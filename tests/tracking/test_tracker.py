"""The Tracker against the real wandb client: offline runs read back with the
dump reader, a disabled run writing nothing, and W&B unreachable at the start
or in the middle of a run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tracking_sample import record

from fedlight.record import RoundRecord
from fedlight.tracking import Tracker
from fedlight.tracking.dump import load_run
from fedlight.tracking.rows import round_row

HERE = Path(__file__).parent


def results_for(rounds: list[RoundRecord], path: Path) -> dict:
    last = rounds[-1]
    results = {
        "name": "t",
        "malicious_clients": ["0"],
        "data_source": "test",
        "rounds": [r.to_dict() for r in rounds],
        "final": {"accuracy": last.accuracy, "loss": last.loss, "asr": last.asr},
        "seconds": 9.5,
    }
    path.write_text(json.dumps(results))
    return results


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def track(out: Path, rounds: list[RoundRecord], mode: str | None, **kwargs) -> Tracker:
    tracker = Tracker(
        {"num_rounds": len(rounds), "defense": {"theta": 0.5}},
        out,
        mode=mode,
        group="g1",
        tags=["mnist", "Backdoor", "FedDefender"],
        name="unit",
        **kwargs,
    )
    for r in rounds:
        tracker.log_round(r)
    tracker.finish(results_for(rounds, out / "results.json"), out / "results.json", [])
    return tracker


def test_an_offline_run_reads_back_as_logged(tmp_path, no_credentials):
    rounds = [record(1), record(2, asr=None, precision=None, flagged=[])]
    tracker = track(tmp_path, rounds, mode=None)  # no key: offline
    assert tracker.mode == "offline" and tracker.run is None
    dumped = load_run(tmp_path)
    assert Path(dumped["file"]).parent.name.startswith("offline-run-")
    assert dumped["finished"] and dumped["exit_code"] == 0
    assert dumped["run"]["group"] == "g1" and dumped["run"]["name"] == "unit"
    assert dumped["run"]["tags"] == ["mnist", "Backdoor", "FedDefender"]
    assert dumped["config"] == {"num_rounds": 2, "defense": {"theta": 0.5}}
    history = dumped["history"]
    assert [row["_step"] for row in history] == [1, 2]
    for row, r in zip(history, rounds, strict=True):
        expected = round_row(r)
        assert {k: row[k] for k in expected} == expected
    assert dumped["summary"]["final/accuracy"] == 0.9
    assert dumped["summary"]["final/precision"] is None
    assert dumped["summary"]["final/attacker_weight"] == 0.0
    assert history[0]["attacker_weight"] == 0.0 and history[0]["weight/2"] == 0.75
    assert dumped["tables"]["confidence_table"]["data"][0] == [1, "0", 1.0, True, True]
    (artifact,) = [a for a in dumped["artifacts"] if a["type"] == "results"]
    assert artifact["files"] == ["results.json"]


def test_a_disabled_run_writes_nothing(tmp_path, no_credentials):
    tracker = track(tmp_path, [record(1)], mode="disabled")
    assert tracker.run_dir is None
    assert not (tmp_path / "wandb").exists()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Run in a fresh process: wandb reads WANDB_* once per process, at its first run.
CHILD = """
import json, logging, sys
from pathlib import Path
from tracking_sample import record
from fake_wandb import serve
from fedlight.tracking import Tracker

logging.basicConfig(level=logging.INFO)
out, stop_after = Path(sys.argv[1]), int(sys.argv[2])
server = serve() if stop_after else None
if server:
    import os
    os.environ["WANDB_BASE_URL"] = f"http://127.0.0.1:{server.server_port}"
tracker = Tracker({}, out, mode=None, name="unit")
started = tracker.mode
rounds = [record(1), record(2), record(3)]
for r in rounds:
    tracker.log_round(r)
    if server and r.round == stop_after:
        server.shutdown()
        server.server_close()  # W&B is gone from here on
results = {"rounds": [r.to_dict() for r in rounds],
           "final": {"accuracy": 0.9, "loss": 0.3, "asr": 0.05}, "seconds": 1.0,
           "malicious_clients": ["0"], "data_source": "test"}
(out / "results.json").write_text(json.dumps(results))
tracker.finish(results, out / "results.json", [])
print(json.dumps([started, tracker.mode]))
"""


def run_child(out: Path, stop_after: int, **env: str) -> tuple[list[str], str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    environ.update(
        NETRC=str(out / "no-netrc"),
        WANDB_API_KEY="k" * 40,
        PYTHONPATH=os.pathsep.join([str(HERE), environ.get("PYTHONPATH", "")]),
        **env,
    )
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(out), str(stop_after)],
        capture_output=True,
        text=True,
        timeout=300,
        env=environ,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


@pytest.mark.slow
def test_w_and_b_unreachable_at_the_start_logs_offline(tmp_path):
    modes, log = run_child(
        tmp_path,
        stop_after=0,
        WANDB_BASE_URL=f"http://127.0.0.1:{closed_port()}",
        WANDB_INIT_TIMEOUT="3",
    )
    assert modes == ["offline", "offline"]
    assert "W&B unreachable" in log and "logging offline instead" in log
    dumped = load_run(tmp_path)
    assert Path(dumped["file"]).parent.name.startswith("offline-run-")
    assert [row["round"] for row in dumped["history"]] == [1, 2, 3]


@pytest.mark.slow
def test_w_and_b_lost_mid_run_keeps_every_metric_on_disk(tmp_path):
    modes, log = run_child(
        tmp_path, stop_after=1, WANDB_ENTITY="e", WANDB_FINISH_TIMEOUT="3"
    )
    assert modes == ["online", "online"]
    dumped = load_run(tmp_path)
    assert Path(dumped["file"]).parent.name.startswith("run-")  # an online run
    assert [row["round"] for row in dumped["history"]] == [1, 2, 3]
    assert [row["accuracy"] for row in dumped["history"]] == [0.9] * 3
    assert dumped["summary"]["final/accuracy"] == 0.9
    assert "wandb sync" not in log or "upload" in log
