"""`gpuconsole doctor`: config, local SSH files, SSH, python3, driver and state dir on every node,
and the `[cloud.aws]` credentials, with the fix for each problem.

Exit code: that of the first failed row in the order printed (nodes in config order, each node's
local files, then SSH, then the agent's rows; `[cloud.aws]` last), as `release` does for several
ids: 2 for a local file or config problem, 5 for a node that cannot be reached or cannot take a
change, the AWS error's own code for `[cloud.aws]`. Never 1 for a failed check.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gpuconsole.cli.node_install import node_steps
from gpuconsole.cli.options import DoctorArgs
from gpuconsole.cli.output import print_json, say
from gpuconsole.core.fleet import Fleet
from gpuconsole.core.registry import Registry
from gpuconsole.errors import ExitCode, GpuConsoleError
from gpuconsole.ssh.bundle import agent_digest
from gpuconsole.ssh.localfiles import local_checks

Row = dict[str, Any]


def run_doctor(registry: Registry, opts: DoctorArgs) -> int:
    document, code = examine(registry)
    if opts.json:
        print_json(document)
    else:
        show(document, len(registry.nodes))
    return code


def examine(registry: Registry) -> tuple[dict[str, Any], int]:
    """The doctor document (`--json`'s) and the exit code it stands for."""
    codes: list[int] = []
    nodes = asyncio.run(_doctor(registry, codes))
    document: dict[str, Any] = {"config": str(registry.config.path), "agent": agent_digest(), "nodes": nodes}
    if registry.config.aws is not None:
        from gpuconsole.cloud.access import check_access

        try:
            row: Row = {"check": "aws", "ok": True, "detail": check_access(registry.config.aws), "fix": None}
        except GpuConsoleError as exc:
            row = {"check": "aws", "ok": False, "detail": str(exc), "fix": "check [cloud.aws] in "
                   f"{registry.config.path} and your AWS credentials (AWS_PROFILE, `aws configure`)"}
            codes.append(_code(exc))
        document["cloud"] = [row]
    return document, codes[0] if codes else int(ExitCode.OK)


def show(document: dict[str, Any], node_count: int) -> None:
    """The human lines: one per check, the fix under each failure, a service node's setup."""
    say(f"config {document['config']}: ok ({node_count} nodes), agent {document['agent']}")
    entries = [*document["nodes"], *([{"node": "[cloud.aws]", "checks": document["cloud"]}]
                                     if "cloud" in document else [])]
    for entry in entries:
        for check in entry["checks"]:
            mark = "ok  " if check["ok"] else "FAIL"
            say(f"{mark} {entry['node']:<16} {check['check']:<11} {check['detail']}")
            if not check["ok"] and check.get("fix"):
                say(f"     fix: {check['fix']}")
        if entry.get("setup"):
            say(f"     service-mode setup for {entry['node']} (as an admin on the node):")
            for step in entry["setup"]:
                say(f"       {step}")


def _code(exc: BaseException | None) -> int:
    """A failed check's exit code: the error's own, else 5 (the node is not usable)."""
    if isinstance(exc, GpuConsoleError) and exc.exit_code not in (ExitCode.OK, ExitCode.INTERNAL):
        return int(exc.exit_code)
    return int(ExitCode.UNREACHABLE)


async def _doctor(registry: Registry, codes: list[int]) -> list[Row]:
    """Every node's rows in order; the exit code of each failed row is appended to ``codes``."""
    async with Fleet(registry, owns=True) as fleet:
        results = await fleet.call_all("doctor")
        report = []
        for cfg in fleet.node_configs():
            local = local_checks(cfg)
            codes.extend(c.code for c in local if not c.ok)
            checks = [c.row() for c in local]
            result = results.get(cfg.name)
            if isinstance(result, GpuConsoleError) or result is None:
                codes.append(_code(result))
                report.append({"node": cfg.name, "checks": [*checks, {
                    "check": "ssh", "ok": False, "detail": str(result),
                    "fix": getattr(result, "fix", None)  # a host-key refusal knows its exact fix
                    or "check host, port, user, identity_file and known_hosts for this node",
                }]})
                continue
            hello = fleet.hello(cfg.name)
            who = f"{hello.user}@{hello.hostname}" if hello is not None else "None@None"
            ssh = {"check": "ssh", "ok": True, "detail": who, "fix": None}
            codes.extend(int(ExitCode.UNREACHABLE) for c in result["checks"] if not c["ok"])
            entry: Row = {"node": cfg.name, "mode": cfg.mode, "checks": [*checks, ssh, *result["checks"]]}
            if cfg.mode == "service" and any(not c["ok"] and c["check"] in SERVICE_CHECKS for c in entry["checks"]):
                entry["setup"] = node_steps(cfg)
            report.append(entry)
        return report


# The checks that the service-mode setup (node-install's steps) fixes.
SERVICE_CHECKS = ("mode", "service_agent", "state_dir")
