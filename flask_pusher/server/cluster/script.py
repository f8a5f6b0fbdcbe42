"""The cluster's Lua script, from one ``.lua`` file per operation.

Each file of ``lua/`` (package data, read with :mod:`importlib.resources`)
adds one operation to the script's ``OPS`` table; ``common.lua`` holds what
they share (the first/last counts, the webhook delay) and comes first,
``main.lua`` (the dispatch) last. Redis runs the joined script atomically, once
per batch of operations, as Centrifuge loads its own ``.lua`` files once
(https://github.com/centrifugal/centrifuge, ``internal/redis_lua/``).
"""

from __future__ import annotations

from importlib import resources

from ...names import DELAYED_WEBHOOKS
from ..webhook_queue import FLOODS
from . import stream
from .messages import Op

#: The files of every operation but the shared ones, in a fixed order.
OPERATION_FILES = (*(f"{op.value}.lua" for op in Op), "beat.lua", "limits.lua")


def rules() -> str:
    """The Lua of the parameters the rules share with Python, made from their
    one statement: ``DELAYED`` and ``CANCELS`` from
    :data:`flask_pusher.names.DELAYED_WEBHOOKS` (which webhooks wait, and the
    event that cancels each); ``FLOODS`` from
    :data:`flask_pusher.server.webhook_queue.FLOODS` (the webhooks dropped
    first from a full stream) and ``WH_MAX`` from :data:`.stream.STREAM_MAX`."""

    def table(pairs: dict[str, str]) -> str:
        return "{" + ", ".join(f"{k} = '{v}'" for k, v in sorted(pairs.items())) + "}"

    cancels = {v: k for k, v in DELAYED_WEBHOOKS.items()}
    return (
        "-- Made by script.py from flask_pusher.names.DELAYED_WEBHOOKS.\n"
        f"local DELAYED = {table(DELAYED_WEBHOOKS)}\n"
        f"local CANCELS = {table(cancels)}\n"
        "-- Made by script.py from webhook_queue.FLOODS and stream.STREAM_MAX.\n"
        f"local FLOODS = {{{', '.join(f'{name} = true' for name in sorted(FLOODS))}}}\n"
        f"local WH_MAX = {int(stream.STREAM_MAX)}\n"
    )


def load() -> str:
    """The whole script: :func:`rules`, ``common.lua``, each operation's file,
    ``main.lua``."""
    folder = resources.files("flask_pusher.server.cluster").joinpath("lua")
    parts = [folder.joinpath(name).read_text("utf-8") for name in OPERATION_FILES]
    common = folder.joinpath("common.lua").read_text("utf-8")
    main = folder.joinpath("main.lua").read_text("utf-8")
    return "\n".join([rules(), common, *parts, main])
