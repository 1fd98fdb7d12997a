"""Where alerts go: stdout (human or JSON lines), `--exec CMD` (alert JSON on stdin), apprise URLs.

Each non-stdout sink has its own queue and worker, so a slow or dead receiver delays only itself.
A failed delivery is retried with backoff; the final failure is logged as one line on stderr and
the alert is dropped. Sinks never raise into the watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Protocol

from gpuconsole.errors import UsageError
from gpuconsole.format import iso_utc
from gpuconsole.model.alerts import Alert
from gpuconsole.textsafe import terminal_safe

Log = Callable[[str], None]
QUEUE_MAX = 1000


class Sink(Protocol):
    """A delivery channel; `send` raises on failure (the dispatcher retries)."""

    name: str

    async def send(self, alert: Alert) -> None: ...


def alert_line(alert: Alert, now_s: float) -> str:
    """The human one-liner: time, kind, message."""
    kind = f"resolved {alert.resolves}" if alert.kind == "resolved" else alert.kind
    again = f" (reminder {alert.extra['repeat']})" if "repeat" in alert.extra else ""
    return f"{iso_utc(now_s)}  {kind:<25} {alert.message}{again}"


def alert_title(alert: Alert) -> str:
    if alert.kind == "resolved":
        return f"gpuconsole: resolved {alert.resolves} on {alert.node}"
    return f"gpuconsole: {alert.kind.replace('_', ' ')} on {alert.node}"


def alert_body(alert: Alert) -> str:
    """A readable notification body: the message, then the fields people act on."""
    lines = [alert.message, ""]
    for label, value in (("node", alert.node), ("owner", alert.owner), ("reservation", alert.reservation),
                         ("GPUs", ",".join(str(g) for g in alert.gpus) or None), ("since", alert.since)):
        if value:
            lines.append(f"{label}: {value}")
    lines.extend(f"{key}: {alert.extra[key]}" for key in ("action", "release_at") if key in alert.extra)
    return "\n".join(lines)


class StdoutSink:
    """Alerts on stdout: one JSON object per line with `as_json`, else a human line."""

    name = "stdout"

    def __init__(self, as_json: bool, clock: Callable[[], float]) -> None:
        self.as_json = as_json
        self.clock = clock

    def write(self, alert: Alert) -> None:
        # JSON keeps the exact strings; the human line is for a terminal, so escaped (owners, job
        # names and node errors in messages are other people's text).
        text = json.dumps(alert.to_json(), separators=(",", ":")) if self.as_json else terminal_safe(
            alert_line(alert, self.clock()))
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


class ExecSink:
    """Runs `/bin/sh -c CMD` per alert with the alert JSON on stdin; non-zero exit or a timeout fails."""

    def __init__(self, command: str, timeout_s: float = 30.0) -> None:
        self.command = command
        self.timeout_s = timeout_s
        self.name = "exec"

    async def send(self, alert: Alert) -> None:
        env = dict(os.environ, GPUCONSOLE_ALERT_KIND=alert.kind, GPUCONSOLE_ALERT_NODE=alert.node or "")
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True,
        )
        data = (json.dumps(alert.to_json()) + "\n").encode()
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(data), self.timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise RuntimeError(f"timed out after {self.timeout_s:g}s") from None
        finally:
            if proc.returncode is None:  # cancelled (shutdown): do not leave the command behind
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        if proc.returncode != 0:
            tail = stderr.decode("utf-8", "replace").strip().splitlines()
            raise RuntimeError(f"exit {proc.returncode}" + (f": {tail[-1]}" if tail else ""))


class NotifySink:
    """One apprise URL (Slack, email, Teams, ntfy, json:// webhooks…); apprise is imported lazily."""

    def __init__(self, url: str, index: int, timeout_s: float = 30.0) -> None:
        import logging
        import warnings

        scheme = url.split("://", 1)[0] if "://" in url else "?"
        # Never log the URL itself: tokens and passwords live in it.
        self.name = f"notify[{index}] {scheme}://…"
        self.timeout_s = timeout_s
        with warnings.catch_warnings():  # apprise's plugin loading imports the deprecated imghdr
            warnings.simplefilter("ignore", DeprecationWarning)
            import apprise

            # Our one-line log says what failed; apprise's own records would repeat it with
            # details that may include the URL's secrets.
            logging.getLogger("apprise").addHandler(logging.NullHandler())
            logging.getLogger("apprise").propagate = False
            self._apprise = apprise.Apprise()
            if not self._apprise.add(url):
                raise UsageError(f"--notify: {scheme}://… is not a URL apprise supports (see apprise's URL list)")
        self._types = apprise.NotifyType

    async def send(self, alert: Alert) -> None:
        kind = {"resolved": self._types.SUCCESS, "node_down": self._types.FAILURE}.get(
            alert.kind, self._types.WARNING)
        result = await asyncio.wait_for(
            self._apprise.async_notify(body=alert_body(alert), title=alert_title(alert), notify_type=kind),
            self.timeout_s,
        )
        if not result:
            raise RuntimeError("delivery failed")


class Dispatcher:
    """Fans alerts out: stdout at once, every other sink through its own queue and retrying worker."""

    def __init__(self, stdout: StdoutSink | None, sinks: list[Sink], log: Log, *, attempts: int = 3,
                 backoff_s: float = 1.0) -> None:
        self.stdout = stdout
        self.sinks: list[Sink] = list(sinks)
        self.log = log
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._queues: list[asyncio.Queue[Alert]] = []
        self._workers: list[asyncio.Task[None]] = []
        self.delivered = 0
        self.failed = 0
        self._closing = asyncio.Event()

    def start(self) -> None:
        for sink in self.sinks:
            queue: asyncio.Queue[Alert] = asyncio.Queue(QUEUE_MAX)
            self._queues.append(queue)
            self._workers.append(asyncio.create_task(self._worker(sink, queue), name=f"sink-{sink.name}"))

    def publish(self, alert: Alert) -> None:
        """Hand one alert to every sink; never blocks and never raises."""
        if self.stdout is not None:
            try:
                self.stdout.write(alert)  # synchronous, so stdout keeps the order alerts were raised in
            except (OSError, ValueError) as exc:
                self.log(f"watch: stdout: {exc}")
        for sink, queue in zip(self.sinks, self._queues, strict=True):
            try:
                queue.put_nowait(alert)
            except asyncio.QueueFull:
                self.failed += 1
                self.log(f"watch: {sink.name}: {QUEUE_MAX} alerts waiting; dropped a {alert.kind} alert")

    async def _worker(self, sink: Sink, queue: asyncio.Queue[Alert]) -> None:
        while True:
            alert = await queue.get()
            try:
                await self._deliver(sink, alert)
            finally:
                queue.task_done()

    async def _deliver(self, sink: Sink, alert: Alert) -> None:
        for attempt in range(1, self.attempts + 1):
            try:
                await sink.send(alert)
                self.delivered += 1
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = str(exc) or exc.__class__.__name__
                if attempt == self.attempts:
                    self.failed += 1
                    self.log(f"watch: {sink.name}: {alert.kind} alert for {alert.node} not delivered after "
                             f"{attempt} attempt{'s' if attempt > 1 else ''}: {reason}")
                    return
                with contextlib.suppress(TimeoutError):  # shutting down: retry at once, no backoff
                    await asyncio.wait_for(self._closing.wait(), self.backoff_s * 2 ** (attempt - 1))

    async def drain(self, timeout_s: float, *, hurry: bool = True) -> None:
        """Wait up to `timeout_s` for queued alerts to go out, then stop the workers. With `hurry`
        (a SIGTERM), retries skip their backoff so a dead receiver does not hold up the exit."""
        if hurry:
            self._closing.set()
        if self._queues:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(q.join() for q in self._queues)), timeout_s)
        left = sum(q.qsize() for q in self._queues)
        if left:
            self.log(f"watch: shutting down with {left} alert{'s' if left != 1 else ''} not delivered")
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()
        self._queues.clear()
