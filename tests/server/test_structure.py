"""The server's structure (issue 15, "How it is checked"): the rules import
nothing of the Redis backend, the Redis backend imports no HTTP framework, no
module under ``flask_pusher/server`` is over 600 lines, and no code reads the
core's answers back from their encoded JSON."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVER = Path(__file__).parents[2] / "flask_pusher" / "server"
RULES = ("core.py", "state.py", "users.py", "rest.py", "backend.py")


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, made absolute (``from .x import y`` in
    the server gives ``flask_pusher.server.x`` and ``flask_pusher.server.x.y``)."""
    package = ".".join(path.relative_to(SERVER.parents[1]).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
            module = ".".join([*base, node.module] if node.module else base)
            found.add(module if node.level else node.module or "")
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("name", RULES)
def test_the_rules_know_no_redis(name: str) -> None:
    imported = _imports(SERVER / name)
    assert not {m for m in imported if m.startswith("flask_pusher.server.cluster")}
    assert not {m for m in imported if m == "redis" or m.startswith("redis.")}
    names = {
        n.id for n in ast.walk(ast.parse((SERVER / name).read_text())) if isinstance(n, ast.Name)
    }
    assert "cluster" not in names


def test_the_redis_backend_knows_no_http_framework() -> None:
    for path in (SERVER / "cluster").glob("*.py"):
        imported = _imports(path)
        assert not {m for m in imported if m.split(".")[0] == "aiohttp"}, path.name


def test_no_module_is_over_600_lines() -> None:
    long = {
        str(path.relative_to(SERVER)): n
        for path in SERVER.rglob("*.py")
        if (n := len(path.read_text("utf-8").splitlines())) > 600
    }
    assert long == {}


def test_no_code_reads_the_encoded_frames_back() -> None:
    """Observers match on the typed events: nothing reads ``send.frame``."""
    for path in SERVER.rglob("*.py"):
        tree = ast.parse(path.read_text("utf-8"))
        reads = [
            node.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and node.attr == "frame"
            and isinstance(node.value, ast.Name)
            and node.value.id == "send"
        ]
        assert reads == [], f"{path.name} reads send.frame at lines {reads}"


def test_the_import_walk_resolves_relative_imports() -> None:
    """So that the checks above can fail: the Redis backend's own module is
    seen importing redis and, two levels up, the rules' modules."""
    imported = _imports(SERVER / "cluster" / "backend.py")
    assert "redis.asyncio" in imported
    assert "flask_pusher.server.backend.LocalBackend" in imported
    assert "flask_pusher.server.cluster.writer.Writer" in imported
    assert "flask_pusher.server.state.Effects" in _imports(SERVER / "core.py")


def _writes_to_a_transport(path: Path) -> list[int]:
    """Lines of ``path`` that call ``<something>.transport.write`` or ``transport.write``."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "write"
            and (
                (isinstance(node.func.value, ast.Name) and node.func.value.id == "transport")
                or (
                    isinstance(node.func.value, ast.Attribute)
                    and node.func.value.attr == "transport"
                )
            )
        ):
            lines.append(node.lineno)
    return lines


def test_server_is_split_one_job_per_module() -> None:
    """Issue 15, item 4: the writer is the only path to a client's socket (as
    the handshake's owner, ``wsocket`` writes its own control frames); the
    handshake, the ops routes and the composition root write nothing; the
    writer knows no aiohttp; the ops routes know neither the core nor the writer."""
    writers = {path.name for path in SERVER.glob("*.py") if _writes_to_a_transport(path)}
    assert writers == {"writer.py", "wsocket.py"}
    assert not {m for m in _imports(SERVER / "writer.py") if m.split(".")[0] == "aiohttp"}
    ops = _imports(SERVER / "ops.py")
    assert not {
        m for m in ops if m.startswith(("flask_pusher.server.core", "flask_pusher.server.writer"))
    }
    app = _imports(SERVER / "app.py")
    assert {"flask_pusher.server.writer.Writer", "flask_pusher.server.handshake.Handshake"} <= app
    assert "flask_pusher.server.ops.Ops" in app


def test_the_vacate_delay_rule_is_written_once() -> None:
    """Which webhooks wait and what cancels each is stated once
    (``names.DELAYED_WEBHOOKS``): the webhook sender reads it, and the Lua's
    ``hook`` names no webhook type but through the tables made from it."""
    from flask_pusher import names
    from flask_pusher.server import webhooks
    from flask_pusher.server.cluster import script

    assert webhooks._DELAYED is names.DELAYED_WEBHOOKS
    rules = script.rules()
    for delayed, canceller in names.DELAYED_WEBHOOKS.items():
        assert f"{delayed} = '{canceller}'" in rules
        assert f"{canceller} = '{delayed}'" in rules
    assert script.load().startswith(rules)
    common = (SERVER / "cluster" / "lua" / "common.lua").read_text("utf-8")
    hook = common[common.index("local function hook") :]
    hook = hook[: hook.index("\nend\n")]
    assert "DELAYED[name]" in hook and "CANCELS[name]" in hook
    assert not [t for t in names.WEBHOOK_EVENT_TYPES if t in hook]
