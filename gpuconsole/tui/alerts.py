"""The console's alert log (issue 7): the watcher's pure detector and tracker, fed from the console's
own poll events, so the Alerts tab shows the alerts `gpuconsole watch` would send for the same fleet.
The same judgement drives the `⚑ idle` flags and their summary count: one idle rule, `[watch]`'s.

No Textual here: the app folds events in, judges on an interval and hands `entries` to the AlertLog.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gpuconsole.config import WatchConfig
from gpuconsole.model.alerts import Alert
from gpuconsole.model.detect import Detector, Judgement
from gpuconsole.model.events import PollEvent
from gpuconsole.model.tracker import Tracker

JUDGE_INTERVAL_S = 1.0  # the watcher judges every few seconds; the console's log may be a little livelier
MAX_LOG_ENTRIES = 500


@dataclass(frozen=True, slots=True)
class LoggedAlert:
    """One line of the log: the alert and the wall time (epoch seconds) it was raised."""

    seq: int
    at_s: float
    alert: Alert


class AlertBook:
    """Detector + tracker + a bounded log; every time is wall-clock epoch seconds, passed in."""

    def __init__(self, watch: WatchConfig, nodes: Iterable[str], *, poll_s: float,
                 judge_s: float = JUDGE_INTERVAL_S, max_entries: int = MAX_LOG_ENTRIES) -> None:
        # Same thresholds and windows as the watcher's live loop for the same config.
        self.detector = Detector.live(watch.idle_minutes * 60.0, watch.util_below_pct, poll_s=poll_s,
                                      judge_s=judge_s, nodes=nodes)
        self.tracker = Tracker(watch.cooldown_minutes * 60.0)
        self.entries: deque[LoggedAlert] = deque(maxlen=max_entries)
        self.judgement = Judgement({})  # the latest: what holds now, idle GPUs included
        self._seq = 0

    @property
    def active_keys(self) -> frozenset[str]:
        """Keys of the conditions raised and not yet resolved."""
        return frozenset(self.tracker.active)

    def idle_for_s(self, now_s: float) -> dict[tuple[str, int], float]:
        """(node, GPU index) -> how long it has been idle, for the GPUs of every reservation the
        latest judgement found idle (the `⚑ idle` flags and their count)."""
        return {gpu: max(0.0, now_s - since_s) for gpu, since_s in self.judgement.idle_since_s.items()}

    def apply(self, event: PollEvent, now_s: float) -> None:
        """Fold one poller event seen at wall time `now_s`."""
        self.detector.apply(event, now_s)

    def expect(self, node: str) -> None:
        """A node joined: judge it like a configured one (down when it does not answer)."""
        self.detector.expected_nodes.add(node)

    def forget(self, node: str, now_s: float) -> list[Alert]:
        """A node left the fleet (instance terminated): drop its detector state, resolve its alerts."""
        self.detector.forget_node(node)
        idle = {gpu: since_s for gpu, since_s in self.judgement.idle_since_s.items() if gpu[0] != node}
        self.judgement = dataclasses.replace(self.judgement, idle_since_s=idle)
        return self._log(self.tracker.resolve_node(node, now_s), now_s)

    def judge(self, now_s: float, extra: Sequence[Alert] | None = ()) -> list[Alert]:
        """Judge now; log and return what is new (onsets, due repeats, resolutions).

        `extra` are conditions judged elsewhere (idle cloud instances); None means they could not be
        judged now, so raised ones of that kind are kept rather than resolved.
        """
        self.judgement = self.detector.judge(now_s).merged(extra)
        return self._log(self.tracker.update(now_s, self.judgement), now_s)

    def _log(self, alerts: list[Alert], now_s: float) -> list[Alert]:
        for alert in alerts:
            self._seq += 1
            self.entries.append(LoggedAlert(self._seq, now_s, alert))
        return alerts
