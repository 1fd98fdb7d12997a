"""The `peers` group's lock step: `reserve` + `release` from fresh processes against the script an
admin writes instead: `flock` over `ssh`, one marker file per GPU under a lock on the node.

On a 1-node × 8-GPU demo, per repetition (alternating, repetition 0 a warm-up): `reserve --gpus 1
--json` then `release ID`, cold (GPUCONSOLE_KEEPER=0) and with a warm keeper where the checkout has
one; and the flock script's reserve (first free GPU, marker written) and release (marker removed),
each a new `ssh` process and connection. The script has no lease, fencing, durability or audit: it
is the floor a tool with those must be compared to, not an equal.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from drivers import DemoFleet
from harness import Check, Result, bench_env, cli_argv, ms, percentile
from plan import PeerPlan

from groups.peers import demo_target, keeper_available, run_checked, warm_keeper

# The GPU markers live next to the demo's state (GPUCONSOLE_BENCH_STATE_ROOT reaches every command).
FLOCK_DIR = '"$GPUCONSOLE_BENCH_STATE_ROOT/flock"'
FLOCK_RESERVE = (f"mkdir -p {FLOCK_DIR} && cd {FLOCK_DIR} && exec 9>lock && flock 9 && "
                 "for i in 0 1 2 3 4 5 6 7; do if [ ! -e gpu$i ]; then echo $$ > gpu$i; echo $i; exit 0; fi; "
                 "done; exit 3")
FLOCK_RELEASE = f"cd {FLOCK_DIR} && exec 9>lock && flock 9 && rm gpu%d"


def _gpuconsole_pair(config_path: Path, env: dict[str, str]) -> tuple[float, float]:
    """(reserve ms, release ms), each a fresh `python -m gpuconsole` process."""
    full_env = {**bench_env(), **env}
    wall, _, out = run_checked(cli_argv("--config", str(config_path), "reserve", "--gpus", "1", "--json"), full_env)
    grant = json.loads(out)
    release_wall, _, _ = run_checked(cli_argv("--config", str(config_path), "release", grant["id"]), full_env)
    return ms(wall), ms(release_wall)


def _flock_pair(ssh_config: Path, node: str) -> tuple[float, float]:
    wall, _, out = run_checked(["ssh", "-F", str(ssh_config), node, FLOCK_RESERVE])
    gpu = int(out.split()[0])
    release_wall, _, _ = run_checked(["ssh", "-F", str(ssh_config), node, FLOCK_RELEASE % gpu])
    return ms(wall), ms(release_wall)


def bench_lock(plan: PeerPlan, work: Path) -> list[Result]:
    """Cold and keeper-warm reserve + release against flock over ssh, alternating."""
    samples: dict[str, tuple[list[float], list[float]]] = {
        "gpuconsole": ([], []), "gpuconsole (keeper warm)": ([], []), "flock over ssh": ([], [])}
    rows: list[Result] = []
    keeper = keeper_available()
    with DemoFleet(work / "peers-lock", 1, 8) as demo:
        target = demo_target(demo, 8)
        with warm_keeper(demo, 1) if keeper else contextlib.nullcontext((None, frozenset())) as (keeper_env, _):
            if isinstance(keeper_env, str):
                rows.append(Result("lock gpuconsole (keeper warm): skipped", "peers", "ms", notes=keeper_env))
            for rep in range(plan.lock_pairs + 1):
                pairs = {"gpuconsole": _gpuconsole_pair(demo.config_path, {"GPUCONSOLE_KEEPER": "0"}),
                         "flock over ssh": _flock_pair(target.ssh_config, target.names[0])}
                if isinstance(keeper_env, dict):
                    pairs["gpuconsole (keeper warm)"] = _gpuconsole_pair(demo.config_path, keeper_env)
                if rep:
                    for kind, (reserve_ms, release_ms) in pairs.items():
                        samples[kind][0].append(reserve_ms)
                        samples[kind][1].append(release_ms)
    for kind, (reserve_ms, release_ms) in samples.items():
        if not reserve_ms:
            continue
        # Issue 14: with a warm keeper each of reserve and release p50 ≤ 120 ms, end to end.
        target = {"budget": "p50 ≤ 120 ms", "checks": [Check("p50", "<=", 120.0)]} if "keeper" in kind else {}
        rows += [Result(f"lock {kind} reserve, fresh process, 1 node", "peers", "ms", reserve_ms, **target),
                 Result(f"lock {kind} release, fresh process, 1 node", "peers", "ms", release_ms, **target)]
    floor = percentile(samples["flock over ssh"][0], 50) + percentile(samples["flock over ssh"][1], 50)
    for kind in ("gpuconsole", "gpuconsole (keeper warm)"):
        if samples[kind][0]:
            pair = percentile(samples[kind][0], 50) + percentile(samples[kind][1], 50)
            cold = {"budget": "≤ 2×", "checks": [Check("value", "<=", 2.0)]} if kind == "gpuconsole" else {}
            rows.append(Result(f"lock {kind} / flock over ssh, reserve + release", "peers", "x",
                               value=pair / floor, notes="ratio of the medians' sums, same run", **cold))
    return rows
