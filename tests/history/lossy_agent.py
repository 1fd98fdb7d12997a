"""A proxy that the demo runs in place of the agent: it starts the real one (the command in argv),
forwards everything, but drops the connection instead of forwarding a successful `reserve` reply.
The node has committed the grant; the client never hears of it (a connection lost at the worst
moment, deterministically). Standalone on purpose: it imports nothing from gpuconsole.

    python3 lossy_agent.py python3 -S -c BOOTSTRAP
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import Any


def _message(raw: bytes) -> dict[str, Any]:
    try:
        message = json.loads(raw)
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}


def main() -> None:
    child = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    to_agent, from_agent = child.stdin, child.stdout
    reserves: set[Any] = set()

    def requests() -> None:
        source = sys.stdin.buffer
        length = source.readline()  # the bootstrap's length-prefixed program
        to_agent.write(length + source.read(int(length or b"0")))
        to_agent.flush()
        for raw in iter(source.readline, b""):
            message = _message(raw)
            if message.get("op") == "reserve":
                reserves.add(message.get("id"))  # before the agent can answer it
            to_agent.write(raw)
            to_agent.flush()
        to_agent.close()

    threading.Thread(target=requests, daemon=True).start()
    for raw in iter(from_agent.readline, b""):
        message = _message(raw)
        if message.get("ok") and message.get("id") in reserves:
            os._exit(0)  # committed on the node; the reply is lost with the connection
        sys.stdout.buffer.write(raw)
        sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
