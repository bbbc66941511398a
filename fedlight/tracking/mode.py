"""Which W&B mode a run uses, decided before ``wandb.init``.

``wandb.mode`` in the config wins; else ``WANDB_MODE``; else online only where
an API key is configured (``WANDB_API_KEY`` or a netrc entry for the W&B host),
so a machine without credentials never blocks on a login prompt.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

MODES = ("online", "offline", "disabled")

DEFAULT_HOST = "https://api.wandb.ai"


def has_api_key(environ: dict[str, str] | None = None) -> bool:
    """True where W&B would find credentials for its host without prompting."""
    env = os.environ if environ is None else environ
    if env.get("WANDB_API_KEY"):
        return True
    host = urlparse(env.get("WANDB_BASE_URL") or DEFAULT_HOST).hostname or ""
    path = Path(env.get("NETRC") or Path.home() / ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: str | None, environ: dict[str, str] | None = None) -> str:
    """The W&B mode to use: the configured one, else ``WANDB_MODE``, else online
    with an API key and offline without."""
    env = os.environ if environ is None else environ
    if mode is not None:
        return mode
    if env.get("WANDB_MODE") in MODES:
        return env["WANDB_MODE"]
    if env.get("WANDB_MODE") == "dryrun":  # wandb's old name for offline
        return "offline"
    return "online" if has_api_key(env) else "offline"
