"""The frames :class:`~flask_pusher.server.wsocket.PusherSocket` reads itself
(whole text messages, pings, pongs) and the hand-over to wsproto for every
other frame, over real sockets (issue 19 item 1; RFC 6455 §5.2 framing, §5.5.2-3
ping and pong, §7.4.1 close codes; reference §5.4 heartbeat, §5.12 close codes)."""

from __future__ import annotations

import json
import socket
import struct
import urllib.request

import pytest

from flask_pusher.server import LocalServer
from flask_pusher.server import protocol
from flask_pusher.server.config import AppConfig
from flask_pusher.server.core import Core

from .helpers import pusher_client
from .helpers import user_auth
from .rawsock import frame
from .rawsock import mask
from .rawsock import Raw

PING = json.dumps({"event": "pusher:ping", "data": {}}).encode()


def received(server: LocalServer) -> float:
    """``pusher_ws_messages_received_total``: messages that reached the core."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("pusher_ws_messages_received_total")
    )


def connected(server: LocalServer) -> Raw:
    ws = Raw(server.port)
    ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    assert ws.read_event()["event"] == "pusher:connection_established"
    return ws


@pytest.mark.parametrize("size", [60, 300, 70_000], ids=["7-bit", "16-bit", "64-bit"])
def test_a_frame_sent_in_small_pieces_is_read_once_whole(server: LocalServer, size: int) -> None:
    """Each length form, split inside its header and its payload: one pong, then
    the connection still reads whole frames."""
    message = PING[:-1] + b',"pad":"' + b"x" * (size - len(PING) - 9) + b'"}'
    assert len(message) == size
    data = frame(0x1, message)
    with connected(server) as ws:
        for cut in (1, 3, 9, 13, len(data) // 2):
            ws.sock.sendall(data[:cut])
            data = data[cut:]
        ws.sock.sendall(data)
        assert ws.read_event()["event"] == "pusher:pong"
        ws.sock.sendall(frame(0x1, PING))
        assert ws.read_event()["event"] == "pusher:pong"


def test_a_connection_that_sends_only_whole_frames_never_makes_wsproto(
    server: LocalServer,
) -> None:
    """Memory per idle connection (issue 19): wsproto's parser (about 1.7 KB) is
    made only for a connection that sends a frame the fast path leaves to it."""
    assert server._server is not None
    sockets = server._server.writer.sockets
    with connected(server) as plain, connected(server) as fragmented:
        plain.send_json({"event": "pusher:subscribe", "data": {"channel": "news"}})
        plain.sock.sendall(frame(0x1, PING) + frame(0x9, b"") + frame(0xA, b""))
        fragmented.sock.sendall(frame(0x1, PING[:5], fin=False) + frame(0x0, PING[5:]))
        # The Pong is written at once, the text frames by the writer.
        got = [plain.read() for _ in range(3)]
        assert sorted(opcode for opcode, _ in got) == [0x1, 0x1, 0xA]
        assert b"subscription_succeeded" in b"".join(payload for _, payload in got)
        assert fragmented.read_event()["event"] == "pusher:pong"
        slow = {sock.key.socket_id: sock._slow is not None for sock in sockets.values()}
        assert sorted(slow.values()) == [False, True]


def test_frames_in_one_read_and_one_across_two(server: LocalServer) -> None:
    with connected(server) as ws:
        data = frame(0x1, PING) * 5
        ws.sock.sendall(data[:-10])
        ws.sock.sendall(data[-10:])
        assert [ws.read_event()["event"] for _ in range(5)] == ["pusher:pong"] * 5


def test_a_websocket_ping_gets_its_payload_back_and_a_pong_is_ignored(
    server: LocalServer,
) -> None:
    """RFC 6455 §5.5.2-3: a Pong with the Ping's payload; an unsolicited Pong
    gets no answer."""
    with connected(server) as ws:
        ws.sock.sendall(frame(0x9, b"hello") + frame(0xA, b"ignored") + frame(0x9, b""))
        assert ws.read() == (0xA, b"hello")
        assert ws.read() == (0xA, b"")
        ws.sock.sendall(frame(0x1, PING))
        assert ws.read_event()["event"] == "pusher:pong"


def test_after_a_fragmented_message_frames_are_still_read(server: LocalServer) -> None:
    """A fragmented message (read by wsproto from then on), then whole ones."""
    with connected(server) as ws:
        ws.sock.sendall(
            frame(0x1, PING)
            + frame(0x1, PING[:10], fin=False)
            + frame(0x9, b"between")  # a control frame between fragments (§5.4)
            + frame(0x0, PING[10:])
            + frame(0x1, PING)
        )
        # The Pong is written at once, the pusher:pong frames by the writer.
        frames = sorted(ws.read() for _ in range(4))
        assert frames == [(0x1, b'{"event":"pusher:pong","data":"{}"}')] * 3 + [(0xA, b"between")]
    assert received(server) == 3


def unmasked(opcode: int, payload: bytes) -> bytes:
    return bytes((0x80 | opcode, len(payload))) + payload


def long_form(payload: bytes) -> bytes:
    """A 16-bit length for a payload that fits in 7 bits."""
    return struct.pack("!BBH", 0x81, 0x80 | 126, len(payload)) + b"\0\0\0\0" + payload


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (unmasked(0x1, PING), 1002),  # §5.1: a client masks every frame
        (long_form(PING), 1002),  # §5.2: the minimal number of bytes
        (frame(0x1, b'{"event":"\xed\xa0\x80"}'), 1007),  # a UTF-8 surrogate, §8.1
        (frame(0x1, b"\xff"), 1007),
        (frame(0x1 | 0x40, PING), 1002),  # RSV1 with no extension
        (frame(0x3, b"x"), 1002),  # a reserved opcode
        (frame(0x9, b"x" * 126), 1002),  # a control frame over 125 bytes (§5.5)
        (frame(0x9, b"x", fin=False), 1002),  # a fragmented control frame
        (frame(0x0, PING), 1002),  # a continuation with no message begun
    ],
    ids=[
        "unmasked",
        "long-length",
        "surrogate",
        "bad-utf8",
        "rsv1",
        "opcode-3",
        "big-ping",
        "fragmented-ping",
        "continuation",
    ],
)
def test_frames_left_to_wsproto_get_its_close_code(
    server: LocalServer, bad: bytes, code: int
) -> None:
    """The whole frame before the bad one, in the same read, reaches the core
    (its pong, queued for the writer, is not sent once the close began: RFC
    6455 §5.5.1); nothing after it does."""
    with connected(server) as ws:
        ws.sock.sendall(frame(0x1, PING) + bad + frame(0x1, PING))
        assert ws.read_until_close()[1] == code
        with pytest.raises((EOFError, ConnectionResetError)):
            ws.read()  # the server ends the TCP connection after a protocol error
    assert received(server) == 1


def test_a_close_from_the_client_is_answered_after_the_frames_before_it(
    server: LocalServer,
) -> None:
    with connected(server) as ws:
        ws.sock.sendall(frame(0x1, PING) + frame(0x8, struct.pack("!H", 1000) + b"bye"))
        assert ws.read_until_close()[1] == 1000
        with pytest.raises(EOFError):
            ws.read()
    assert received(server) == 1


def test_a_frame_begun_when_the_server_closes_never_reaches_the_core(
    server: LocalServer,
) -> None:
    """The server closes (4009: the user's connections terminated) while it
    keeps half a frame; the rest of that frame and a whole frame after it are
    dropped, and the client's Close ends the TCP connection."""
    with Raw(server.port) as ws:
        established = ws.read_event()
        socket_id = json.loads(established["data"])["socket_id"]
        ws.send_json({"event": "pusher:signin", "data": user_auth(socket_id, {"id": "u1"})})
        assert ws.read_event()["event"] == "pusher:signin_success"
        subscribe = frame(0x1, b'{"event":"pusher:subscribe","data":{"channel":"news"}}')
        ws.sock.sendall(subscribe[:20])
        pusher_client(server.port).terminate_user_connections("u1")
        events, code = ws.read_until_close()
        assert ([e["event"] for e in events], code) == (["pusher:error"], 4009)
        ws.sock.sendall(subscribe[20:] + subscribe + frame(0x8, struct.pack("!H", 4009)))
        with pytest.raises(EOFError):
            ws.read()
    assert pusher_client(server.port).channel_info("news") == {"occupied": False}
    assert received(server) == 1  # the sign-in


def test_mask_matches_rfc_6455_example() -> None:
    """RFC 6455 §5.7's masked "Hello" (key 37 fa 21 3d), with the unmasking
    function the server uses (aiohttp's) and the pure-Python fallback."""
    from flask_pusher.server.wsocket import _mask_python
    from flask_pusher.server.wsocket import unmask

    for function in (unmask, _mask_python):
        payload = bytearray(b"\x7f\x9f\x4d\x51\x58")
        function(b"\x37\xfa\x21\x3d", payload)
        assert payload == b"Hello"
        longer = bytearray(mask(b"x" * 4099, b"\x01\x02\x03\x04"))
        function(b"\x01\x02\x03\x04", longer)
        assert longer == b"x" * 4099


# -- client frame JSON (msgspec, with json.loads behind it) ------------------------

JSON_TEXTS = [
    '{"event":"pusher:ping","data":{}}',
    '{"a":1,"a":2}',  # duplicate keys: the last wins
    '{"a":123456789012345678901234567890}',  # a big int stays an int
    '{"a":-9223372036854775809,"b":18446744073709551616}',
    '{"a":0.1,"b":-0.0,"c":5e-324,"d":2.4e-324,"e":1.7976931348623157e308}',
    '"\\ud800"',  # a lone surrogate: msgspec refuses it, json.loads keeps it
    '{"a":"\\ud83d\\ude00\\u0000"}',
    ' {"a" : [true, false, null] } ',
    "1" * 4300,  # Python's longest int
]
BAD_JSON = ["NaN", '{"a":-Infinity}', "1e999", "1" * 4301, '{"a":1,}', "\ufeff{}", '"\x01"', ""]


@pytest.mark.parametrize("fast", [True, False], ids=["msgspec", "json"])
def test_loads_accepts_what_json_loads_accepts_and_nothing_else(
    fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_pusher.server import protocol

    if not fast:
        monkeypatch.setattr(protocol, "_fast_loads", None)
    else:
        assert protocol._fast_loads is not None, "msgspec is a dependency of the server extra"
    for text in JSON_TEXTS:
        for given in (text, text.encode("utf-8", "surrogatepass")):
            if isinstance(given, bytes) and "\\ud800" in text:
                continue
            value = protocol.loads(given)
            assert value == json.loads(text) and type(value) is type(json.loads(text)), text
    for text in BAD_JSON:
        with pytest.raises(ValueError):
            protocol.loads(text)
    with pytest.raises(TypeError):
        protocol.loads(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("fast", [True, False], ids=["msgspec", "json"])
@pytest.mark.parametrize("depth", [32, 33, 1000, 100_000])
def test_loads_refuses_depth_past_the_limit(
    fast: bool, depth: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MAX_JSON_DEPTH (32) nested arrays or objects pass; one more is a
    DepthError, however deep (no RecursionError escapes)."""
    from flask_pusher.server import protocol

    if not fast:
        monkeypatch.setattr(protocol, "_fast_loads", None)
    for open_, close in (("[", "]"), ('{"a":', "}")):
        text = open_ * depth + "1" + close * depth
        if depth <= protocol.MAX_JSON_DEPTH:
            assert protocol.loads(text) == json.loads(text)
        else:
            with pytest.raises(protocol.DepthError, match="nested more than 32 deep"):
                protocol.loads(text)


@pytest.mark.parametrize("timeout", [120, 1, 30])
def test_connection_established_from_its_template_is_the_encoders(timeout: int) -> None:
    """The first frame of every connection (pusher-protocol §5.1) is written from a
    template for the server's own socket ids; it must be what the JSON encoder
    writes, data double-encoded, for every id the core makes."""
    core = Core([AppConfig("1", "key", "secret")])
    for _ in range(50):
        socket_id = core.connect(core.apps_by_id["1"]).result.socket_id
        frame = protocol.connection_established(socket_id, timeout)
        fields = {"socket_id": socket_id, "activity_timeout": timeout}
        data = json.dumps(fields, separators=(",", ":"))
        assert json.loads(frame) == {"event": "pusher:connection_established", "data": data}
        assert frame == protocol.encode("pusher:connection_established", data)


def test_connection_established_escapes_any_other_socket_id() -> None:
    frame = protocol.connection_established('a"b\\c', 120)
    assert json.loads(json.loads(frame)["data"])["socket_id"] == 'a"b\\c'


@pytest.mark.parametrize("channel", ["news", "private-a.b;c=@,_-", "x" * 200, 'not"valid'])
def test_subscription_succeeded_from_its_template_is_the_encoders(channel: str) -> None:
    """A storm's second frame (pusher-protocol §5.5): for a valid channel name
    without presence data it comes from a template, equal to the encoder's."""
    frame = protocol.subscription_succeeded(channel)
    assert frame == protocol.encode("pusher_internal:subscription_succeeded", "{}", channel)
    assert json.loads(frame)["channel"] == channel
