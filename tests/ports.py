"""Free TCP ports for the processes the tests start (Flower, Ray)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    """The lowest port the kernel gives to outgoing connections."""
    ports = Path("/proc/sys/net/ipv4/ip_local_port_range")
    try:
        return int(ports.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port nobody listens on right now, never handed out twice here.

    Drawn below the kernel's ephemeral range: a port from ``bind(0)`` can be
    given to some outgoing connection (Ray, a SuperNode's own) before our
    server binds it, which once failed CI with "address already in use".
    """
    low = _ephemeral_low()
    candidates = list(range(max(1024, low - 12000), low))
    random.shuffle(candidates)
    for port in candidates:
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free TCP port below {low}")
