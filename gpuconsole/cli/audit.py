"""`gpuconsole audit`: every node's ledger of grants and jobs (node/ledger.py), its hash chain
checked by the node; the records as a table or JSON, and a line per node saying whether its chain
is whole. A break anywhere exits 7 (ExitCode.INTEGRITY)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from gpuconsole.cli.keeper import open_fleet
from gpuconsole.cli.options import AuditArgs
from gpuconsole.cli.output import console, print_json, say, warn
from gpuconsole.cli.tables import Column, fit_table
from gpuconsole.durations import parse_duration_s
from gpuconsole.errors import ExitCode, GpuConsoleError
from gpuconsole.format import iso_utc

if TYPE_CHECKING:
    from gpuconsole.cli.keeper import Members

COLUMNS = (Column("at"), Column("node"), Column("seq", priority=2), Column("event"), Column("id"),
           Column("owner"), Column("gpus", priority=1), Column("detail", priority=3))
SHOWN = 50  # the text table's newest records (JSON has all the nodes sent)


def run_audit(members: Members, args: AuditArgs) -> int:
    names = [members.node(args.node).name] if args.node else None
    request: dict[str, Any] = {}
    if args.since is not None:
        request["since"] = iso_utc(time.time() - parse_duration_s(args.since, what="--since"))
    if args.user is not None:
        request["user"] = args.user

    async def go() -> dict[str, dict[str, Any] | GpuConsoleError]:
        async with open_fleet(members) as fleet:
            return await fleet.call_all("ledger", request, names)

    answers = asyncio.run(go())
    nodes, records, errors = [], [], []
    for node in sorted(answers):
        answer = answers[node]
        if isinstance(answer, GpuConsoleError):
            errors.append({"node": node, "error": str(answer)})
            continue
        nodes.append({"node": node, "ok": not answer["breaks"], "count": answer["count"],
                      "head_seq": answer["head"].get("seq"), "breaks": answer["breaks"]})
        records += [dict(record, node=node) for record in answer["records"]]
    records.sort(key=lambda r: (str(r.get("at") or ""), r["node"], r["seq"]))
    if args.json:
        print_json({"nodes": nodes, "records": records, "errors": errors})
    else:
        _show(nodes, records, errors)
    if any(not n["ok"] for n in nodes):
        return int(ExitCode.INTEGRITY)
    return int(ExitCode.UNREACHABLE) if errors and not nodes else int(ExitCode.OK)


def _show(nodes: list[dict[str, Any]], records: list[dict[str, Any]], errors: list[dict[str, Any]]) -> None:
    if records:
        rows = [[str(r.get("at") or "-"), r["node"], str(r["seq"]), r["event"], str(r.get("id") or "-"),
                 str(r.get("owner") or "-"), ",".join(map(str, r.get("gpus") or [])) or "-", _detail(r)]
                for r in records[-SHOWN:]]
        out = console()
        out.print(fit_table("ledger", COLUMNS, rows, out.width))
    for node in nodes:
        if node["ok"]:
            say(f"{node['node']}: chain whole, {node['count']} records")
        for brk in node["breaks"]:
            say(f"{node['node']}: chain BROKEN at segment {brk['segment']} line {brk['line']} "
                f"(seq {brk.get('seq')}): {brk['problem']}")
    for error in errors:
        warn(f"{error['node']}: {error['error']}")


def _detail(record: dict[str, Any]) -> str:
    """What else a record says: why a grant ended, how a job ended, who acted for someone else."""
    parts = [str(record[k]) for k in ("reason", "state", "kind") if record.get(k)]
    if record.get("exit_code") is not None:
        parts.append(f"exit {record['exit_code']}")
    if record.get("backfill_for"):
        parts.append(f"backfilled before {record['backfill_for']}")
    if record.get("by") and record.get("by") != record.get("owner"):
        parts.append(f"by {record['by']}")
    return ", ".join(parts) or "-"
