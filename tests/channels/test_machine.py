"""The client's connection states and reconnect rules without sockets (pusher-js
8.6 ``connection_manager.ts`` and ``Protocol.getCloseAction``; reference §5.3,
§5.4, §5.12)."""

from __future__ import annotations

import pytest

from flask_pusher.channels import ConnectionMachine
from flask_pusher.channels import ConnectionRefused
from flask_pusher.channels import Event
from flask_pusher.channels import ProtocolError
from flask_pusher.channels import PusherError
from flask_pusher.channels import StateChange
from flask_pusher.channels import Timeouts
from flask_pusher.channels.protocol import close_action
from flask_pusher.channels.protocol import decode
from flask_pusher.channels.protocol import encode
from flask_pusher.channels.protocol import Handshake
from flask_pusher.channels.protocol import handshake


def state(machine: ConnectionMachine) -> str:
    """The machine's state, read in a way mypy does not narrow."""
    return machine.state


def connected_machine(
    changes: list[StateChange] | None = None, timeouts: Timeouts | None = None
) -> ConnectionMachine:
    machine = ConnectionMachine(timeouts, on_change=None if changes is None else changes.append)
    machine.connect()
    machine.connected(Handshake("1.2", 120))
    return machine


def test_states_follow_pusher_js_from_initialized_to_connected() -> None:
    changes: list[StateChange] = []
    machine = ConnectionMachine(on_change=changes.append)
    assert state(machine) == "initialized" and not machine.running
    machine.connect()
    machine.unavailable()
    assert state(machine) == "unavailable"
    machine.connect()  # a retry keeps an unavailable client unavailable
    assert state(machine) == "unavailable"
    machine.connected(Handshake("12.34", 30))
    assert machine.socket_id == "12.34"
    assert changes == [
        StateChange("initialized", "connecting"),
        StateChange("connecting", "unavailable"),
        StateChange("unavailable", "connected"),
    ]


def test_unavailable_only_while_connecting() -> None:
    machine = connected_machine()
    machine.unavailable()
    assert machine.state == "connected"


@pytest.mark.parametrize(
    ("code", "delay"),
    [
        (4100, 1.0),  # 4100-4199: backoff, a fixed second
        (4199, 1.0),
        (4200, 0.0),  # 4200-4299: at once
        (4201, 0.0),
        (4299, 0.0),
        (1002, 1.0),  # 1002-1004: backoff
        (1004, 1.0),
        (1000, 1.0),  # other codes: 1 s once connected
        (1006, 1.0),
        (None, 1.0),
    ],
)
def test_a_connected_client_reconnects_after_the_delay_of_its_close_code(
    code: int | None, delay: float
) -> None:
    changes: list[StateChange] = []
    machine = connected_machine(changes)
    assert machine.closed(code) == delay
    assert machine.state == "connecting" and machine.socket_id is None
    assert changes[-1] == StateChange("connected", "connecting")


@pytest.mark.parametrize("code", [4001, 4003, 4004, 4009, 4099, 4300, 4301, 4400, 4999])
def test_refusing_close_codes_disconnect_for_good(code: int) -> None:
    machine = connected_machine()
    with pytest.raises(ConnectionRefused) as info:
        machine.closed(code, "App key x does not exist")
    assert info.value.code == code and "does not exist" in str(info.value)
    assert machine.state == "disconnected" and not machine.running
    assert machine.closed(4200) is None  # nothing brings it back but connect()


def test_4000_switches_to_tls_and_retries_at_once() -> None:
    machine = connected_machine()
    assert not machine.use_tls
    assert machine.closed(4000) == 0.0
    assert machine.use_tls


def test_failed_attempts_back_off_exponentially_up_to_the_maximum() -> None:
    machine = ConnectionMachine(Timeouts(first_backoff=1.0, max_backoff=8.0))
    machine.connect()
    assert [machine.connect_failed() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    # A close without a code while still connecting counts as a failed attempt.
    assert machine.closed(1006) == 8.0
    machine.connected(Handshake("1.1", 120))
    machine.closed(4200)
    assert machine.connect_failed() == 1.0  # a connection resets the backoff


def test_activity_timeout_is_the_shorter_of_the_option_and_the_server() -> None:
    machine = ConnectionMachine(Timeouts(activity=60))
    machine.connect()
    assert machine.connected(Handshake("1.1", 30)) == 30
    machine.closed(4200)
    assert machine.connected(Handshake("1.1", 120)) == 60


def test_pong_timeout_reconnects_at_once_and_disconnect_stops() -> None:
    machine = connected_machine()
    assert machine.pong_timed_out() == 0.0
    assert state(machine) == "connecting"
    machine.disconnect()
    assert state(machine) == "disconnected" and machine.closed(None) is None
    machine.fail()
    assert state(machine) == "failed"


@pytest.mark.parametrize(
    "field", ["activity", "pong", "unavailable", "connect", "first_backoff", "max_backoff"]
)
def test_timeouts_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Timeouts(**{field: 0})


@pytest.mark.parametrize(
    ("code", "action"),
    [
        (None, None),
        (1000, None),
        (1001, None),
        (1002, "backoff"),
        (1005, None),
        (4000, "tls_only"),
        (4001, "refused"),
        (4100, "backoff"),
        (4200, "retry"),
        (4301, "refused"),
    ],
)
def test_close_actions_are_pusher_js_ones(code: int | None, action: str | None) -> None:
    assert close_action(code) == action


def test_decode_parses_data_strings_as_pusher_js() -> None:
    frame = '{"event":"e","channel":"c","data":"{\\"a\\":1}","user_id":"u"}'
    assert decode(frame) == Event("e", "c", {"a": 1}, "u")
    assert decode('{"event":"e","data":"plain"}') == Event("e", None, "plain")
    assert decode('{"event":"e","data":{"a":1}}').data == {"a": 1}
    assert decode('{"event":"e","data":"7"}').data == 7


@pytest.mark.parametrize("text", ["not json", "[1]", '{"data":1}', '{"event":3}', "\x00"])
def test_decode_refuses_malformed_frames_with_a_protocol_error(text: str) -> None:
    with pytest.raises(ProtocolError):
        decode(text)


def test_encode_sends_data_as_an_object() -> None:
    assert encode("pusher:subscribe", {"channel": "c", "auth": ""}) == (
        '{"event":"pusher:subscribe","data":{"channel":"c","auth":""}}'
    )
    assert (
        encode("client-x", "hi", "private-c")
        == '{"event":"client-x","data":"hi","channel":"private-c"}'
    )


def test_handshake() -> None:
    ok = decode(
        '{"event":"pusher:connection_established","data":"{\\"socket_id\\":\\"1.2\\",\\"activity_timeout\\":30}"}'
    )
    assert handshake(ok) == Handshake("1.2", 30.0)
    with pytest.raises(ConnectionRefused) as info:
        handshake(Event("pusher:error", None, {"code": 4001, "message": "No app"}))
    assert info.value.code == 4001
    with pytest.raises(PusherError) as err:
        handshake(Event("pusher:error", None, {"code": 4100, "message": "Over capacity"}))
    assert not isinstance(err.value, ConnectionRefused) and err.value.code == 4100
    for bad in (
        Event("pusher:subscription_succeeded", "c", {}),
        Event("pusher:connection_established", None, {"socket_id": "1.2"}),
        Event("pusher:connection_established", None, {"socket_id": "1.2", "activity_timeout": 0}),
        Event("pusher:connection_established", None, {"activity_timeout": 30}),
        Event("pusher:connection_established", None, "text"),
    ):
        with pytest.raises(ProtocolError):
            handshake(bad)
