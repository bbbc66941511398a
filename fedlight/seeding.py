"""Seeds derived from the run seed, so every random stream is reproducible."""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed for the stream named by ``parts`` (e.g. "shuffle", client, round).

    Hashing keeps streams independent (seed 0 client 1 round 2 never collides with
    seed 0 client 12) and stable across processes, unlike Python's ``hash``.
    """
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1
