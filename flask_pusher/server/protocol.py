"""Pusher WebSocket frames: client frames in, server frames out, as Pusher's
protocol page describes them
(https://pusher.com/docs/channels/library_auth_reference/pusher-websockets-protocol/)
and pusher-js 8 reads them (``src/core/connection/protocol/protocol.ts``).

Parsing is lenient and never raises: a frame that cannot be understood comes
back as a :class:`FrameError` whose message is sent to the client in a
``pusher:error`` frame. Encoders return the JSON text of one frame; a
broadcast is encoded once and the same text is written to every subscriber.
Server frames carry ``data`` as a JSON *string*, except ``pusher:error``,
whose ``data`` is an object because pysher 1.0.8 reads it so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..names import NAME_RE

_fast_loads: Callable[[str | bytes], Any] | None
try:  # msgspec's C decoder: about 5x faster than json.loads on a client frame
    from msgspec import MsgspecError as _MsgspecError
    from msgspec.json import Decoder as _Decoder
except ImportError:  # no wheel for this platform: the standard library's
    _fast_loads = None
    _REFUSED: tuple[type[Exception], ...] = ()
else:
    _fast_loads = _Decoder().decode
    # (msgspec 0.19.0's DecodeError is no ValueError)
    _REFUSED = (_MsgspecError, ValueError, RecursionError, TypeError)

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

#: The deepest nesting of arrays and objects accepted in any JSON a client
#: sends (frames, ``channel_data``, ``user_data``, HTTP API bodies): a deeper
#: value is refused where it is parsed, so that nothing nested deeper than
#: Python's encoder can write back out is ever stored.
MAX_JSON_DEPTH = 32


#: The largest presence member ``user_info``, in bytes of compact UTF-8 JSON:
#: soketi's ``presence.maxMemberSizeInKb`` default (Pusher documents 1 KB for
#: the user object, https://pusher.com/docs/channels/using_channels/presence-channels/).
#: Every member's info goes to every subscriber of the channel.
MAX_MEMBER_BYTES = 2048


def member_too_large(user_info: Any) -> str | None:
    """Why ``user_info`` cannot be a presence member's, or ``None``."""
    if user_info is None:
        return None
    size = len(_dumps(user_info).encode("utf-8", "surrogatepass"))
    if size <= MAX_MEMBER_BYTES:
        return None
    return f"user_info has {size} bytes, over the {MAX_MEMBER_BYTES} a presence member may have"


class DepthError(ValueError):
    """JSON nested deeper than :data:`MAX_JSON_DEPTH`."""


def _check_depth(value: Any) -> None:
    """:raises DepthError: if ``value`` nests arrays and objects deeper than
    :data:`MAX_JSON_DEPTH` (checked without recursion)."""
    if not isinstance(value, (dict, list)):
        return
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise DepthError(f"JSON nested more than {MAX_JSON_DEPTH} deep")
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))


@dataclass(frozen=True, slots=True)
class ClientFrame:
    """A frame received from a client.

    ``data`` is decoded for ``pusher:`` events: a JSON string holding an
    object becomes that object. For client events it is kept
    as sent, to be relayed unchanged.
    """

    event: str
    data: Any
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class FrameError:
    """A frame that could not be parsed; ``message`` says why."""

    message: str


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


#: A JSON text shorter than this cannot nest deeper than :data:`MAX_JSON_DEPTH`.
_SHALLOW = 2 * MAX_JSON_DEPTH + 2


def _std_loads(text: str | bytes) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise DepthError(f"JSON nested more than {MAX_JSON_DEPTH} deep") from None


def loads(text: str | bytes) -> Any:
    """Strict JSON: no NaN or Infinity, which Python's decoder accepts (and
    1e999 overflows to) but a JSON parser on the other side (pusher-js's
    ``JSON.parse``) refuses.

    Parsed by msgspec's ``msgspec.json.Decoder`` (https://jcristharif.com/msgspec/)
    when it is installed: on success it returns what :func:`json.loads` would
    (duplicate keys: the last wins; integers of any size up to Python's
    4,300 digits; floats correctly rounded), and whatever it refuses (lone
    surrogates, NaN, numbers out of range, invalid JSON) is parsed again by
    :func:`json.loads`, so that every accepted value and every error stays
    the standard library's.

    :raises DepthError: (a :exc:`ValueError`) for JSON nested deeper than
        :data:`MAX_JSON_DEPTH`.
    :raises ValueError: for invalid JSON.
    :raises TypeError: if ``text`` is not a string.
    """
    if _fast_loads is None:
        value = _std_loads(text)
    else:
        try:
            value = _fast_loads(text)
        except _REFUSED:
            value = _std_loads(text)
    if len(text) >= _SHALLOW:
        _check_depth(value)
    return value


