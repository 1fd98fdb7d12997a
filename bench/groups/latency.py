"""The `latency` group: the cold fan-out over links with a real round trip time.

Loopback has no latency and this kernel no `netem`, so a delay proxy (bench/proxy.py, its own
process) sits in front of every demo node and holds each chunk for RTT/2 in each direction. The
client config and an ssh_config point at the proxies' ports; their known_hosts entries
(`[127.0.0.1]:PROXYPORT`) carry the demo nodes' real host keys, so every connection still verifies
the node it reaches. `status --json` (cold), `pdsh` and `clush` (where installed) alternate per repetition,
direct and at each RTT; RTT 0 through the proxy is the control row for the proxy's own cost.
"""

from __future__ import annotations

import contextlib
import functools
import re
from pathlib import Path

from drivers import DemoProcess
from harness import Result, percentile
from plan import PeerPlan
from proxy import DelayProxy

from gpuconsole.config import load_config
from groups.common import Series, measured
from groups.peers import (
    COLD,
    PEERS,
    WARM,
    Target,
    demo_target,
    fanout_rows,
    installed_peers,
    keeper_available,
    run_gpuconsole,
    warm_keeper,
    write_ssh_config,
)

GPUS = 8
# A sequential OpenSSH loop is left out: at 100 ms it is N handshakes in a row, minutes at 64 nodes.
LATENCY_PEERS = ("pdsh -R ssh", "clush")


def proxied_files(demo: DemoProcess, base: Target, proxy_ports: dict[int, int], tag: str) -> tuple[Path, Target]:
    """A client config, known_hosts and ssh_config whose nodes are reached through the proxies.

    `proxy_ports` maps each node's real port to its proxy's port; the known_hosts line for
    `[127.0.0.1]:PROXYPORT` is the node's own host key line, so verification is unchanged.
    """
    root = demo.root / f"via-{tag}"
    root.mkdir(parents=True, exist_ok=True)
    config = load_config(str(demo.config_path))
    real_known_hosts = Path(str(config.nodes[0].known_hosts))
    keys: dict[int, str] = {}
    for line in real_known_hosts.read_text().splitlines():
        match = re.match(r"\[127\.0\.0\.1\]:(\d+) (.+)", line)
        if match:
            keys[int(match.group(1))] = match.group(2)
    known_hosts = root / "known_hosts"
    known_hosts.write_text("".join(f"[127.0.0.1]:{proxy_ports[port]} {keys[port]}\n" for port in proxy_ports))
    text = demo.config_path.read_text().replace(f'known_hosts = "{real_known_hosts}"',
                                                f'known_hosts = "{known_hosts}"')
    text = re.sub(r"(?m)^port = (\d+)$", lambda m: f"port = {proxy_ports[int(m.group(1))]}", text)
    config_path = root / "config.toml"
    config_path.write_text(text)
    nodes = [(n.name, proxy_ports[n.port], str(n.identity_file), str(known_hosts)) for n in config.nodes]
    ssh_config = write_ssh_config(root / "ssh_config", nodes)
    return config_path, Target(base.names, ssh_config, base.command, base.lines_per_node)


def _alternate(plan: PeerPlan, demo: DemoProcess, config_path: Path, target: Target,
               peers: list[str]) -> tuple[dict[str, Series], dict[str, list[int]]]:
    """Cold `status --json`, a keeper-warm one (where the checkout has the keeper) and the peers
    alternating; repetition 0 is a warm-up."""
    nodes = len(target.names)
    series = {COLD: Series.empty(), WARM: Series.empty(), **{peer: Series.empty() for peer in peers}}
    lines: dict[str, list[int]] = {peer: [] for peer in peers}
    keeper = warm_keeper(demo, nodes, config_path) if keeper_available() else contextlib.nullcontext(
        (None, frozenset()))
    with keeper as (keeper_env, kept):
        for rep in range(plan.latency_reps + 1):
            keep = rep > 0
            measured(demo, series[COLD] if keep else None,
                     functools.partial(run_gpuconsole, config_path, nodes), kept)
            if isinstance(keeper_env, dict):
                measured(demo, series[WARM] if keep else None,
                         functools.partial(run_gpuconsole, config_path, nodes, keeper_env), kept)
            _peers_once(demo, target, peers, series if keep else None, lines if keep else None, kept)
    return series, lines


def _peers_once(demo: DemoProcess, target: Target, peers: list[str], series: dict[str, Series] | None,
                lines: dict[str, list[int]] | None, kept: frozenset[int]) -> None:
    """One run of each peer; recorded unless series is None (a warm-up)."""
    for peer in peers:
        got = measured(demo, series[peer] if series is not None else None,
                       functools.partial(PEERS[peer][1], target), kept)
        if lines is not None:
            lines[peer].append(sum(got[n] for n in target.names))


def _latency_at(plan: PeerPlan, work: Path, nodes: int, peers: list[str]) -> list[Result]:
    """One demo of `nodes` nodes: direct, then through the proxies at each RTT."""
    results: list[Result] = []
    medians: dict[str, float] = {}
    with DemoProcess(work / f"latency-{nodes}", nodes, GPUS) as demo:
        base = demo_target(demo, GPUS)
        series, lines = _alternate(plan, demo, demo.config_path, base, peers)
        medians["direct"] = percentile(series[COLD].wall_ms, 50)
        results += fanout_rows("direct (no proxy)", nodes, series, lines, nodes * base.lines_per_node,
                               "latency", "loopback, no proxy: the reference for the control row")
        real_ports = [n.port for n in load_config(str(demo.config_path)).nodes]
        for rtt_ms in plan.latency_rtts_ms:
            tag = f"rtt{rtt_ms:g}"
            with DelayProxy(real_ports, rtt_ms / 2, demo.root / f"proxy-{tag}.log") as proxy:
                config_path, target = proxied_files(demo, base, dict(zip(real_ports, proxy.ports, strict=True)),
                                                    tag)
                series, lines = _alternate(plan, demo, config_path, target, peers)
            medians[tag] = percentile(series[COLD].wall_ms, 50)
            results += fanout_rows(f"RTT {rtt_ms:g} ms (proxy)", nodes, series, lines,
                                   nodes * target.lines_per_node, "latency",
                                   f"delay proxy: {rtt_ms / 2:g} ms each way per chunk")
    if "rtt0" in medians:
        results.append(Result(f"latency proxy's own cost (RTT 0 − direct), status --json, {nodes} nodes",
                              "latency", "ms", value=medians["rtt0"] - medians["direct"],
                              notes="control row: the zero-delay proxy against direct connections"))
    return results


def bench_latency(plan: PeerPlan, work: Path) -> list[Result]:
    """At each size: cold status, pdsh and clush (where installed), direct and at each RTT."""
    present, results = installed_peers()
    peers = [peer for peer in present if peer in LATENCY_PEERS]
    for nodes in plan.latency_nodes:
        results += _latency_at(plan, work, nodes, peers)
    return results
