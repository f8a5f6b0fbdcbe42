"""Where the server's memory per idle connection goes (loopback only, bounded).

Two modes, both holding N subscribed, idle connections from a receiver
process (the one of ``fanout.py``):

- ``rss`` (default): start ``python -m flask_pusher.server`` as ``fanout.py``
  does, warm it up with 20 connections, and report RSS growth / N, the
  median of ``--runs`` runs for each ``--n``, with the load average.
  ``--env NAME=VALUE`` sets variables for the server (``MALLOC_ARENA_MAX=2``,
  ``PYTHONMALLOC=malloc``, ...), ``--baseline-env`` runs without them in the
  same run and prints the ratio.
- ``trace``: run the server in this process under :mod:`tracemalloc` and
  report the bytes per connection by source line, by allocating file, and by
  object type (``gc`` objects and ``sys.getsizeof``), diffing snapshots taken
  before and after connecting N clients.

What the backend seam (issue 15) changed: RSS per connection rose from 3,930
to 4,080 B (n=5,000; 4,096 to 4,194 at 10,000), yet ``trace`` finds the same
live bytes per connection before and after (3,972 and 3,966 B at 2,000), and
with ``--env PYTHONMALLOC=malloc`` the two are equal (4,479 and 4,456 B). The
rise is pymalloc's pools, not a new per-connection object: the subscribe path
makes more short-lived objects (typed events, backend calls) between the
long-lived ones, which leaves more partly used pools behind.

To compare two trees, run each with ``PYTHONPATH=TREE`` from a directory
outside both (``cd /tmp``): ``python -m flask_pusher.server`` puts its working
directory before ``PYTHONPATH`` on ``sys.path``, so run from a tree's root the
server is that tree's whatever ``PYTHONPATH`` says.

What issue 19 changed: wsproto's parser is made only for a connection that
sends a frame the fast path leaves to it: RSS per connection 4,298 -> 2,479 B
(n=5,000, medians of 3 alternated runs), traced 4,088 -> 2,332 B (n=2,000).
A connection then kept its channel's name instead of its own copy (54 B less
per subscribed connection, traced).

Linux only. Run: ``python benchmarks/idle_memory.py --n 5000 10000 --runs 3``
or ``python benchmarks/idle_memory.py trace --n 2000``.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import collections
import gc
import os
import statistics
import subprocess
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fanout


def start_server(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``fanout.start_server`` with ``env`` added to the server's environment."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return fanout.start_server(port)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def rss_per_connection(n: int, env: dict[str, str]) -> float:
    port = fanout.free_port()
    server = start_server(port, env)
    receiver = None
    try:
        fanout.Receiver(port, 20, subscribe=True).close()
        while fanout.subscription_count(port) != 0:
            time.sleep(0.05)
        before = fanout.rss_bytes(server.pid)
        receiver = fanout.Receiver(port, n, subscribe=True)
        after = fanout.rss_bytes(server.pid)
        return (after - before) / n
    finally:
        if receiver is not None:
            receiver.proc.kill()
        server.terminate()
        server.wait(30)


def parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        env[name] = value
    return env


def rss_mode(args: argparse.Namespace) -> None:
    variants = [("env", parse_env(args.env))]
    if args.baseline_env:
        variants.insert(0, ("baseline", {}))
    for n in args.n:
        medians = {}
        for label, env in variants:
            figures = [rss_per_connection(n, env) for _ in range(args.runs)]
            medians[label] = statistics.median(figures)
            runs = ", ".join(f"{f:,.0f}" for f in figures)
            print(f"n={n} {label} {env}: median {medians[label]:,.0f} B/conn (runs {runs})")
        if args.baseline_env:
            print(f"  ratio env/baseline {medians['env'] / medians['baseline']:.3f}")
    print("load average", os.getloadavg())


# -- trace mode -----------------------------------------------------------------


_FUNCTIONS: dict[str, list[tuple[int, int, str]]] = {}


def function_at(filename: str, lineno: int) -> str:
    """``file:Class.function`` enclosing ``lineno`` (found with :mod:`ast`)."""
    spans = _FUNCTIONS.get(filename)
    if spans is None:
        spans = []
        try:
            with open(filename) as f:
                tree = ast.parse(f.read())
        except (OSError, SyntaxError, ValueError):
            tree = ast.Module(body=[], type_ignores=[])

        def visit(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = prefix + child.name
                    if not isinstance(child, ast.ClassDef):
                        spans.append((child.lineno, child.end_lineno or child.lineno, name))
                    visit(child, name + ".")

        visit(tree, "")
        _FUNCTIONS[filename] = spans
    inner = [(start, name) for start, end, name in spans if start <= lineno <= end]
    short = filename.split("site-packages/")[-1].split("/lib/python3")[-1]
    return f"{short}:{max(inner)[1] if inner else '<module>'}"


def type_census() -> dict[str, tuple[int, int]]:
    """Per type name: (count, sum of sys.getsizeof) of the objects gc tracks,
    plus the bytes/str they refer to directly (untracked by gc)."""
    census: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    seen_leaves: set[int] = set()
    for obj in gc.get_objects():
        name = f"{type(obj).__module__}.{type(obj).__qualname__}"
        entry = census[name]
        entry[0] += 1
        entry[1] += sys.getsizeof(obj)
        for ref in gc.get_referents(obj):
            if isinstance(ref, (bytes, bytearray, str, int, float)) and id(ref) not in seen_leaves:
                seen_leaves.add(id(ref))
                leaf = census["(leaf) " + type(ref).__name__]
                leaf[0] += 1
                leaf[1] += sys.getsizeof(ref)
    return {k: (v[0], v[1]) for k, v in census.items()}


async def trace_mode(args: argparse.Namespace) -> None:
    from flask_pusher.server.app import Server
    from flask_pusher.server.app import start_site
    from flask_pusher.server.app import stop_site
    from flask_pusher.server.config import AppConfig

    n = args.n[0]
    server = Server([AppConfig(fanout.APP_ID, fanout.KEY, fanout.SECRET)])
    runner, port = await start_site(server, "127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    warm = await loop.run_in_executor(None, fanout.Receiver, port, 20, True)
    await loop.run_in_executor(None, warm.close)
    while server._sockets:
        await asyncio.sleep(0.05)
    gc.collect()
    tracemalloc.start(args.frames)
    census0 = type_census()
    snap0 = tracemalloc.take_snapshot()
    receiver = await loop.run_in_executor(None, fanout.Receiver, port, n, True)
    await asyncio.sleep(0.5)  # let the last subscriptions settle
    gc.collect()
    snap1 = tracemalloc.take_snapshot()
    census1 = type_census()
    tracemalloc.stop()
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    snap0, snap1 = snap0.filter_traces(filters), snap1.filter_traces(filters)
    total = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
    print(f"tracemalloc: {total / n:,.0f} B per connection ({n} connections)")
    print("\n-- by file --")
    for stat in snap1.compare_to(snap0, "filename")[: args.top]:
        if stat.size_diff / n >= 8:
            frame = stat.traceback[0]
            print(f"{stat.size_diff / n:8,.0f} B {stat.count_diff / n:6.2f} blk  {frame.filename}")
    print("\n-- by line --")
    for stat in snap1.compare_to(snap0, "lineno")[: args.top]:
        if stat.size_diff / n >= 8:
            frame = stat.traceback[0]
            where = f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}"
            print(f"{stat.size_diff / n:8,.0f} B {stat.count_diff / n:6.2f} blk  {where}")
    print("\n-- by function --")
    functions: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for stat in snap1.compare_to(snap0, "lineno"):
        frame = stat.traceback[0]
        entry = functions[function_at(frame.filename, frame.lineno)]
        entry[0] += stat.size_diff
        entry[1] += stat.count_diff
    for name, (size, count) in sorted(functions.items(), key=lambda kv: -kv[1][0]):
        if size / n >= 8:
            print(f"{size / n:8,.0f} B {count / n:6.2f} blk  {name}")
    if args.tracebacks:
        print("\n-- by traceback --")
        for stat in snap1.compare_to(snap0, "traceback")[: args.tracebacks]:
            print(f"{stat.size_diff / n:8,.0f} B {stat.count_diff / n:6.2f} blk")
            for line in stat.traceback.format(limit=args.frames, most_recent_first=True):
                print("      " + line)
    print("\n-- by type (gc census, sys.getsizeof) --")
    rows = []
    for name, (count, size) in census1.items():
        count0, size0 = census0.get(name, (0, 0))
        if size - size0 >= 4 * n:
            rows.append((size - size0, count - count0, name))
    for size, count, name in sorted(rows, reverse=True):
        print(f"{size / n:8,.0f} B {count / n:6.2f} obj  {name}")
    receiver.proc.kill()
    await stop_site(runner)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("mode", nargs="?", default="rss", choices=("rss", "trace"))
    parser.add_argument("--n", type=int, nargs="+", default=[5000, 10000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    parser.add_argument("--baseline-env", action="store_true", help="also run without --env")
    parser.add_argument("--frames", type=int, default=1, help="tracemalloc frames")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--tracebacks", type=int, default=0)
    args = parser.parse_args()
    limit = fanout.raise_fd_limit()
    if limit < max(args.n) + 100:
        sys.exit(f"open-file limit {limit} is too low for {max(args.n)} connections")
    if args.mode == "rss":
        rss_mode(args)
    else:
        asyncio.run(trace_mode(args))


if __name__ == "__main__":
    main()
