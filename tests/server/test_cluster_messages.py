"""The Redis backend's named operations and messages (issue 15: "one .lua file
per operation", "named message kinds ... with encode/decode in one place"),
without Redis."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from flask_pusher.server.cluster import script
from flask_pusher.server.cluster.messages import decode
from flask_pusher.server.cluster.messages import encode
from flask_pusher.server.cluster.messages import Kind
from flask_pusher.server.cluster.messages import Op
from flask_pusher.server.cluster.messages import pack


def test_every_operation_has_its_file_and_nothing_else_is_dispatched() -> None:
    folder = resources.files("flask_pusher.server.cluster").joinpath("lua")
    files = {f.name for f in folder.iterdir() if f.name.endswith(".lua")}
    assert files == {f"{op.value}.lua" for op in Op} | {
        "common.lua",
        "beat.lua",
        "limits.lua",
        "main.lua",
    }
    text = script.load()
    assert sorted(re.findall(r"^OPS\.(\w+) = ", text, re.M)) == sorted(op.value for op in Op)
    assert text.index("local OPS = {}") < text.index("OPS.subscribe") < text.index("if mode ==")


def test_every_kind_the_script_publishes_is_named() -> None:
    published = set(re.findall(r"kind = '(\w+)'", script.load()))
    assert published <= {kind.value for kind in Kind}
    assert published == {
        "count",
        "member_added",
        "member_removed",
        "online",
        "offline",
        "joined",
        "cached",
        "watchlist",
    }


def test_messages_round_trip() -> None:
    text = encode(Kind.EVENTS, "3", origin="a/1", events=[["e", "{}", None, ["c"]]])
    message = decode(text)
    assert message.kind is Kind.EVENTS and message.app == "3" and message.origin == "a/1"
    assert message.events == [["e", "{}", None, ["c"]]]
    joined = decode('{"kind":"joined","app":"3","channel":"presence-a","socket":"1.2","number":7}')
    assert joined.members is None  # a full channel: no members


@pytest.mark.parametrize(
    "text", ['{"kind":"nope","app":"3"}', '{"app":"3"}', "[1]", '{"kind":"count","app":"3","z":1}']
)
def test_unknown_messages_are_refused(text: str) -> None:
    with pytest.raises((ValueError, TypeError)):
        decode(text)


def test_operations_pack_lone_surrogates_as_bytes() -> None:
    assert pack([[Op.SIGNIN, "3", "\ud800", 1]]) == b'[["signin", "3", "\xed\xa0\x80", 1]]'
