"""Weights & Biases tracking: one run per experiment, logged from the driver.

:class:`Tracker` owns the run; :mod:`fedlight.tracking.rows` says what is
logged; ``python -m fedlight.tracking.dump RUN_DIR`` reads a run back from its
``.wandb`` file without W&B's servers.
"""

from fedlight.tracking.group import multirun_group, sweep_group
from fedlight.tracking.mode import MODES, resolve_mode
from fedlight.tracking.rows import round_row
from fedlight.tracking.tracker import Tracker

__all__ = [
    "MODES",
    "Tracker",
    "multirun_group",
    "resolve_mode",
    "round_row",
    "sweep_group",
]
