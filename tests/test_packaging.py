"""fedlight installs as a regular (non-editable) package with its configs inside."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from support import REPO


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
            "packages"
        ]
    )
    on_disk = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "fedlight").rglob("__init__.py")
    }
    assert on_disk | {"fedlight.configs"} == listed


@pytest.mark.slow
def test_regular_install_resolves_configs_outside_the_checkout(tmp_path: Path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "--target",
            str(target),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (target / "fedlight" / "configs" / "experiment" / "mnist_20.yaml").exists()
    assert list((target / "fedlight" / "data" / "embedded" / "mnist").glob("*.gz"))
    code = (
        "import fedlight, json;"
        "from hydra import compose, initialize_config_module;"
        "ctx = initialize_config_module(config_module='fedlight.configs', "
        "version_base='1.3');"
        "ctx.__enter__();"
        "cfg = compose(config_name='config', overrides=['+experiment=fmnist_30']);"
        "print(json.dumps([fedlight.__file__, cfg.name, cfg.num_clients]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    where, name, clients = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
    assert where.startswith(str(target)) and (name, clients) == ("fmnist_30", 30)
