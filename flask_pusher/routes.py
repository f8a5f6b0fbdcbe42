"""Channel routes: ``@pusher.channel("private-orders.{order_id:int}")``.

A channel pattern is a channel name with ``{name}`` or ``{name:converter}``
placeholders. Each pattern becomes a :class:`werkzeug.routing.Rule` over the
channel name, so the placeholders use Werkzeug's URL converters (``int``,
``float``, ``uuid``, ``any(...)``, ``path``, ``string(length=2)``...) and their
arguments. Channel names never hold ``/``, so one change is made: the default
``string`` converter stops at ``.``, as a Laravel ``{param}`` does; ``path``
matches across dots.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any
from typing import TypeVar

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map
from werkzeug.routing import MapAdapter
from werkzeug.routing import Rule
from werkzeug.routing.converters import UnicodeConverter

from . import names

#: ``{name}`` or ``{name:converter}``, the converter possibly with arguments.
PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")
PARAMETER_RE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?::\s*(\S.*?))?\s*")
#: What may stand between placeholders: the characters of a channel name.
LITERAL_RE = re.compile(r"[-a-zA-Z0-9_=@,.;]*")

ChannelCallback = Callable[..., Any]
F = TypeVar("F", bound=ChannelCallback)


class SegmentConverter(UnicodeConverter):
    """Werkzeug's ``string`` converter, stopping at ``.`` as well as ``/``.

    Takes the same ``minlength``, ``maxlength`` and ``length`` arguments.
    """

    def __init__(
        self,
        map: Map,
        minlength: int = 1,
        maxlength: int | None = None,
        length: int | None = None,
    ) -> None:
        super().__init__(map, minlength, maxlength, length)
        self.regex = self.regex.replace("[^/]", "[^/.]", 1)


CONVERTERS = {"default": SegmentConverter, "string": SegmentConverter}


def to_rule(pattern: str) -> str:
    """Translate a channel pattern into a Werkzeug rule string.

    ``"private-orders.{order_id:int}"`` becomes ``"/private-orders.<int:order_id>"``.

    :raises ValueError: an unbalanced brace, a bad placeholder, a character that
        channel names cannot hold, or a pattern that is not for a private,
        encrypted or presence channel.
    """
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"Channel pattern {pattern!r}: it must be a non-empty string.")
    parts: list[str] = []
    seen: set[str] = set()
    position = 0
    for match in PLACEHOLDER_RE.finditer(pattern):
        parts.append(_literal(pattern, pattern[position : match.start()]))
        parameter = PARAMETER_RE.fullmatch(match.group(1))
        if parameter is None:
            raise ValueError(
                f"Channel pattern {pattern!r}: {match.group(0)!r} is not a placeholder;"
                " write {name} or {name:converter}, such as {order_id:int}."
            )
        name, converter = parameter.groups()
        if name in seen:
            raise ValueError(f"Channel pattern {pattern!r} names the parameter {name!r} twice.")
        seen.add(name)
        parts.append(f"<{converter}:{name}>" if converter else f"<{name}>")
        position = match.end()
    parts.append(_literal(pattern, pattern[position:]))
    if not _prefix(pattern).startswith(names.AUTHORIZED_PREFIXES):
        raise ValueError(
            f"Channel pattern {pattern!r} must start with 'private-' or 'presence-'"
            " (before any placeholder): only those channels are authorized."
        )
    return "/" + "".join(parts)


def _literal(pattern: str, text: str) -> str:
    if not LITERAL_RE.fullmatch(text):
        raise ValueError(
            f"Channel pattern {pattern!r}: {text!r} holds a character that channel names"
            f" cannot hold (they use {names.NAME_CHARS}), or an unbalanced brace."
        )
    return text


@dataclasses.dataclass(frozen=True)
class ChannelRoute:
    """One registered pattern and its callback."""

    pattern: str
    callback: ChannelCallback
    prefix: str
    adapter: MapAdapter = dataclasses.field(repr=False)

    def match(self, channel: str) -> dict[str, Any] | None:
        """The converted parameters if ``channel`` matches, else ``None``."""
        if not channel.startswith(self.prefix):
            return None
        try:
            _, values = self.adapter.match("/" + channel)
        except HTTPException:  # NotFound, or a redirect a channel name never needs
            return None
        return dict(values)


class ChannelRoutes:
    """The channel routes of one extension, in registration order."""

    def __init__(self) -> None:
        self._routes: list[ChannelRoute] = []

    def __len__(self) -> int:
        return len(self._routes)

    def __iter__(self) -> Iterator[ChannelRoute]:
        return iter(self._routes)

    def route(self, pattern: str) -> Callable[[F], F]:
        """A decorator that registers its function for ``pattern``; the pattern is
        checked at once.

        :raises ValueError: for an invalid pattern or an unknown converter.
        """
        adapter = compile_pattern(pattern)

        def register(callback: F) -> F:
            self._routes.append(ChannelRoute(pattern, callback, _prefix(pattern), adapter))
            return callback

        return register

    def add(self, pattern: str, callback: ChannelCallback) -> None:
        """Register ``callback`` for the channels that match ``pattern``.

        :raises ValueError: for an invalid pattern or an unknown converter.
        """
        self.route(pattern)(callback)

    def match(self, channel: str) -> tuple[ChannelCallback, dict[str, Any]] | None:
        """The first route that matches ``channel``, with its parameters, or ``None``."""
        for route in self._routes:
            values = route.match(channel)
            if values is not None:
                return route.callback, values
        return None


def _prefix(pattern: str) -> str:
    return pattern.split("{", 1)[0]


def compile_pattern(pattern: str) -> MapAdapter:
    """A Werkzeug map adapter that matches ``"/" + channel_name`` against ``pattern``.

    :raises ValueError: for an invalid pattern or an unknown converter.
    """
    rule = to_rule(pattern)
    try:
        route_map = Map(
            [Rule(rule, endpoint=pattern)],
            converters=CONVERTERS,
            strict_slashes=False,
            merge_slashes=False,
        )
        adapter = route_map.bind("channels")
        adapter.map.update()  # compile now, so a bad converter fails here
    except (LookupError, ValueError, TypeError, SyntaxError) as e:
        raise ValueError(
            f"Channel pattern {pattern!r} is not valid: {e}. Placeholders use"
            " Werkzeug's converters: {name}, {name:int}, {name:uuid},"
            " {name:any(a, b)}, {name:path}..."
        ) from None
    return adapter
