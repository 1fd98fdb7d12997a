"""The `tui` group: the console polling N nodes, headless (run_test) and in a real terminal (tmux):
CPU share, key to repaint, first paint."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from drivers import DemoProcess, Tmux
from harness import Check, Result, bench_env, cli_argv, ms, percentile, proc_cpu_ns, proc_cpu_s
from plan import Plan

from gpuconsole.config import Config, load_config

UP_TIMEOUT_S = 120.0
KEY_TIMEOUT_S = 5.0
# Fresh interpreter: create the app without polling, mount it headless, check the node rows.
FIRST_PAINT_SCRIPT = """\
import time
started = time.monotonic()
import asyncio, json, sys
from gpuconsole.config import load_config
from gpuconsole.tui.app import GpuConsoleApp
imported = time.monotonic()

async def main() -> None:
    config = load_config(sys.argv[1])
    app = GpuConsoleApp(config, poll=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        rows = app.query_one("#nodes").row_count
        painted = time.monotonic()
    print(json.dumps({"started": started, "imported": imported, "painted": painted,
                      "rows": rows, "nodes": len(config.nodes)}))

asyncio.run(main())
"""


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _tui_pilot(config: Config, plan: Plan) -> dict[str, Any]:
    """Headless app polling N nodes: CPU share once all are up, then key-to-repaint latency."""
    from textual import events

    from gpuconsole.model.fleet import Health
    from gpuconsole.tui.app import GpuConsoleApp

    names = [n.name for n in config.nodes]
    app = GpuConsoleApp(config, poll=True)
    async with app.run_test(size=(120, 40)) as pilot:
        started = time.monotonic()
        while True:
            up = sum(app.fleet.nodes[n].health() is Health.UP for n in names)
            if up == len(names):
                break
            if time.monotonic() - started > UP_TIMEOUT_S:
                raise RuntimeError(f"tui: {up}/{len(names)} nodes up after {UP_TIMEOUT_S:g} s")
            await pilot.pause(0.05)
        all_up_s = time.monotonic() - started
        assert app.poller is not None
        event_count = [0]
        forward = app.poller.on_event

        def counting(event: Any) -> None:
            event_count[0] += 1
            forward(event)

        app.poller.on_event = counting  # bench-side counter of poll events in the window
        cpu_before_s, wall_before_s = _cpu_s(), time.monotonic()
        await asyncio.sleep(plan.tui_cpu_s)
        cpu_s, wall_s = _cpu_s() - cpu_before_s, time.monotonic() - wall_before_s
        window_events = event_count[0]

        pilot_ms = await _key_latencies(app, plan.tui_presses, pilot.press, pilot.pause)

        async def deliver(key: str) -> None:
            event = events.Key(key, None)  # what the terminal driver's input thread posts
            event.set_sender(app)
            app.post_message(event)

        direct_ms = await _key_latencies(app, plan.tui_presses, deliver, asyncio.sleep)
    return {"cpu_pct": 100.0 * cpu_s / wall_s, "cpu_s": cpu_s, "wall_s": wall_s,
            "poll_events_in_window": window_events, "all_up_s": all_up_s, "pilot_key_ms": pilot_ms,
            "direct_key_ms": direct_ms}


async def _key_latencies(app: Any, presses: int, press: Callable[[str], Awaitable[None]],
                         pause: Callable[[float], Awaitable[None]]) -> list[float]:
    """Walk the node table down and up: ms from key delivery until the GPU panel names the node."""
    from textual.widgets import DataTable

    table = app.query_one("#nodes", DataTable)
    gpus = app.query_one("#gpus")
    rng = random.Random(1)
    direction = "down"
    key_ms: list[float] = []
    for _ in range(presses):
        row = table.cursor_row
        if row >= table.row_count - 1:
            direction = "up"
        elif row <= 0:
            direction = "down"
        target = table.ordered_rows[row + (1 if direction == "down" else -1)].key.value
        pressed = time.perf_counter()
        await press(direction)
        while not str(gpus.border_title).endswith(f" {target}"):
            if time.perf_counter() - pressed > KEY_TIMEOUT_S:
                raise RuntimeError(f"tui: {direction} did not select {target} "
                                   f"(title {gpus.border_title!r})")
            await pause(0)
        key_ms.append(ms(time.perf_counter() - pressed))
        await asyncio.sleep(rng.uniform(0.02, 0.08))  # spread presses over poll/render phases
    return key_ms


def _first_paint_headless(config_path: Path, script: Path) -> dict[str, float]:
    """One fresh interpreter: spawn → headless mount with every node's row present."""
    spawned = time.monotonic()
    out = subprocess.run([sys.executable, str(script), str(config_path)], capture_output=True,
                         text=True, timeout=60, env=bench_env(), stdin=subprocess.DEVNULL,
                         check=False)
    if out.returncode != 0:
        raise RuntimeError(f"first paint script exit {out.returncode}: {out.stderr[-500:]}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    if data["rows"] != data["nodes"]:
        raise RuntimeError(f"first paint: {data['rows']}/{data['nodes']} node rows")
    return {"from_spawn_ms": ms(data["painted"] - spawned),
            "interpreter_start_ms": ms(data["started"] - spawned),
            "imports_ms": ms(data["imported"] - data["started"]),
            "mount_ms": ms(data["painted"] - data["imported"])}


def _tmux_gone(tmux: Tmux, session: str, timeout_s: float = 15.0) -> bool:
    """Quit the app with `q`; True once its session is gone (killed after the timeout)."""
    tmux.send_keys(session, "q")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if session not in tmux.cmd("list-sessions", "-F", "#{session_name}", check=False).split():
            return True
        time.sleep(0.02)
    tmux.cmd("kill-session", "-t", session, check=False)
    return False


def _tui_tmux(config_path: Path, names: list[str], plan: Plan) -> dict[str, Any]:
    """`python -m gpuconsole` in a real terminal (tmux): first paint, CPU share, key latency."""
    shell_command = "exec " + shlex.join(cli_argv("--config", str(config_path)))
    first = re.compile(rf"\b{re.escape(names[0])}\b")
    paint_ms: list[float] = []
    data: dict[str, Any] = {}
    with Tmux(120, 40) as tmux:
        data["tmux_version"] = tmux.cmd("-V").strip()
        for run in range(plan.first_paint_runs + 1):  # run 0 is a warm-up
            session = f"app{run}"
            launched = time.monotonic()
            tmux.new_session(session, shell_command)
            seen, _ = tmux.wait_for(session, lambda text: bool(first.search(text)), 30.0)
            if run:
                paint_ms.append(ms(seen - launched))
            if run == plan.first_paint_runs:
                data.update(_tmux_load(tmux, session, names, launched, plan))
            data.setdefault("quit_cleanly", []).append(_tmux_gone(tmux, session))
        data["echo_floor_ms"] = _tmux_echo_floor(tmux, plan.tui_presses)
    data["first_paint_ms"] = paint_ms
    return data


def _tmux_echo_floor(tmux: Tmux, presses: int) -> list[float]:
    """The instrument's own latency: send-keys `x` to the idle pane until capture shows its echo."""
    samples: list[float] = []
    for _ in range(presses):
        before = tmux.capture("idle").count("x")
        pressed = time.monotonic()
        tmux.send_keys("idle", "x")
        seen, _ = tmux.wait_for("idle", lambda text, n=before: text.count("x") > n, KEY_TIMEOUT_S,
                                interval_s=0.0)
        samples.append(ms(seen - pressed))
    return samples


def _tmux_load(tmux: Tmux, session: str, names: list[str], launched: float,
               plan: Plan) -> dict[str, Any]:
    """With every node up: the app's CPU from /proc over the window, then Down/Up latency."""
    all_up = re.compile(rf"nodes\s+{len(names)}/{len(names)} up")
    up_seen, _ = tmux.wait_for(session, lambda text: bool(all_up.search(text)), UP_TIMEOUT_S,
                               interval_s=0.1)
    pid = tmux.pane_pid(session)
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
    if "gpuconsole" not in cmdline:
        raise RuntimeError(f"tmux pane runs {cmdline!r}, not the app")
    server = tmux.server_pid()
    ticks_before_s, ns_before, server_before_ns = proc_cpu_s(pid), proc_cpu_ns(pid), \
        proc_cpu_ns(server)
    wall_before_s = time.monotonic()
    time.sleep(plan.tui_cpu_s)  # the measurement window; nothing polls the pane meanwhile
    wall_s = time.monotonic() - wall_before_s
    ticks_s, ns_after, server_after_ns = (proc_cpu_s(pid) - ticks_before_s, proc_cpu_ns(pid),
                                          proc_cpu_ns(server))
    cpu_s = (ns_after - ns_before) / 1e9 if ns_before is not None and ns_after else ticks_s
    server_pct = (100.0 * (server_after_ns - server_before_ns) / 1e9 / wall_s
                  if server_before_ns is not None and server_after_ns else None)
    key_ms: list[float] = []
    rng = random.Random(2)
    row, key = 0, "Down"  # the app starts on the first node
    for _ in range(plan.tui_presses):
        if row >= len(names) - 1:
            key = "Up"
        elif row <= 0:
            key = "Down"
        row += 1 if key == "Down" else -1
        title = re.compile(rf"GPUs\W+{re.escape(names[row])}\b")
        pressed = time.monotonic()
        tmux.send_keys(session, key)
        seen, _ = tmux.wait_for(session, lambda text, pattern=title: bool(pattern.search(text)),
                                KEY_TIMEOUT_S, interval_s=0.0)
        key_ms.append(ms(seen - pressed))
        time.sleep(rng.uniform(0.02, 0.08))  # spread presses over poll/render phases
    return {"pid": pid, "all_up_after_launch_s": up_seen - launched, "wall_s": wall_s,
            "cpu_pct": 100.0 * cpu_s / wall_s, "cpu_pct_ticks": 100.0 * ticks_s / wall_s,
            "tmux_server_cpu_pct": server_pct, "key_ms": key_ms}


TUI_CPU_BUDGET, TUI_KEY_BUDGET, TUI_PAINT_BUDGET = "≤ 10% of one core", "p95 ≤ 50 ms", "≤ 1000 ms"


@contextlib.contextmanager
def tui_demo(plan: Plan, work: Path) -> Any:
    """The demo (N nodes x 8 GPUs, own process) shared by the headless and terminal steps."""
    with DemoProcess(work / "tui", plan.tui_nodes) as demo:
        yield demo.config_path


def bench_tui_headless(plan: Plan, work: Path, config_path: Path) -> list[Result]:
    """The console in-process (run_test) polling N nodes: CPU share, key latency; first paint."""
    label = f"{plan.tui_nodes} nodes x 8 GPUs"
    config = load_config(str(config_path))
    pilot = asyncio.run(_tui_pilot(config, plan))
    script = work / "first_paint.py"
    script.write_text(FIRST_PAINT_SCRIPT)
    paints = [_first_paint_headless(config_path, script)
              for _ in range(plan.first_paint_runs + 1)][1:]  # run 0 is a warm-up
    return [
        Result(f"tui CPU, headless (run_test), {label}, {plan.tui_cpu_s:g} s", "tui", "% core",
               value=pilot["cpu_pct"], budget=TUI_CPU_BUDGET, checks=[Check("value", "<=", 10.0)],
               notes=f"{pilot['poll_events_in_window']} poll events in the window; headless "
                     "renders frames but does not write them",
               extra={k: pilot[k] for k in ("cpu_s", "wall_s", "poll_events_in_window",
                                            "all_up_s")}),
        Result(f"tui key to repaint (pilot.press → GPU panel title), headless, {label}", "tui",
               "ms", pilot["pilot_key_ms"], budget=TUI_KEY_BUDGET,
               checks=[Check("p95", "<=", 50.0)],
               notes="pilot.press until #gpus border_title names the new node; pilot.press "
                     "itself waits for an idle process twice (≥ 2 x 20 ms sleeps)"),
        Result(f"tui key to repaint (key event → GPU panel title), headless, {label}", "tui",
               "ms", pilot["direct_key_ms"], budget=TUI_KEY_BUDGET,
               checks=[Check("p95", "<=", 50.0)],
               notes="events.Key posted to the app, as the terminal driver does, until #gpus "
                     "border_title names the new node (state set; the frame follows)"),
        Result(f"tui first paint, fresh process, headless, {label}", "tui", "ms",
               [p["from_spawn_ms"] for p in paints], budget=TUI_PAINT_BUDGET,
               checks=[Check("median", "<=", 1000.0)],
               notes="spawn → run_test mounted with every node's row (poll=False)",
               extra={key: percentile([p[key] for p in paints], 50)
                      for key in ("interpreter_start_ms", "imports_ms", "mount_ms")}),
    ]


def bench_tui_terminal(plan: Plan, config_path: Path) -> list[Result]:
    """`python -m gpuconsole` in tmux polling N nodes: first paint, CPU share, key to screen."""
    if shutil.which("tmux") is None:
        print("[bench] tui/terminal: tmux not found, skipped", file=sys.stderr)
        return []
    label = f"{plan.tui_nodes} nodes x 8 GPUs"
    names = [n.name for n in load_config(str(config_path)).nodes]
    terminal = _tui_tmux(config_path, names, plan)
    return [
        Result(f"tui CPU, real terminal (tmux 120x40), {label}, {plan.tui_cpu_s:g} s", "tui",
               "% core", value=terminal["cpu_pct"], budget=TUI_CPU_BUDGET,
               checks=[Check("value", "<=", 10.0)],
               notes=f"/proc schedstat of the app; /proc stat ticks say "
                     f"{terminal['cpu_pct_ticks']:.2f}%; tmux server (not counted) "
                     f"{terminal['tmux_server_cpu_pct'] or math.nan:.2f}%",
               extra={k: v for k, v in terminal.items()
                      if k not in ("key_ms", "first_paint_ms", "echo_floor_ms")}),
        Result(f"tui key to repaint (Down/Up → title on screen), real terminal, {label}", "tui",
               "ms", terminal["key_ms"], budget=TUI_KEY_BUDGET, checks=[Check("p95", "<=", 50.0)],
               notes="tmux send-keys until capture-pane shows the new node in the GPU panel "
                     "title; includes one tmux client spawn and the capture polling"),
        Result("tmux instrument floor: send-keys → echo seen by capture-pane", "tui", "ms",
               terminal["echo_floor_ms"],
               notes="`cat` in an idle pane: one tmux client spawn plus capture polling"),
        Result(f"tui first paint, real terminal (tmux), {label}", "tui", "ms",
               terminal["first_paint_ms"], budget=TUI_PAINT_BUDGET,
               checks=[Check("median", "<=", 1000.0)],
               notes="tmux new-session → first capture-pane showing the first node name"),
    ]
