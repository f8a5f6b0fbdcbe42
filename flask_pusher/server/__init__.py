"""A Pusher Channels server (protocol 7, HTTP API, webhooks) on aiohttp.

It knows nothing of Flask. Install it with the ``flask-pusher[server]`` extra.
Its names are imported on first use, so that importing the package (for its
command line, say) does not import aiohttp.
"""

from __future__ import annotations

import importlib
from typing import Any
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import AppConfig
    from .config import WebhookConfig
    from .serve import LocalServer
    from .serve import run

__all__ = ["AppConfig", "LocalServer", "WebhookConfig", "run"]

_MODULES = {
    "AppConfig": ".config",
    "WebhookConfig": ".config",
    "LocalServer": ".serve",
    "run": ".serve",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
