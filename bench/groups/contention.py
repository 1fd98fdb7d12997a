"""The `contention` group: N clients, each with its own connection, reserve and release on one node;
throughput and a client-side double-allocation check."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from drivers import DemoProcess
from harness import Check, Result, ms
from plan import Plan

from gpuconsole.config import NodeConfig, load_config
from gpuconsole.ssh.connection import AgentError, NodeConnection
from groups.common import TTL_S, new_req_id


@dataclass
class _Contention:
    """Client-side view of who holds which GPU, plus counters; one event loop, so no lock."""

    held: dict[int, int]
    violations: list[str]
    latencies_ms: list[float]
    tokens: list[int]
    granted: int = 0
    refused: int = 0
    busy: int = 0
    released: int = 0


async def _client(index: int, conn: NodeConnection, ops: int, shared: _Contention) -> None:
    done = 0
    while done < ops:
        started = time.perf_counter()
        try:
            lease = await conn.request("reserve", {"gpus": 1, "ttl_s": TTL_S, "req_id": new_req_id()})
        except AgentError as exc:
            if exc.code not in ("insufficient", "busy"):
                raise
            if exc.code == "busy":
                shared.busy += 1  # the node's lock wait (10 s) ran out
            else:
                shared.refused += 1
            shared.latencies_ms.append(ms(time.perf_counter() - started))
            done += 1
            await asyncio.sleep(0)  # let the holders release
            continue
        shared.latencies_ms.append(ms(time.perf_counter() - started))
        done += 1
        shared.granted += 1
        shared.tokens.append(int(lease["token"]))
        for gpu in lease["gpus"]:
            other = shared.held.get(gpu)
            if other is not None and other != index:
                shared.violations.append(f"GPU {gpu} granted to client {index} while client "
                                         f"{other} held it (lease {lease['id']})")
            shared.held[gpu] = index
        if done >= ops:
            break
        # Forget the GPUs before asking: the node may re-grant them as soon as it commits.
        for gpu in lease["gpus"]:
            if shared.held.get(gpu) == index:
                del shared.held[gpu]
        started = time.perf_counter()
        await conn.request("release", {"id": lease["id"], "req_id": new_req_id()})
        shared.latencies_ms.append(ms(time.perf_counter() - started))
        shared.released += 1
        done += 1


async def _contention(cfg: NodeConfig, plan: Plan) -> tuple[_Contention, float, int]:
    conns = await asyncio.gather(*(NodeConnection.open(cfg) for _ in range(plan.clients)))
    shared = _Contention({}, [], [], [])
    try:
        started = time.perf_counter()
        await asyncio.gather(*(_client(i, c, plan.ops_per_client, shared)
                               for i, c in enumerate(conns)))
        elapsed_s = time.perf_counter() - started
        leftover = await conns[0].request("reservations")
        for lease in leftover.get("reservations", []):
            await conns[0].request("release", {"id": lease["id"], "req_id": new_req_id()})
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    return shared, elapsed_s, len(leftover.get("reservations", []))


def bench_contention(plan: Plan, work: Path) -> list[Result]:
    """N clients, each with its own connection, reserve 1 GPU / release on one 8-GPU node."""
    with DemoProcess(work / "contention", 1) as demo:
        cfg = load_config(str(demo.config_path)).nodes[0]
        shared, elapsed_s, leftover = asyncio.run(_contention(cfg, plan))
    total_ops = shared.granted + shared.refused + shared.busy + shared.released
    duplicate_tokens = len(shared.tokens) - len(set(shared.tokens))
    label = f"{plan.clients} clients x {plan.ops_per_client} ops, 1 node x 8 GPUs"
    extra = {"ops": total_ops, "elapsed_s": elapsed_s, "granted": shared.granted,
             "refused_no_capacity": shared.refused, "refused_lock_busy": shared.busy,
             "released": shared.released,
             "committed_ops_per_s": (shared.granted + shared.released) / elapsed_s,
             "duplicate_tokens": duplicate_tokens, "leases_left_at_end": leftover,
             "violations": shared.violations[:10]}
    return [
        Result(f"contention throughput, {label}", "contention", "ops/s",
               value=total_ops / elapsed_s, budget="≥ 200 ops/s",
               checks=[Check("value", ">=", 200.0)], extra=extra),
        Result(f"contention double allocations, {label}", "contention", "count",
               value=float(len(shared.violations) + duplicate_tokens), budget="0",
               checks=[Check("value", "==", 0.0)],
               notes="client-side check after every grant, plus unique fencing tokens"),
        Result(f"contention per-op latency, {label}", "contention", "ms", shared.latencies_ms,
               notes="informational: every reply, granted, refused or released"),
    ]
