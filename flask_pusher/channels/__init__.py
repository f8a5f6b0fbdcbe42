"""A Python client for Pusher Channels: asyncio first, with a sync facade.

It speaks protocol 7 as pusher-js 8.6 does (its connection states, pings and
reconnect rules; public, private, presence, encrypted and cache channels;
channel authorization, user authentication, watchlist and client events),
against Pusher or any Pusher-compatible server. Needs the ``client`` extra
(``pip install flask-pusher[client]``: aiohttp and PyNaCl).
"""

from .auth import AuthOptions
from .auth import AuthRequest
from .channel import Channel
from .channel import EncryptedChannel
from .channel import Member
from .channel import Members
from .channel import PresenceChannel
from .channel import PrivateChannel
from .client import ChannelsClient
from .connection import Connection
from .errors import AuthError
from .errors import BadEventName
from .errors import ChannelsError
from .errors import ConnectionRefused
from .errors import ProtocolError
from .errors import PusherError
from .errors import QueueOverflow
from .errors import SubscriptionError
from .errors import TransportError
from .errors import UnsupportedFeature
from .events import EventStream
from .machine import ConnectionMachine
from .machine import StateChange
from .machine import Timeouts
from .protocol import Event
from .sync import History
from .sync import SyncChannel
from .sync import SyncChannelsClient

__all__ = [
    "AuthError",
    "AuthOptions",
    "AuthRequest",
    "BadEventName",
    "Channel",
    "ChannelsClient",
    "ChannelsError",
    "Connection",
    "ConnectionMachine",
    "ConnectionRefused",
    "EncryptedChannel",
    "Event",
    "EventStream",
    "History",
    "Member",
    "Members",
    "PresenceChannel",
    "PrivateChannel",
    "ProtocolError",
    "PusherError",
    "QueueOverflow",
    "StateChange",
    "SubscriptionError",
    "SyncChannel",
    "SyncChannelsClient",
    "Timeouts",
    "TransportError",
    "UnsupportedFeature",
]
