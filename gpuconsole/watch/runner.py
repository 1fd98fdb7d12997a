"""The watcher's loop: the console's poller feeds the detector; every interval the tracker decides
what to send, actions run, and the state file is updated.

`--once` (cron) takes one snapshot round instead, retrying unreachable nodes once, judges, acts and
exits. Its idle windows come from the state file: each run adds one sample per GPU, so a reserved
GPU quiet in every run across `idle_s` is idle; runs up to ONCE_MAX_GAP_S apart join one window.
A node still unreachable after the retry is `node_down` at once (a run cannot wait to see more).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuconsole.config import Config, NodeConfig
from gpuconsole.core.clusters import member_of
from gpuconsole.core.fleet import Fleet
from gpuconsole.core.poller import Poller
from gpuconsole.core.registry import MemberEvent, NodeJoined, Registry
from gpuconsole.core.reservations import release_on
from gpuconsole.core.status import fleet_snapshot
from gpuconsole.errors import ExitCode, GpuConsoleError
from gpuconsole.format import epoch_s
from gpuconsole.model.alerts import Alert
from gpuconsole.model.detect import Detector, Judgement
from gpuconsole.model.events import NodeFailed, NodeUpdated, PollEvent
from gpuconsole.model.tracker import Tracker
from gpuconsole.watch.actions import PendingRelease, ReleasePolicy
from gpuconsole.watch.sinks import Dispatcher, Log
from gpuconsole.watch.statefile import StateFile

# Hook for cloud conditions (idle_cloud): the conditions that hold at a time on the runner's clock
# (the cloud judge reads the runner's detector: `cloud/watching.py`).
ExtraConditions = Callable[[float], Awaitable[list[Alert]]]
AlertAction = Callable[[Alert], Awaitable[None]]

SAVE_EVERY_S = 30.0  # windows change with every sample; alert state is saved as soon as it changes
ONCE_MAX_GAP_S = 24 * 3600.0
ONCE_RETRY_AFTER_S = 0.5
ONCE_DRAIN_S = 60.0  # a cron run waits for its notifications (with their retries) this long at most
HOOK_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """Validated watcher options (CLI flags over `[watch]` config)."""

    idle_s: float
    util_below_pct: float
    cooldown_s: float
    interval_s: float
    state_path: Path | None
    release_idle: bool = False
    grace_s: float = 900.0
    once: bool = False
    drain_s: float = 5.0  # how long shutdown waits for queued notifications


class WatchRunner:
    """Owns the detector, tracker, release policy and state file for one watcher process."""

    def __init__(self, config: Config | Registry, settings: WatchSettings, dispatcher: Dispatcher, log: Log, *,
                 extra_conditions: ExtraConditions | None = None, on_idle_cloud: AlertAction | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        # Membership and connections: the poller streams over the connections releases use. A
        # registry given (the CLI's) holds the cloud nodes discovered at start; a config, the file's nodes.
        self.registry = config if isinstance(config, Registry) else Registry(config)
        config = self.registry.config
        self.config = config
        self.settings = settings
        self.dispatcher = dispatcher
        self.log = log
        self.extra_conditions = extra_conditions
        self.on_idle_cloud = on_idle_cloud
        self.clock = clock
        poll_s = config.defaults.poll_seconds
        names = [n.name for n in self.registry.nodes]
        if settings.once:  # windows join across runs; a node still down after the retry is down now
            self.detector = Detector(idle_s=settings.idle_s, util_below_pct=settings.util_below_pct,
                                     max_gap_s=ONCE_MAX_GAP_S, node_down_after_s=0.0, expected_nodes=set(names))
        else:
            self.detector = Detector.live(settings.idle_s, settings.util_below_pct, poll_s=poll_s,
                                          judge_s=settings.interval_s, nodes=names)
        self.tracker = Tracker(settings.cooldown_s)
        self.releaser = ReleasePolicy(settings.grace_s) if settings.release_idle else None
        self.state = StateFile(settings.state_path) if settings.state_path else None
        self.registry.subscribe(self._members_changed)
        self._fleet = Fleet(self.registry)
        self._saved_at_s = 0.0
        self._logged: set[str] = set()
        self._loaded = False
        self._gone: set[str] = set()

    # -- events and state ---------------------------------------------------------------------

    def on_event(self, event: PollEvent) -> None:
        """The poller's callback: fold into the detector (the cloud judge reads it too)."""
        name = event.snapshot.name if isinstance(event, NodeUpdated) else event.name
        if name in self._gone:
            return  # a late sample from a node that left, before its poll task was cancelled
        self.detector.apply(event, self.clock())

    def _log_once(self, key: str, message: str) -> None:
        if key not in self._logged:
            self._logged.add(key)
            self.log(message)

    def nodes_changed(self, added: list[NodeConfig], removed: list[str]) -> None:
        """Discovery's report (cloud instances): the registry takes the joins and leaves and tells
        its subscribers (this runner, the poller)."""
        self.registry.join(added)
        self.registry.leave(removed)

    def _members_changed(self, event: MemberEvent) -> None:
        """Poll a new node like any node; forget a gone one and resolve what was raised about it
        (a terminated instance is not "back")."""
        if isinstance(event, NodeJoined):
            self._gone.discard(event.node.name)
            self.detector.expected_nodes.add(event.node.name)
            return
        name = event.name
        self._gone.add(name)
        self.detector.forget_node(name)
        for alert in self.tracker.resolve_node(name, self.clock()):
            self.dispatcher.publish(alert)

    def load_state(self) -> None:
        """Take the state file's lock and restore from it (once; a second watcher gets exit 2)."""
        if self.state is None or self._loaded:
            return
        self.state.lock()
        self._loaded = True
        data, problem = self.state.load()
        if problem:
            self.log(f"watch: state file: {problem}")
        bad = self.tracker.load_json(data.get("alerts") or {})
        if bad:
            self.log(f"watch: state file: dropped {len(bad)} unreadable alert entries")
        self.detector.load_json(data.get("detector") or {})
        if self.releaser is not None:
            self.releaser.load_json(data.get("release") or {})

    def save_state(self) -> None:
        if self.state is None:
            return
        data: dict[str, Any] = {"alerts": self.tracker.to_json(), "detector": self.detector.to_json()}
        if self.releaser is not None:
            data["release"] = self.releaser.to_json()
        try:
            self.state.save(data)
            self._saved_at_s = time.monotonic()
            self._logged.discard("state-save")
        except OSError as exc:
            self._log_once("state-save", f"watch: cannot save state to {self.state.path}: {exc}")

    # -- one judgement ------------------------------------------------------------------------

    async def tick(self) -> list[Alert]:
        """Judge now, send what is due, run due actions; returns the alerts sent."""
        now_s = self.clock()
        judgement = await self._with_extra(now_s, self.detector.judge(now_s))
        alerts = self.tracker.update(now_s, judgement)
        due: list[tuple[str, PendingRelease]] = []
        if self.releaser is not None:
            alerts, due = self.releaser.plan(now_s, judgement, set(self.tracker.active), alerts)
        for alert in alerts:
            self.dispatcher.publish(alert)
        for alert in alerts:
            if alert.kind == "idle_cloud" and self.on_idle_cloud is not None:
                try:
                    await asyncio.wait_for(self.on_idle_cloud(alert), HOOK_TIMEOUT_S)
                except Exception as exc:
                    self.log(f"watch: idle_cloud action for {alert.node}: {exc}")
        for key, pending in due:
            for alert in await self._release(now_s, key, pending):
                self.dispatcher.publish(alert)
                alerts.append(alert)
        await self._tell_nodes(alerts)
        if alerts or due or time.monotonic() - self._saved_at_s >= SAVE_EVERY_S:
            self.save_state()
        return alerts

    async def _tell_nodes(self, alerts: list[Alert]) -> None:
        """Tell each node which of its reservations went idle (since when, and when --release-idle
        will release it) or is in use again, so whoever waits for its GPUs sees it in their pending
        reason and ETA (node/pending.py) and `usage` counts idle GPU-hours from the ledger."""
        for alert in alerts:
            if alert.node is not None and "unreserved_use" in (alert.kind, alert.resolves):
                await self._note(alert, "gc", {})  # the node's look records when it began or ended
                continue
            if alert.node is None or alert.reservation is None:
                continue
            if alert.kind == "idle_reservation":
                if epoch_s(alert.since) is None:
                    continue
                release_at = alert.extra.get("release_at")
                args: dict[str, Any] = {"id": alert.reservation, "since": epoch_s(alert.since),
                                        "release_at": epoch_s(release_at) if isinstance(release_at, str) else None}
            elif alert.kind == "resolved" and alert.resolves == "idle_reservation" \
                    and alert.extra.get("action") != "released":
                args = {"id": alert.reservation, "since": None}
            else:
                continue
            await self._note(alert, "idle_note", args)

    async def _note(self, alert: Alert, op: str, args: dict[str, Any]) -> None:
        assert alert.node is not None
        try:
            await asyncio.wait_for(self._fleet.request(alert.node, op, args), HOOK_TIMEOUT_S)
        except (GpuConsoleError, TimeoutError) as exc:  # a note the node missed costs it only a hint
            if getattr(exc, "exit_code", None) != ExitCode.NOT_FOUND:
                self._log_once(f"note:{alert.node}", f"watch: cannot tell {alert.node} of {alert.kind}: {exc}")

    async def _with_extra(self, now_s: float, judgement: Judgement) -> Judgement:
        """Merge the cloud hook's conditions; if the hook fails, its raised conditions are kept."""
        if self.extra_conditions is None:
            return judgement
        try:
            extra = await asyncio.wait_for(self.extra_conditions(now_s), HOOK_TIMEOUT_S)
            self._logged.discard("extra")
        except Exception as exc:
            self._log_once("extra", f"watch: cloud conditions unavailable: {exc}")
            return judgement.merged(None)
        return judgement.merged(extra)

    async def _release(self, now_s: float, key: str, pending: PendingRelease) -> list[Alert]:
        """Release one due reservation as the watcher's own user; the node decides ownership."""
        assert self.releaser is not None
        what = f"idle reservation {pending.reservation} of {pending.owner} on {pending.node}"
        try:
            await release_on(self._fleet, member_of(self.registry.config, pending.node), pending.reservation,
                             reason="idle")
        except GpuConsoleError as exc:
            if exc.exit_code == ExitCode.NOT_FOUND:
                self.releaser.released(key)  # already gone: its condition resolves on the next sample
            elif exc.exit_code in (ExitCode.PERMISSION, ExitCode.USAGE):
                self.releaser.refuse(key, str(exc))
                self.log(f"watch: not releasing {what}: {exc}")
            else:
                self.releaser.postpone(key, now_s)
                self.log(f"watch: releasing {what} failed, retrying later: {exc}")
            return []
        self.releaser.released(key)
        gpus = ",".join(str(g) for g in pending.gpus)
        return [self.tracker.resolve(key, now_s, text=f"released {what} (GPUs {gpus}) after the grace period",
                                     action="released")]

    # -- modes --------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> int:
        """Poll and judge every interval until `stop` is set (SIGTERM/SIGINT); exit 0."""
        self.load_state()
        self.dispatcher.start()
        poller = Poller(self.registry, self.on_event)
        try:
            poller.start()
            while not stop.is_set():
                try:
                    await self.tick()
                except Exception as exc:  # a bug in one judgement must not end an unattended watcher
                    self._log_once(f"tick:{exc!r}", f"watch: internal error while judging: "
                                                    f"{exc.__class__.__name__}: {exc}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.interval_s)
        finally:
            await poller.aclose()
            await self.close(self.settings.drain_s, hurry=True)
        return int(ExitCode.OK)

    async def run_once(self) -> int:
        """One snapshot round (unreachable nodes retried once), one judgement, then exit 0."""
        self.load_state()
        self.dispatcher.start()
        try:
            snapshots = {s.name: s for s in await fleet_snapshot(self._fleet, rates=False)}
            failed = [name for name, snap in snapshots.items() if not snap.reachable]
            if failed:
                await asyncio.sleep(ONCE_RETRY_AFTER_S)  # the next call reopens what failed
                snapshots.update({s.name: s for s in await fleet_snapshot(self._fleet, failed, rates=False)})
            for snap in snapshots.values():
                event: PollEvent = NodeUpdated(snap, time.monotonic()) if snap.reachable else NodeFailed(
                    snap.name, snap.error or "unreachable", False, None, time.monotonic())
                self.on_event(event)
            await self.tick()
        finally:
            await self.close(ONCE_DRAIN_S, hurry=False)
        return int(ExitCode.OK)

    async def close(self, drain_s: float = 5.0, *, hurry: bool = True) -> None:
        """Save state, let queued notifications go out (bounded), close connections, unlock."""
        self.save_state()
        await self.dispatcher.drain(drain_s, hurry=hurry)
        await self.registry.aclose()
        if self.state is not None:
            self.state.unlock()