def parse(text: str | bytes) -> ClientFrame | FrameError:
    """Parse one client frame. Never raises."""
    try:
        message = loads(text)
    except DepthError as exc:
        return FrameError(f"Invalid frame: {exc}")
    except (ValueError, UnicodeDecodeError):
        return FrameError("Invalid JSON: a frame must be a JSON object")
    if not isinstance(message, dict):
        return FrameError("Invalid frame: a frame must be a JSON object")
    event = message.get("event")
    if not isinstance(event, str) or not event:
        return FrameError("Invalid frame: 'event' must be a non-empty string")
    channel = message.get("channel")
    if channel is not None and not isinstance(channel, str):
        return FrameError("Invalid frame: 'channel' must be a string")
    data = message.get("data")
    if event.startswith("pusher:") and isinstance(data, str) and data[:1] == "{":
        try:
            decoded = loads(data)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            data = decoded
    return ClientFrame(event=event, data=data, channel=channel)


def encode(
    event: str,
    data: Any = None,
    channel: str | None = None,
    user_id: str | None = None,
) -> str:
    """Encode a server frame; ``data`` is placed as given (str or object)."""
    frame: dict[str, Any] = {"event": event}
    if channel is not None:
        frame["channel"] = channel
    if data is not None:
        frame["data"] = data
    if user_id is not None:
        frame["user_id"] = user_id
    return _dumps(frame)


def connection_established(socket_id: str, activity_timeout: int) -> str:
    """``pusher:connection_established`` ; ``activity_timeout`` in seconds.

    The first frame of every connection, written straight from a template
    when ``socket_id`` is the server's own ``digits.digits`` (nothing in it
    to escape); the JSON encoder writes any other.
    """
    if _SOCKET_ID_CHARS.issuperset(socket_id) and type(activity_timeout) is int:
        return _ESTABLISHED % (socket_id, activity_timeout)
    data = _dumps({"socket_id": socket_id, "activity_timeout": activity_timeout})
    return encode("pusher:connection_established", data)


_SOCKET_ID_CHARS = frozenset("0123456789.")
_ESTABLISHED = (
    '{"event":"pusher:connection_established",'
    '"data":"{\\"socket_id\\":\\"%s\\",\\"activity_timeout\\":%d}"}'
)


def error(message: str, code: int | None = None) -> str:
    """``pusher:error`` with object data ``{message, code}`` (the protocol
    page's "Error codes")."""
    return encode("pusher:error", {"message": message, "code": code})


PONG = encode("pusher:pong", "{}")
PING = encode("pusher:ping", "{}")


def subscription_succeeded(channel: str, data: Mapping[str, Any] | None = None) -> str:
    """``pusher_internal:subscription_succeeded``; for a channel without
    presence data and a valid name (nothing in it to escape), from a template."""
    if not data and NAME_RE.fullmatch(channel):
        return _SUCCEEDED % channel
    return encode("pusher_internal:subscription_succeeded", _dumps(data or {}), channel)


_SUCCEEDED = '{"event":"pusher_internal:subscription_succeeded","channel":"%s","data":"{}"}'


def presence_data(members: Mapping[str, Any]) -> dict[str, Any]:
    """The presence payload of ``subscription_succeeded``: ids, hash, count."""
    ids = list(members)
    return {"presence": {"ids": ids, "hash": dict(members), "count": len(ids)}}


def subscription_error(channel: str, message: str, status: int, type_: str = "AuthError") -> str:
    """soketi-style ``pusher:subscription_error`` a pusher-js listener sees."""
    data = {"type": type_, "error": message, "status": status}
    return encode("pusher:subscription_error", data, channel)


def member_added(channel: str, user_id: str, user_info: Any) -> str:
    """``pusher_internal:member_added``."""
    data = _dumps({"user_id": user_id, "user_info": user_info})
    return encode("pusher_internal:member_added", data, channel)


def member_removed(channel: str, user_id: str) -> str:
    """``pusher_internal:member_removed``."""
    data = _dumps({"user_id": user_id})
    return encode("pusher_internal:member_removed", data, channel)


def subscription_count(channel: str, count: int) -> str:
    """``pusher_internal:subscription_count``."""
    data = _dumps({"subscription_count": count})
    return encode("pusher_internal:subscription_count", data, channel)


def cache_miss(channel: str) -> str:
    """``pusher:cache_miss``."""
    return encode("pusher:cache_miss", None, channel)


def signin_success(user_data: str) -> str:
    """``pusher:signin_success`` echoing the signed ``user_data``
    (pusher-js ``src/core/user.ts``)."""
    return encode("pusher:signin_success", _dumps({"user_data": user_data}))


def watchlist_events(events: Iterable[tuple[str, list[str]]]) -> str:
    """``pusher_internal:watchlist_events`` as pusher-js ``src/core/watchlist.ts``
    reads them."""
    data = {"events": [{"name": n, "user_ids": ids} for n, ids in events]}
    return encode("pusher_internal:watchlist_events", _dumps(data))


def channel_event(event: str, channel: str, data: Any, user_id: str | None = None) -> str:
    """A channel event, from the HTTP API or a client."""
    return encode(event, data, channel, user_id)
