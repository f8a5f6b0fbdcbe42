"""Who a request comes from, as far as the server can prove it.

The console shows user ids and presence ``user_info`` and sends events: it
must not trust what anyone on the way can write. A request provably comes from
this machine only when all three hold (:func:`is_local`):

-   its TCP peer is a loopback address;
-   its ``Host`` header names this machine (``127.0.0.1``, ``[::1]``,
    ``localhost``, or a host the operator allowed) with the port the connection
    arrived on, so that a web page whose DNS name was rebound to 127.0.0.1
    (https://en.wikipedia.org/wiki/DNS_rebinding) is told apart: the browser
    sends that page's own name;
-   it carries no proxy header of any kind (``Forwarded``, ``X-Forwarded-*``,
    ``X-Real-IP``, ``Via``, ...): a proxy on this machine may pass on a request
    from anywhere.

A proxy in front (nginx, a TCP or TLS pass-through) never gives a request all
three. :class:`TrustedProxies` says what the forwarded headers of a trusted
proxy tell: the client's address (the last ``X-Forwarded-For`` entry, the one
the proxy added) and whether it came over TLS (``X-Forwarded-Proto``), as
werkzeug's ``ProxyFix`` reads them for one proxy
(https://werkzeug.palletsprojects.com/en/stable/middleware/proxy_fix/).
"""

from __future__ import annotations

import collections
import ipaddress
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Protocol
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the command line imports this module without aiohttp
    import asyncio

    from multidict import MultiMapping

#: Headers a proxy adds to say where a request came from, any of which makes a
#: request count as proxied (lower case). Every ``X-Forwarded-*`` counts too.
PROXY_HEADERS = frozenset(
    {
        "forwarded",
        "via",
        "x-real-ip",
        "x-client-ip",
        "client-ip",
        "true-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "x-cluster-client-ip",
        "x-original-forwarded-for",
        "x-proxyuser-ip",
    }
)
#: ``Host`` names of this machine, besides the ones an operator allows.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "[::1]", "localhost"})

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Request(Protocol):
    """What the checks read of a request: aiohttp's ``web.BaseRequest``, or
    the :class:`Peer` of a handshake the front door read."""

    @property
    def transport(self) -> asyncio.Transport | None: ...

    @property
    def headers(self) -> MultiMapping[str]: ...

    @property
    def secure(self) -> bool: ...


class Peer:
    """A request read by the :mod:`~flask_pusher.server.frontdoor`: its
    connection's ``transport`` and its ``headers`` (aiohttp's
    ``CIMultiDictProxy``). Never TLS: the front door listens in plain HTTP."""

    __slots__ = ("headers", "transport")

    secure = False

    def __init__(self, transport: asyncio.Transport, headers: MultiMapping[str]) -> None:
        self.transport = transport
        self.headers = headers


def proxied(headers: Mapping[str, str]) -> bool:
    """Whether ``headers`` hold any header a proxy adds (:data:`PROXY_HEADERS`,
    ``X-Forwarded-*``)."""
    for name in headers:
        lower = name.lower()
        if lower in PROXY_HEADERS or lower.startswith("x-forwarded-"):
            return True
    return False


def peer_address(request: Request) -> Address | None:
    """The TCP peer's IP address, or ``None`` (a Unix socket, a closed transport)."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    if not isinstance(peer, tuple) or not peer:
        return None
    try:
        return ipaddress.ip_address(str(peer[0]).partition("%")[0])
    except ValueError:
        return None


def local_port(request: Request) -> int | None:
    """The port the connection arrived on, or ``None``."""
    transport = request.transport
    local = transport.get_extra_info("sockname") if transport is not None else None
    if isinstance(local, tuple) and len(local) >= 2 and isinstance(local[1], int):
        return local[1]
    return None


def split_host(host: str) -> tuple[str, int | None]:
    """A ``Host`` header's name (lower case; an IPv6 address keeps its brackets)
    and port (``None`` when absent; -1 when not a port)."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host.partition("]")
        name += "]"
        port_text = rest[1:] if rest.startswith(":") else None
        if rest and port_text is None:
            return host, -1
    else:
        name, colon, port_text_ = host.rpartition(":")
        if not colon:
            return host, None
        port_text = port_text_
    if port_text is None:
        return name, None
    if not port_text.isdigit() or not port_text.isascii() or len(port_text) > 5:
        return name, -1
    return name, int(port_text)


