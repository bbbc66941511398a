"""Server state saved after every round, so a killed run can resume.

Everything random in a round derives from (seed, round) (see
:mod:`fedlight.seeding`), so the global weights, the finished rounds' records and
the defence's own state are all a resume needs to reproduce an uninterrupted run,
but for an attack whose clients remember across rounds (``Attack.remembers``:
A3FL, IBA, Neurotoxin). That memory lives with the client (Flower's per-node
state), which a new simulation starts empty, so in a simulation every attacker
also writes it after each of its fits to ``attack_memory/`` in the run
directory, and an attacker's first fit after a resume reads back the newest one
the checkpoint covers. Two files per attacker are kept: a run killed after an
attacker's fit but before that round's checkpoint still has the one before.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

FILENAME = "checkpoint.pt"
MEMORY_DIR = "attack_memory"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically: a kill mid-write leaves the previous file."""
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The saved state (tensors, numbers, strings, lists and dicts only)."""
    return torch.load(path, weights_only=True)


def memory_path(folder: Path, client_id: int, server_round: int) -> Path:
    """Where client ``client_id`` keeps its memory after ``server_round``."""
    return folder / f"client-{client_id}-round-{server_round:05d}.pt"


def memory_rounds(folder: Path, client_id: int) -> list[int]:
    """The rounds after which client ``client_id`` wrote its memory, sorted."""
    prefix = f"client-{client_id}-round-"
    if not folder.is_dir():
        return []
    return sorted(
        int(p.stem[len(prefix) :])
        for p in folder.glob(f"{prefix}*.pt")
        if p.stem[len(prefix) :].isdigit()
    )


def save_memory(
    folder: Path, client_id: int, server_round: int, memory: dict[str, torch.Tensor]
) -> None:
    """Write the memory after ``server_round``; keep it and the one before it.

    Files of later rounds are a killed run's, which the resume replays: removed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(memory_path(folder, client_id, server_round), memory)
    rounds = memory_rounds(folder, client_id)
    previous = max((r for r in rounds if r < server_round), default=0)
    for r in rounds:
        if r > server_round or r < previous:
            memory_path(folder, client_id, r).unlink(missing_ok=True)


def load_memory(
    folder: Path, client_id: int, resumed_after: int
) -> dict[str, torch.Tensor]:
    """The newest memory written after a round <= ``resumed_after`` (the
    checkpoint's round); empty when there is none."""
    done = [r for r in memory_rounds(folder, client_id) if r <= resumed_after]
    if not done:
        return {}
    return torch.load(memory_path(folder, client_id, done[-1]), weights_only=True)
