"""CPU of the WebSocket receive path, in process (bounded, no sockets).

Feeds masked client frames to one :class:`~flask_pusher.server.wsocket.PusherSocket`
whose transport takes nothing and whose owner only counts, and reports the
CPU seconds (``time.process_time``) per 100,000 messages: small frames
(``pusher:ping``, 30 bytes), 4 KB client events, and the 4 KB events split into
4 fragments. With ``--parse`` the owner also parses each message as the core
does (``protocol.parse``: the client frame's JSON). Medians of ``--runs`` runs,
with the load average. Compare two
trees in one run by running it under each (``PYTHONPATH=old`` then
``PYTHONPATH=new``, alternately), as the closing note of issue 16 did.

Run: ``python benchmarks/receive_path.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import struct
import time
from typing import Any

from flask_pusher.server import protocol
from flask_pusher.server.wsocket import PusherSocket


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame masked with the zero key (RFC 6455 §5.3: the payload unchanged)."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        head = bytes((first, 0x80 | size))
    elif size < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, size)
    return head + b"\0\0\0\0" + payload


class Transport:
    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class Owner:
    def __init__(self) -> None:
        self.texts = 0

    def on_text(self, key: Any, text: str) -> None:
        self.texts += 1

    def on_binary(self, key: Any) -> None:
        pass

    def on_lost(self, key: Any) -> None:
        pass


class ParsingOwner(Owner):
    def on_text(self, key: Any, text: str) -> None:
        self.texts += 1
        protocol.parse(text)


def workloads(messages: int) -> dict[str, list[bytes]]:
    ping = frame(0x1, b'{"event":"pusher:ping","data":{}}')
    event = json.dumps(
        {"event": "client-e", "channel": "private-c", "data": {"x": "y" * 4000}}
    ).encode()
    quarter = len(event) // 4
    parts = [event[i * quarter : (i + 1) * quarter] for i in range(3)] + [event[3 * quarter :]]
    fragmented = b"".join(
        frame(0x1 if i == 0 else 0x0, part, fin=i == 3) for i, part in enumerate(parts)
    )

    # Reads of about 64 KiB, as a busy socket delivers them.
    def reads(one: bytes, count: int) -> list[bytes]:
        per_read = max(1, 65536 // len(one))
        chunks = [one * per_read] * (count // per_read)
        return [*chunks, one * (count % per_read)] if count % per_read else chunks

    return {
        "small": reads(ping, messages),
        "4 KB": reads(frame(0x1, event), messages // 4),
        "4 KB in 4 fragments": reads(fragmented, messages // 4),
    }


async def cpu_per_100k(chunks: list[bytes], parse: bool = False) -> float:
    owner = ParsingOwner() if parse else Owner()
    sock: PusherSocket[int] = PusherSocket(Transport(), owner, 1, 256 * 1024)  # type: ignore[arg-type]
    start = time.process_time()
    for chunk in chunks:
        sock.data_received(chunk)
    spent = time.process_time() - start
    return spent / owner.texts * 100_000


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--parse", action="store_true", help="also protocol.parse each message")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.runs = 20_000, 2
    results = {}
    for name, chunks in workloads(args.messages).items():
        figures = [asyncio.run(cpu_per_100k(chunks, args.parse)) for _ in range(args.runs)]
        results[name] = statistics.median(figures)
        runs = ", ".join(f"{f:.3f}" for f in figures)
        print(f"{name:>20}: {results[name]:.3f} CPU s / 100k messages (runs {runs})")
    print("load average", os.getloadavg())


if __name__ == "__main__":
    main()