def is_local(request: Request, allow_hosts: Iterable[str] = ()) -> bool:
    """Whether ``request`` provably comes from this machine: a loopback peer,
    a ``Host`` of :data:`LOOPBACK_HOSTS` or ``allow_hosts`` with the port the
    connection arrived on (80 when the header has none), and no proxy header."""
    peer = peer_address(request)
    if peer is None or not peer.is_loopback or proxied(request.headers):
        return False
    name, port = split_host(request.headers.get("Host", ""))
    if name not in LOOPBACK_HOSTS and name not in allow_hosts:
        return False
    return (port if port is not None else 80) == local_port(request)


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """IP addresses or networks (``10.0.0.0/8``) as networks.

    :raises ValueError: for a value that is neither, naming it.
    """
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"{value!r} is not an IP address or network (e.g. 127.0.0.1 or 10.0.0.0/8)"
            ) from None
    return tuple(networks)


class TrustedProxies:
    """The proxies whose forwarded headers are believed.

    :param networks: their addresses or networks (``--trusted-proxy``). Empty
        (the default): no forwarded header is believed.
    :raises ValueError: for a value that is not an IP address or network.
    """

    def __init__(self, networks: Iterable[str] = ()) -> None:
        self.networks = parse_networks(networks)

    def trusts(self, request: Request) -> bool:
        """Whether ``request``'s TCP peer is a trusted proxy."""
        peer = peer_address(request)
        return peer is not None and any(peer in network for network in self.networks)

    def client(self, request: Request) -> str:
        """The client's address: the last ``X-Forwarded-For`` entry (the one the
        proxy added) from a trusted proxy, else the TCP peer's."""
        if self.trusts(request):
            forwarded = request.headers.getall("X-Forwarded-For", [])
            last = forwarded[-1].rsplit(",", 1)[-1].strip() if forwarded else ""
            if last:
                return last[:64]
        peer = peer_address(request)
        return str(peer) if peer is not None else "?"

    def secure(self, request: Request) -> bool:
        """Whether ``request`` came over TLS: to this server, or to a trusted
        proxy that says so in its (last) ``X-Forwarded-Proto``."""
        if request.secure:
            return True
        if not self.trusts(request):
            return False
        proto = request.headers.getall("X-Forwarded-Proto", [])
        return bool(proto) and proto[-1].rsplit(",", 1)[-1].strip().lower() == "https"


class RateLimit:
    """At most ``limit`` events per ``period`` seconds per key, and ``total``
    for all keys together (so that many addresses gain nothing): a sliding
    window of timestamps, for at most ``keys`` keys (the oldest is forgotten).

    :param limit: events per key and period.
    :param period: seconds.
    :param total: events per period for all keys.
    :param keys: keys remembered at most.
    """

    def __init__(self, limit: int, period: float, total: int, keys: int = 10_000) -> None:
        self.limit = limit
        self.period = period
        self.total = total
        self.keys = keys
        self._by_key: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )
        self._all: collections.deque[float] = collections.deque()

    def retry_after(self, key: str, now: float) -> float:
        """Seconds before ``key`` may try again; 0.0: allowed now, and counted."""
        start = now - self.period
        times = self._by_key.get(key)
        if times is None:
            times = self._by_key[key] = collections.deque()
            if len(self._by_key) > self.keys:
                self._by_key.popitem(last=False)
        else:
            self._by_key.move_to_end(key)
        for window in (times, self._all):
            while window and window[0] <= start:
                window.popleft()
        if len(times) >= self.limit:
            return times[0] - start
        if len(self._all) >= self.total:
            return self._all[0] - start
        times.append(now)
        self._all.append(now)
        return 0.0
