"""Smoke runs of ``benchmarks/inbound.py`` against this tree only (no soketi,
no old tree), so that CI proves the instrument works: its Node load generator
(``benchmarks/inbound_load.js``, the ``ws`` package from ``npm ci``) drives a
real server over loopback sockets, and the script fails loudly when a server
refuses or loses what clients send (pusher-protocol §5.4, §5.5, §5.7)."""

from __future__ import annotations

import json
import math
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ..needs import unavailable

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "inbound.py"


@pytest.fixture(autouse=True)
def _node() -> None:
    if shutil.which("node") is None or not (ROOT / "node_modules" / "ws").is_dir():
        unavailable("node or node_modules/ws is missing (npm ci --no-audit --no-fund).")


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(SCRIPT), "--quick", "--no-old", "--no-soketi", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=90)


def documented_smoke_run() -> list[str]:
    """The smoke run's command as docs/performance.rst gives it, to run as pasted."""
    for line in (ROOT / "docs" / "performance.rst").read_text().splitlines():
        if line.strip().startswith("$ python benchmarks/inbound.py --quick"):
            return shlex.split(line.strip()[2:])
    raise AssertionError("docs/performance.rst lost its smoke-run command")


def test_quick_run_measures_every_step() -> None:
    command = documented_smoke_run()
    assert command[:2] == ["python", "benchmarks/inbound.py"]
    done = subprocess.run(
        [sys.executable, *command[1:], "--json", "--rst"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results: dict[str, Any]
    results, end = json.JSONDecoder().raw_decode(done.stdout)
    report = done.stdout[end:]
    assert results["servers"] == ["new"]  # the documented command: this tree only
    rounds = results["rounds"]
    assert set(rounds) == {"ping", "storm", "storm-nocount", "events", "fanout"}
    ping = rounds["ping"]["new"][0]
    assert ping["pings"] == ping["pongs"] == 100 * 2 * 2  # 100 connections, 2/s, 2 s
    for storm in (rounds["storm"]["new"][0], rounds["storm-nocount"]["new"][0]):
        assert storm["subscribed"] == storm["connections"] == 500
        assert 0 < storm["wall_s"] < 30
    events = rounds["events"]["new"][0]
    # 40 connections at 8/s for 2 s, each event to the 9 other members of its channel.
    assert events["events"] + events["skipped"] == 40 * 8 * 2
    assert events["deliveries"] == events["expected"] == events["events"] * 9
    fanout = rounds["fanout"]["new"][0]  # 20 triggers/s for 2 s to 100 subscribers
    assert fanout["triggers"] + fanout["skipped"] == 20 * 2
    assert fanout["deliveries"] == fanout["expected"] == fanout["triggers"] * 100
    for step, by_name in results["median"].items():
        cpu = by_name["new"]["cpu_s_100k" if step == "fanout" else "cpu_us"]
        assert math.isfinite(cpu) and cpu > 0, step
    latency = results["median"]["events"]["new"]
    assert 0 < latency["p50_ms"] <= latency["p99_ms"]
    assert "server CPU per ping/pong (us)" in report
    assert "load average before:" in report
    # The docs' table, this server's column filled, soketi's empty (not run).
    cpu = results["median"]["ping"]["new"]["cpu_us"]
    shown = f"{cpu:.0f}" if cpu >= 100 else f"{cpu:.3g}"
    row = f"    * - Pings: server CPU per ping/pong\n      - {shown} µs\n      -\n      -\n"
    assert row in report


def test_refused_client_events_fail_the_run() -> None:
    """Over the servers' client-event limit (100/s here), the server answers
    ``pusher:error`` 4301 (pusher-protocol §5.7): the run must stop with an
    error, never report figures of events that were not delivered."""
    done = bench("--steps", "events", "--event-rate", "300")
    assert done.returncode != 0
    assert "new events:" in done.stderr and "4301" in done.stderr
    assert "server CPU per client event" not in done.stdout


def test_old_tree_and_soketi_in_the_same_run() -> None:
    """``--old REF`` runs the tree of REF from ``git archive`` (the script checks
    that ``PYTHONPATH`` imports it from there), and soketi 1.6.1 from
    node_modules, each against the same generator: the report has their ratios."""
    if not (ROOT / "node_modules" / "@soketi" / "soketi").is_dir():
        unavailable("soketi is not in node_modules (npm ci --no-audit --no-fund).")
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing to extract an old tree from")
    command = [sys.executable, str(SCRIPT), "--quick", "--old", "HEAD", "--steps", "ping"]
    done = subprocess.run(
        [*command, "--json"], cwd=ROOT, capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results, end = json.JSONDecoder().raw_decode(done.stdout)
    assert results["servers"] == ["new", "old", "soketi"]
    assert results["old"] == "HEAD"
    for name in ("new", "old", "soketi"):
        ping = results["rounds"]["ping"][name][0]
        assert ping["pings"] == ping["pongs"] == 400, name
        assert results["median"]["ping"][name]["cpu_us"] > 0, name
    header = next(line for line in done.stdout[end:].splitlines() if "new/old" in line)
    assert "new/soketi" in header
