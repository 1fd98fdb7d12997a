"""`gpuconsole audit`: every node's ledger of grants and jobs (node/ledger.py), its hash chain
checked by the node; the records as a table or JSON, and a line per node saying whether its chain
is whole. A break anywhere exits 7 (ExitCode.INTEGRITY). `gpuconsole usage`: the figures
core/usage.py computes from the same ledgers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpuconsole.cli.keeper import open_fleet
from gpuconsole.cli.options import AuditArgs, UsageArgs
from gpuconsole.cli.output import console, print_json, say, warn
from gpuconsole.cli.tables import Column, fit_table
from gpuconsole.config import local_state_dir
from gpuconsole.durations import format_duration_s, parse_duration_s
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
    witness = Witness(members.config.path)
    if witness.heads:
        request["witnesses"] = witness.heads

    answers = _ledgers(members, request, names)
    nodes, records, errors = [], [], []
    for node in sorted(answers):
        answer = answers[node]
        if isinstance(answer, GpuConsoleError):
            errors.append({"node": node, "error": str(answer)})
            continue
        breaks = list(answer["breaks"])
        seen = witness.heads.get(node)
        if answer.get("witness") == "gone" and seen is not None:  # a consistent rewrite the chain cannot show
            breaks.append({"segment": 0, "line": 0, "seq": seen["seq"],
                           "problem": f"the ledger no longer holds record {seen['seq']} (hash {seen['hash'][:12]}…) "
                                      "that an earlier audit saw: rewritten or cut"})
        elif not breaks:
            witness.saw(node, answer["head"])
        nodes.append({"node": node, "ok": not breaks, "count": answer["count"],
                      "head_seq": answer["head"].get("seq"), "breaks": breaks})
        records += [dict(record, node=node) for record in answer["records"]]
    witness.save()
    records.sort(key=lambda r: (str(r.get("at") or ""), r["node"], r["seq"]))
    if args.json:
        print_json({"nodes": nodes, "records": records, "errors": errors})
    else:
        _show(nodes, records, errors)
    if any(not n["ok"] for n in nodes):
        return int(ExitCode.INTEGRITY)
    return int(ExitCode.UNREACHABLE) if errors and not nodes else int(ExitCode.OK)


class Witness:
    """The ledger heads this user's audits saw, per config (`$XDG_STATE_HOME/gpuconsole/ledger-heads-
    <config hash>.json`): a later audit asks each node whether its chain still holds the head seen,
    so rewriting a whole ledger consistently is caught by anyone who audited before (an anchor
    outside the node; best effort: a file that cannot be read or written only loses it)."""

    def __init__(self, config_path: Path) -> None:
        from gpuconsole.node.fileio import read_regular

        try:
            resolved = str(config_path.resolve())
        except OSError:
            resolved = str(config_path)
        self.path = local_state_dir() / f"ledger-heads-{hashlib.sha256(resolved.encode()).hexdigest()[:10]}.json"
        self.heads: dict[str, dict[str, Any]] = {}
        try:
            data = json.loads(read_regular(str(self.path), limit=1 << 20))
        except (OSError, ValueError):
            data = {}
        if isinstance(data, dict):
            self.heads = {str(k): {"seq": v["seq"], "hash": v["hash"]} for k, v in data.items()
                          if isinstance(v, dict) and isinstance(v.get("seq"), int) and isinstance(v.get("hash"), str)}
        self._changed = False

    def saw(self, node: str, head: dict[str, Any]) -> None:
        if isinstance(head.get("seq"), int) and isinstance(head.get("hash"), str) \
                and self.heads.get(node) != {"seq": head["seq"], "hash": head["hash"]}:
            self.heads[node] = {"seq": head["seq"], "hash": head["hash"]}
            self._changed = True

    def save(self) -> None:
        if not self._changed:
            return
        from gpuconsole.node.fileio import write_atomic

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(str(self.path), json.dumps(self.heads, sort_keys=True).encode(), 0o600)
        except OSError as exc:
            warn(f"cannot keep the ledger heads seen in {self.path}: {exc}")


def _ledgers(members: Members, request: dict[str, Any],
             names: list[str] | None) -> dict[str, dict[str, Any] | GpuConsoleError]:
    """Every (named) node's `ledger` answer, or its error."""
    async def go() -> dict[str, dict[str, Any] | GpuConsoleError]:
        async with open_fleet(members) as fleet:
            return await fleet.call_all("ledger", request, names)

    return asyncio.run(go())


def run_usage(members: Members, args: UsageArgs) -> int:
    from gpuconsole.core.usage import usage

    until_s = time.time()
    since_s = until_s - parse_duration_s(args.since, what="--since")
    answers = _ledgers(members, {}, None)
    ledgers = {n: a["records"] for n, a in answers.items() if not isinstance(a, GpuConsoleError)}
    errors = [{"node": n, "error": str(a)} for n, a in sorted(answers.items()) if isinstance(a, GpuConsoleError)]
    instances = []
    if members.config.aws is not None:  # cloud hours and dollars by owner: the managed instances EC2 lists
        from gpuconsole.cloud.ec2 import Ec2

        try:
            instances = Ec2(members.config.aws).describe(states=None)
        except GpuConsoleError as exc:
            errors.append({"node": "cloud", "error": str(exc)})
    rows = [r.to_json() for r in usage(ledgers, since_s, until_s, args.by, instances)]
    broken = sorted(n for n, a in answers.items() if not isinstance(a, GpuConsoleError) and a["breaks"])
    for node in broken:  # figures from a ledger whose chain is broken cannot be vouched for
        warn(f"{node}: its ledger's chain is broken (see `gpuconsole audit --node {node}`)")
    if args.json:
        print_json({"since": iso_utc(since_s), "until": iso_utc(until_s), "by": args.by, "rows": rows,
                    "errors": errors})
    elif args.csv:
        _csv(rows, args.by)
    else:
        _usage_table(rows, args.by)
        for error in errors:
            warn(f"{error['node']}: {error['error']}")
    return int(ExitCode.UNREACHABLE) if errors and not ledgers else int(ExitCode.OK)


def _outcomes(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({outcome for row in rows for outcome in row["job_gpu_hours"]})


def _csv(rows: list[dict[str, Any]], by: str) -> None:
    import csv
    import sys

    writer = csv.writer(sys.stdout, lineterminator="\n")
    outcomes = _outcomes(rows)
    extra = ("gpu_hours_idle", "gpu_hours_unreserved", "cloud_hours", "cloud_usd")  # added after the first ones
    writer.writerow([by, "gpu_hours_held", *(f"job_gpu_hours_{o}" for o in outcomes), "queue_wait_n",
                     "queue_wait_p50_s", "queue_wait_p95_s", *extra])
    for row in rows:  # a node's text in a spreadsheet: a leading =, +, - or @ would be a formula
        key = row["key"] if row["key"][:1] not in ("=", "+", "-", "@") else "'" + row["key"]
        wait = row["queue_wait_s"]
        writer.writerow([key, row["gpu_hours_held"], *(row["job_gpu_hours"].get(o, 0.0) for o in outcomes),
                         wait["n"], *("" if wait[p] is None else wait[p] for p in ("p50", "p95")),
                         *(row[name] for name in extra)])


def _usage_table(rows: list[dict[str, Any]], by: str) -> None:
    if not rows:
        say("no usage in the window")
        return
    outcomes = _outcomes(rows)
    cloud = any(row["cloud_hours"] for row in rows)
    columns = (Column(by), Column("GPU-h held"), Column("idle", priority=4), Column("unreserved", priority=3),
               *(Column(f"job GPU-h {o}", priority=2) for o in outcomes), Column("queue wait p50/p95", priority=1),
               *((Column("cloud h", priority=5), Column("cloud $", priority=6)) if cloud else ()))
    body = [[row["key"], f"{row['gpu_hours_held']:.2f}", f"{row['gpu_hours_idle']:.2f}",
             f"{row['gpu_hours_unreserved']:.2f}", *(f"{row['job_gpu_hours'].get(o, 0.0):.2f}" for o in outcomes),
             _waits(row["queue_wait_s"]),
             *((f"{row['cloud_hours']:.2f}", f"${row['cloud_usd']:.2f}") if cloud else ())] for row in rows]
    out = console()
    out.print(fit_table("usage", columns, body, out.width))


def _waits(wait: dict[str, Any]) -> str:
    if not wait["n"]:
        return "-"
    return f"{format_duration_s(wait['p50'])} / {format_duration_s(wait['p95'])} ({wait['n']})"


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
            where = f"at segment {brk['segment']} line {brk['line']} " if brk["segment"] else ""
            say(f"{node['node']}: chain BROKEN {where}(seq {brk.get('seq')}): {brk['problem']}")
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
