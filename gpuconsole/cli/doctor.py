"""`gpuconsole doctor`: config, SSH, python3, driver and state dir on every node, with fixes."""

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


def run_doctor(registry: Registry, opts: DoctorArgs) -> int:
    config = registry.config
    report = asyncio.run(_doctor(registry))
    failed = [c for node in report for c in node["checks"] if not c["ok"]]
    if opts.json:
        print_json({"config": str(config.path), "agent": agent_digest(), "nodes": report})
    else:
        say(f"config {config.path}: ok ({len(registry.nodes)} nodes), agent {agent_digest()}")
        for node in report:
            for check in node["checks"]:
                mark = "ok  " if check["ok"] else "FAIL"
                say(f"{mark} {node['node']:<16} {check['check']:<11} {check['detail']}")
                if not check["ok"] and check.get("fix"):
                    say(f"     fix: {check['fix']}")
            if node.get("setup"):
                say(f"     service-mode setup for {node['node']} (as an admin on the node):")
                for step in node["setup"]:
                    say(f"       {step}")
    if any(c["check"] == "ssh" for c in failed):
        return int(ExitCode.UNREACHABLE)
    return int(ExitCode.INTERNAL) if failed else int(ExitCode.OK)


async def _doctor(registry: Registry) -> list[dict[str, Any]]:
    async with Fleet(registry, owns=True) as fleet:
        results = await fleet.call_all("doctor")
        report = []
        for cfg in fleet.node_configs():
            result = results.get(cfg.name)
            if isinstance(result, GpuConsoleError) or result is None:
                report.append({"node": cfg.name, "checks": [{
                    "check": "ssh", "ok": False, "detail": str(result),
                    "fix": getattr(result, "fix", None)  # a host-key refusal knows its exact fix
                    or "check host, port, user, identity_file and known_hosts for this node",
                }]})
                continue
            hello = fleet.hello(cfg.name)
            who = f"{hello.user}@{hello.hostname}" if hello is not None else "None@None"
            ssh = {"check": "ssh", "ok": True, "detail": who, "fix": None}
            entry: dict[str, Any] = {"node": cfg.name, "mode": cfg.mode, "checks": [ssh, *result["checks"]]}
            if cfg.mode == "service" and any(not c["ok"] and c["check"] in SERVICE_CHECKS for c in entry["checks"]):
                entry["setup"] = node_steps(cfg)
            report.append(entry)
        return report


# The checks that the service-mode setup (node-install's steps) fixes.
SERVICE_CHECKS = ("mode", "service_agent", "state_dir")
