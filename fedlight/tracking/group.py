"""The W&B group of a Hydra multirun: one name that every job of it shares."""

from __future__ import annotations

import os
from pathlib import Path

# The group of the multirun running in this process (Hydra's basic launcher runs
# every job of a multirun in the process that started it).
_groups: dict[int, str] = {}


def sweep_group(sweep_dir: str | Path) -> str:
    """Name a multirun after its sweep folder's last two parts: Hydra's default
    ``multirun/<name>/<date_time>`` gives ``<name>-<date_time>``."""
    parts = [p for p in Path(sweep_dir).parts[-2:] if p not in ("/", "")]
    return "-".join(parts) or "multirun"


def multirun_group(sweep_dir: str | Path) -> str:
    """The group for a job of the current multirun: its first job's
    :func:`sweep_group`.

    The first job names it because the sweep folder can differ between jobs
    (``multirun/${name}/...`` when the sweep changes ``name``, as
    ``+experiment=glob(*)`` does), while the group must not.
    """
    return _groups.setdefault(os.getpid(), sweep_group(sweep_dir))
