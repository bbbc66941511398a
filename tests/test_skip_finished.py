"""``skip_finished=true``: a sweep rerun into the same folder returns the jobs that
already finished instead of redoing them, and never overwrites another config's."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from fedlight.checks import ConfigError
from fedlight.simulate import simulate


def finished(run_dir, cfg, payload):
    run_dir.mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    (run_dir / "results.json").write_text(json.dumps(payload))


def test_finished_job_is_returned_without_work(smoke_cfg, tmp_path):
    import ray

    payload = {"final": {"accuracy": 0.5}, "rounds": []}
    finished(tmp_path / "0", smoke_cfg, payload)
    before = (tmp_path / "0" / "results.json").stat().st_mtime_ns
    rerun = smoke_cfg.copy()
    rerun.skip_finished = True
    rerun.wandb.mode = "online"  # W&B and simulation settings may differ
    assert simulate(rerun, tmp_path / "0") == payload
    assert not ray.is_initialized()
    assert (tmp_path / "0" / "results.json").stat().st_mtime_ns == before


@pytest.mark.parametrize(
    "change",
    [
        {"seed": 1},
        # What the defences assume, and which plug-in ran, are part of the config.
        {"server": {"max_attackers": 3}},
        {"defense": {"name": "none"}},
        {"attack": {"name": "none"}},
    ],
)
def test_another_configs_results_are_not_overwritten(smoke_cfg, tmp_path, change):
    finished(tmp_path / "0", smoke_cfg, {"final": {}})
    other = OmegaConf.merge(smoke_cfg, change)
    if "defense" in change or "attack" in change:  # a whole other plug-in node
        group = next(iter(change))
        other[group] = change[group]
    other.skip_finished = True
    assert other != smoke_cfg
    with pytest.raises(ConfigError, match="skip_finished=true is not allowed"):
        simulate(other, tmp_path / "0")
    assert json.loads((tmp_path / "0" / "results.json").read_text()) == {"final": {}}
    saved = OmegaConf.load(tmp_path / "0" / "config.yaml")
    assert saved.seed == smoke_cfg.seed
    assert saved.defense == smoke_cfg.defense and saved.server == smoke_cfg.server
