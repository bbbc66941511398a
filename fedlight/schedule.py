"""Attack schedules (``attack.rounds``): ``start:stop:every`` in server rounds.

Torch-free, so that the report reads a run's schedule without loading a model
stack; :mod:`fedlight.attacks.base` uses the same functions.
"""

from __future__ import annotations

import re

_ROUNDS = re.compile(r"\s*(\d*)\s*(?::\s*(\d*)\s*(?::\s*(\d*)\s*)?)?")


def parse_rounds(text: str) -> tuple[int, int | None, int]:
    """``start:stop:every`` (1-based, stop inclusive) as numbers; a ValueError
    for anything else. ``"1:"`` every round, ``"5:"`` from round 5 (a late
    joiner), ``"1:10"`` rounds 1-10, ``"1::3"`` one round in three, ``"4"``
    round 4 only."""
    match = _ROUNDS.fullmatch(str(text))
    if not match or not any(match.groups()):
        raise ValueError(text)
    start_s, stop_s, every_s = match.groups()
    start = int(start_s) if start_s else 1
    if ":" not in str(text):
        stop, every = start, 1
    else:
        stop = int(stop_s) if stop_s else None
        every = int(every_s) if every_s else 1
    if start < 1 or every < 1 or (stop is not None and stop < start):
        raise ValueError(text)
    return start, stop, every


def scheduled(text: str, server_round: int) -> bool:
    """Whether the schedule ``text`` (``attack.rounds``) attacks in ``server_round``."""
    start, stop, every = parse_rounds(text)
    return (
        server_round >= start
        and (stop is None or server_round <= stop)
        and (server_round - start) % every == 0
    )


def last_attacked_round(text: str) -> int | None:
    """The last round the schedule ``text`` attacks in; None: to the end."""
    start, stop, every = parse_rounds(text)
    if stop is None:
        return None
    return start + (stop - start) // every * every
