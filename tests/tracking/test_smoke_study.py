"""One offline smoke study through the real stack (a Hydra multirun of two
defences), read back with the dump reader: every metric of every round, the
summary, the artifact, the plots and the confidence table equal results.json;
the jobs share a W&B group; the study's report spec validates against what the
runs logged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_wandb_report import panels, run_sets, validate

from fedlight.record import RoundRecord
from fedlight.tracking import sweep_group
from fedlight.tracking.dump import load_run
from fedlight.tracking.rows import CONFIDENCE_COLUMNS, confidence_rows, round_row
from fedlight.wandb_report import COMPARISON_COLUMNS, build_report, report_spec
from support import DATA_ROOT, SMOKE

pytestmark = pytest.mark.slow

DEFENSES = ("feddefender", "none")


@dataclass
class Study:
    output: str
    sweep: Path
    jobs: dict[str, Path]  # defence -> run dir


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Study:
    if not (DATA_ROOT / "mnist").is_dir():
        pytest.skip(f"no data under {DATA_ROOT}; set FEDLIGHT_DATA")
    root = tmp_path_factory.mktemp("study")
    sweep = root / "sweep"
    ray_tmp = tempfile.mkdtemp(prefix="flray-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(FEDLIGHT_DATA=str(DATA_ROOT), NETRC=str(root / "no-netrc"))
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "fedlight.run",
                "-m",
                *(o for o in SMOKE if not o.startswith("wandb.mode")),
                "wandb.mode=offline",
                "attack.malicious_clients=[0]",
                f"defense={','.join(DEFENSES)}",
                f"simulation.ray_temp_dir={ray_tmp}",
                f"hydra.sweep.dir={sweep}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            cwd=root,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    jobs = {d: sweep / str(i) for i, d in enumerate(DEFENSES)}
    return Study(output, sweep, jobs)


def results_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.parametrize("defense", DEFENSES)
def test_every_round_metric_in_the_dump_equals_results_json(study, defense):
    run_dir = study.jobs[defense]
    rounds = results_of(run_dir)["rounds"]
    history = load_run(run_dir)["history"]
    assert [row["_step"] for row in history] == [r["round"] for r in rounds] == [1, 2]
    for row, r in zip(history, rounds, strict=True):
        assert row["round"] == r["round"]
        assert (row["accuracy"], row["loss"], row["asr"]) == (
            r["accuracy"],
            r["loss"],
            r["asr"],
        )
        for key in ("precision", "recall", "fpr", "flagged"):
            assert row[f"detection/{key}"] == r[key]
        confidence = r["malicious_confidence"] or {}
        assert {c: row[f"confidence/{c}"] for c in confidence} == confidence
        assert set(r["clients"]) == {"0", "1", "2", "3"}
        for cid, metrics in r["clients"].items():
            assert row[f"client/{cid}/train_loss"] == metrics["train-loss"]
            assert row[f"client/{cid}/train_accuracy"] == metrics["train-accuracy"]
            assert row[f"client/{cid}/num_examples"] == metrics["num-examples"]
        assert (row["time/train"], row["time/defense"], row["time/eval"]) == (
            r["train_seconds"],
            r["defense_seconds"],
            r["eval_seconds"],
        )
        assert row["time/round"] == r["seconds"]
        assert row["attacker_weight"] == r["attacker_weight"]
        assert {c: row[f"weight/{c}"] for c in r["weights"]} == r["weights"]
        assert set(r["weights"]) == {"0", "1", "2", "3"}
        assert sum(r["weights"].values()) == pytest.approx(1.0)
        assert r["attacker_weight"] == r["weights"]["0"]
        expected = round_row(RoundRecord.from_dict(r))  # every other key logged
        assert {k: row.get(k) for k in expected} == expected
    if defense == "feddefender":
        assert all(len(r["malicious_confidence"]) == 4 for r in rounds)
    else:
        assert all(r["flagged"] is None for r in rounds)
        # FedAvg: every client its reported count's share, the attacker's boosted
        # or not (the smoke config does not boost).
        for r in rounds:
            counts = {c: m["num-examples"] for c, m in r["clients"].items()}
            total = sum(counts.values())
            assert r["weights"] == pytest.approx(
                {c: n / total for c, n in counts.items()}
            )


@pytest.mark.parametrize("defense", DEFENSES)
def test_summary_artifact_plots_and_confidence_table(study, defense):
    run_dir = study.jobs[defense]
    results = results_of(run_dir)
    dumped = load_run(run_dir)
    assert dumped["finished"] and dumped["exit_code"] == 0
    summary = dumped["summary"]
    for key in ("accuracy", "loss", "asr"):
        assert summary[f"final/{key}"] == results["final"][key]
    last = results["rounds"][-1]
    for key in ("precision", "recall", "fpr", "attacker_weight"):
        assert summary[f"final/{key}"] == last[key]
    assert summary["seconds"] == results["seconds"] and summary["rounds"] == 2
    assert summary["malicious_clients"] == results["malicious_clients"]
    assert summary["data_source"] == results["data_source"]
    (artifact,) = [a for a in dumped["artifacts"] if a["type"] == "results"]
    assert artifact["files"] == ["results.json"]
    plot = dumped["history"][-1]["plots/iid-convnet-mnist"]
    assert plot["_type"] == "image-file"
    assert (Path(dumped["file"]).parent / "files" / plot["path"]).stat().st_size > 1000
    table = dumped["tables"].get("confidence_table")
    if defense == "feddefender":
        assert table["columns"] == CONFIDENCE_COLUMNS
        records = [RoundRecord.from_dict(r) for r in results["rounds"]]
        assert table["data"] == confidence_rows(records, results["malicious_clients"])
        assert len(table["data"]) == 2 * 4
    else:
        assert table is None  # a defence that scores nobody has no table


def test_the_run_config_is_the_resolved_config_and_jobs_share_a_group(study):
    dumps = {d: load_run(run_dir) for d, run_dir in study.jobs.items()}
    groups = {dumped["run"]["group"] for dumped in dumps.values()}
    assert groups == {sweep_group(study.sweep)}
    for defense, dumped in dumps.items():
        saved = OmegaConf.to_container(
            OmegaConf.load(study.jobs[defense] / "config.yaml")
        )
        assert dumped["config"] == saved
        assert dumped["config"]["wandb"]["group"] == sweep_group(study.sweep)
    # Tagged with the registered plug-in names (attack=backdoor, defense=...).
    assert dumps["feddefender"]["run"]["tags"] == ["mnist", "backdoor", "feddefender"]
    assert dumps["none"]["run"]["tags"] == ["mnist", "backdoor", "none"]
    for defense, dumped in dumps.items():
        assert dumped["config"]["defense"]["name"] == defense
        assert dumped["config"]["attack"]["name"] == "backdoor"


def test_the_report_spec_for_the_study_validates_against_its_runs(study):
    group = sweep_group(study.sweep)
    spec = report_spec(build_report(group, "fedlight"))
    validate(spec)
    assert {rs["filters"]["filters"][0]["value"] for rs in run_sets(spec)} == {group}
    for run_dir in study.jobs.values():
        dumped = load_run(run_dir)
        logged = set().union(*dumped["history"])
        for panel in panels(spec):
            assert set(panel["config"].get("metrics", [])) <= logged
        for column in COMPARISON_COLUMNS:
            section, name = column.split(":", 1)
            if section == "summary":
                assert name in dumped["summary"]
            else:  # config:<top>.value.<rest>
                node = dumped["config"]
                for part in name.replace(".value", "").split("."):
                    node = node[part]


def test_the_dump_command_prints_the_run_as_json(study):
    run_dir = study.jobs["feddefender"]
    proc = subprocess.run(
        [sys.executable, "-m", "fedlight.tracking.dump", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed["history"] == load_run(run_dir)["history"]
    assert (
        printed["summary"]["final/accuracy"] == results_of(run_dir)["final"]["accuracy"]
    )


def test_the_console_shows_fedlights_lines_without_library_noise(study):
    out = study.output
    assert out.count("***FedDefender Output Round") == 2  # only the FedDefender job
    assert out.count("[SUMMARY]") == 2
    assert out.count("upload it with `wandb sync") == 2
    for noise in ("GPU available", "litlogger", "LOCAL_RANK", "DEPRECATED", "wandb:"):
        assert noise not in out
