"""``python -m fedlight.run +experiment=mnist_20``: the Hydra entry point."""

from __future__ import annotations

import sys
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from fedlight.checks import ConfigError, check_config
from fedlight.data import DataNotFoundError
from fedlight.tracking import multirun_group


@hydra.main(
    version_base="1.3", config_path="pkg://fedlight.configs", config_name="config"
)
def main(cfg: DictConfig) -> None:
    """Run one experiment into Hydra's run directory; bad input exits 2 in one line."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN and cfg.wandb.group is None:
        cfg.wandb.group = multirun_group(hydra_cfg.sweep.dir)  # one W&B group
    try:
        check_config(cfg)  # before importing Lightning, Ray and Flower's engine
    except ConfigError as err:
        _exit(err, 2)
    from fedlight.server import RoundFailed
    from fedlight.simulate import simulate

    try:
        simulate(cfg, HydraConfig.get().runtime.output_dir)
    except (ConfigError, DataNotFoundError) as err:
        _exit(err, 2)
    except RoundFailed as err:
        _exit(f"{err} (resume=RUN_DIR continues it)", 1)


def _exit(message: object, code: int) -> NoReturn:
    print(f"fedlight: error: {message}", file=sys.stderr)
    sys.exit(code)


def _configs_installed() -> bool:
    """``configs/`` is shipped as ``fedlight.configs`` by the install; a source tree
    that was never installed has no such package and Hydra's error would not say so."""
    import importlib.util

    return importlib.util.find_spec("fedlight.configs") is not None


if __name__ == "__main__":
    if not _configs_installed():
        print(
            "fedlight: error: the package fedlight.configs is not installed; "
            'run `pip install -e ".[dev]"` in the checkout first',
            file=sys.stderr,
        )
        sys.exit(2)
    main()
