"""A TCP delay proxy on 127.0.0.1: a fixed one-way delay on every chunk, both directions.

This kernel has no `netem`, so the latency rows put one of these in front of each demo node:
`python bench/proxy.py --delay-ms 10 --target PORT [--target PORT ...]` listens on one free
loopback port per target, prints `ready PORT ...` (in target order) and forwards until SIGTERM.
A chunk read at time t is written at t + delay, in order, so a 10 ms one-way delay gives a 20 ms
round trip; the bytes are never looked at (SSH's host key check still runs end to end).
`DelayProxy` runs one in its own process, so its work never shares the benchmark's GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType

LOOPBACK = "127.0.0.1"
CHUNK_BYTES = 65536


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    """Copy reader to writer, each chunk held until `delay_s` after it was read."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait_s = due - loop.time()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()

    sender = asyncio.create_task(send())
    try:
        while True:
            data = await reader.read(CHUNK_BYTES)
            queue.put_nowait((loop.time() + delay_s, data))
            if not data:
                break
        await sender
    except (OSError, asyncio.IncompleteReadError):
        sender.cancel()


async def _serve(delay_s: float, targets: list[int]) -> None:
    """One listener per target port; print their ports, then forward until cancelled."""

    def handler(target: int) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
            try:
                upstream_r, upstream_w = await asyncio.open_connection(LOOPBACK, target)
            except OSError:
                client_w.close()
                return
            await asyncio.gather(_pipe(client_r, upstream_w, delay_s),
                                 _pipe(upstream_r, client_w, delay_s), return_exceptions=True)
            for writer in (client_w, upstream_w):
                writer.close()
        return handle

    servers = [await asyncio.start_server(handler(t), LOOPBACK, 0) for t in targets]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    print("ready " + " ".join(str(p) for p in ports), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


class DelayProxy:
    """`bench/proxy.py` in its own process: `ports[i]` forwards to `targets[i]` with the delay."""

    def __init__(self, targets: list[int], one_way_delay_ms: float, log: Path) -> None:
        self.targets = targets
        self.delay_ms = one_way_delay_ms
        self.log = log
        self.ports: list[int] = []
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> DelayProxy:
        argv = [sys.executable, str(Path(__file__).resolve()), "--delay-ms", str(self.delay_ms)]
        for port in self.targets:
            argv += ["--target", str(port)]
        with open(self.log, "w") as stderr:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            ready, _, _ = select.select([self.proc.stdout], [], [], 1.0)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith("ready "):
                    self.ports = [int(p) for p in line.split()[1:]]
                    return self
        self.close()
        raise RuntimeError(f"delay proxy did not start: {self.log.read_text()[-500:]}")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def close(self) -> None:
        """SIGTERM; SIGKILL its own process group if it does not stop."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay per chunk")
    parser.add_argument("--target", type=int, action="append", required=True,
                        help="a loopback port to forward to (one listener each)")
    args = parser.parse_args()
    asyncio.run(_serve(args.delay_ms / 1000.0, args.target))


if __name__ == "__main__":
    main()
