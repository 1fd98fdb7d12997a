"""`gpuconsole gpu clear NODE:GPU`: an admin returns a GPU its node withheld for its health (a fresh
XID, uncorrectable ECC errors, pages or rows waiting for a reset: node/health.py) to the pool; the
node takes its error counters now as the new baseline. Not an admin: exit 4."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from gpuconsole.cli.keeper import open_fleet
from gpuconsole.cli.options import GpuArgs
from gpuconsole.cli.output import print_json, say
from gpuconsole.core.nodeapi import new_req_id
from gpuconsole.errors import UsageError

if TYPE_CHECKING:
    from gpuconsole.cli.keeper import Members


def parse_target(text: str) -> tuple[str, int]:
    """'node-01:3' → ('node-01', 3); anything else is a usage error (exit 2)."""
    node, _, index = text.rpartition(":")
    if not node or not index.isdigit():
        raise UsageError(f"gpu {text!r}: give NODE:GPU, e.g. node-01:3")
    return node, int(index)


def run_gpu(members: Members, args: GpuArgs) -> int:
    node, index = parse_target(args.target)
    name = members.node(node).name

    async def go() -> dict[str, Any]:
        async with open_fleet(members) as fleet:
            return await fleet.request(name, "gpu_clear", {"gpu": index, "req_id": new_req_id()})

    answer = asyncio.run(go())
    if args.json:
        print_json(dict(answer, node=name))
    elif answer["was_withheld"]:
        say(f"GPU {index} of {name} returned to the pool (it was withheld: {answer['reason']})")
    else:
        say(f"GPU {index} of {name} was not withheld; its error counters now are the baseline")
    return 0
