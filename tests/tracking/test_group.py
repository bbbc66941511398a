"""The W&B group that the jobs of one Hydra multirun share."""

from __future__ import annotations

import os

from fedlight.tracking import group
from fedlight.tracking.group import multirun_group, sweep_group


def test_a_sweep_folder_names_its_group():
    assert sweep_group("multirun/default/2026-01-02_03-04-05") == (
        "default-2026-01-02_03-04-05"
    )
    assert sweep_group("/abs/studies/ablation") == "studies-ablation"


def test_every_job_of_a_multirun_gets_the_first_jobs_group(monkeypatch):
    monkeypatch.setattr(group, "_groups", {})
    first = multirun_group("multirun/mnist_20/2026-01-02_03-04-05")
    # +experiment=glob(*) changes ``name``, so later jobs see another sweep folder
    later = multirun_group("multirun/fmnist_20/2026-01-02_03-04-05")
    assert first == later == "mnist_20-2026-01-02_03-04-05"
    assert group._groups == {os.getpid(): first}
