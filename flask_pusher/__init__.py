"""Pusher Channels for Flask: the client, channel authorization, user authentication,
webhooks, and a local Pusher-compatible server."""

from .broadcasting import BroadcastEvent
from .errors import ChannelAuthorizationDenied
from .errors import ConfigurationError
from .errors import InvalidRequest
from .errors import InvalidWebhook
from .errors import JSONMethodNotAllowed
from .errors import JSONNotFound
from .errors import PusherHTTPError
from .errors import UserAuthenticationDenied
from .errors import WebhookHandlerError
from .errors import WebhookTooLarge
from .errors import WebhookVerificationError
from .extension import Pusher
from .settings import PusherSettings
from .webhooks import Webhooks

__all__ = [
    "BroadcastEvent",
    "ChannelAuthorizationDenied",
    "ConfigurationError",
    "InvalidRequest",
    "InvalidWebhook",
    "JSONMethodNotAllowed",
    "JSONNotFound",
    "Pusher",
    "PusherHTTPError",
    "PusherSettings",
    "UserAuthenticationDenied",
    "WebhookHandlerError",
    "WebhookTooLarge",
    "WebhookVerificationError",
    "Webhooks",
]
