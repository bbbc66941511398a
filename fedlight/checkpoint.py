"""Server state saved after every round, so a killed run can resume.

Everything random in a round derives from (seed, round) (see
:mod:`fedlight.seeding`), so the global weights, the finished rounds' records and
the defence's own state are all a resume needs to reproduce an uninterrupted run,
except for an attack whose clients remember across rounds (``Attack.remembers``:
A3FL, IBA, Neurotoxin): that memory lives with the client and restarts empty,
which the resume warns about and ``results.json``'s ``resumed_after`` records.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

FILENAME = "checkpoint.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically: a kill mid-write leaves the previous file."""
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The saved state (tensors, numbers, strings, lists and dicts only)."""
    return torch.load(path, weights_only=True)
