"""A proxy that the demo runs in place of the agent: it starts the real one (the command after the
mode), forwards everything, but loses one kind of reply with the connection. Standalone on
purpose: it imports nothing from gpuconsole.

    python3 lossy_agent.py reserve python3 -S -c BOOTSTRAP
        drops the connection instead of forwarding a successful `reserve` reply: the node has
        committed the grant, the client never hears of it;
    python3 lossy_agent.py granted:MARKER python3 -S -c BOOTSTRAP
        drops the connection instead of forwarding a waiter's news that it was granted (a `poll` or
        `reattach` reply), then plays an unreachable node (the agent exits at once) for as long as
        the file MARKER exists.
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
    mode, command = sys.argv[1], sys.argv[2:]
    marker = mode.partition(":")[2]
    if marker and os.path.exists(marker):
        sys.stderr.write("lossy_agent: node down\n")
        sys.exit(1)
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    to_agent, from_agent = child.stdin, child.stdout
    ops: dict[Any, str] = {}  # request id -> op

    def requests() -> None:
        source = sys.stdin.buffer
        for raw in iter(source.readline, b""):
            if raw.strip().lstrip(b"z").isdigit():  # the length-prefixed program, deflated or not (when asked)
                to_agent.write(raw + source.read(int(raw.lstrip(b"z"))))
                to_agent.flush()
                continue
            message = _message(raw)
            ops[message.get("id")] = str(message.get("op"))  # before the agent can answer it
            to_agent.write(raw)
            to_agent.flush()
        to_agent.close()

    threading.Thread(target=requests, daemon=True).start()
    for raw in iter(from_agent.readline, b""):
        message = _message(raw)
        op = ops.get(message.get("id"))
        if mode == "reserve" and message.get("ok") and op == "reserve":
            os._exit(0)  # committed on the node; the reply is lost with the connection
        granted = message.get("ok") and (message.get("result") or {}).get("state") == "granted"
        if marker and granted and op in ("poll", "reattach"):
            with open(marker, "w"):
                pass
            os._exit(0)  # granted on the node; the waiter hears nothing more from it
        sys.stdout.buffer.write(raw)
        sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
