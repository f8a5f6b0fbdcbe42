"""A local Pusher Channels server (protocol 7, HTTP API, webhooks) on aiohttp.

It knows nothing of Flask. Install it with the ``flask-pusher[server]`` extra.
"""

from .config import AppConfig
from .config import WebhookConfig
from .serve import LocalServer
from .serve import run

__all__ = ["AppConfig", "LocalServer", "WebhookConfig", "run"]
