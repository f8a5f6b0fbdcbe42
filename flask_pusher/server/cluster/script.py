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

from .messages import Op

#: The files of every operation but the shared ones, in a fixed order.
OPERATION_FILES = (*(f"{op.value}.lua" for op in Op), "beat.lua", "limits.lua")


def load() -> str:
    """The whole script: ``common.lua``, each operation's file, ``main.lua``."""
    folder = resources.files("flask_pusher.server.cluster").joinpath("lua")
    parts = [folder.joinpath(name).read_text("utf-8") for name in OPERATION_FILES]
    common = folder.joinpath("common.lua").read_text("utf-8")
    main = folder.joinpath("main.lua").read_text("utf-8")
    return "\n".join([common, *parts, main])
