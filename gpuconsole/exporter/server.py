"""The exporter's process: the poller folds each node's stream into a frozen FleetView, and an HTTP
server thread renders the latest one at each scrape of /metrics (a scrape never waits on a node)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from gpuconsole.core.poller import Poller
from gpuconsole.core.registry import Registry
from gpuconsole.exporter.metrics import FleetView, FleetViewSource, render
from gpuconsole.exporter.webconfig import WebConfig
from gpuconsole.model import NodeSnapshot
from gpuconsole.model.cloud import Instance
from gpuconsole.model.detect import Detector
from gpuconsole.model.events import NodeUpdated, PollEvent

CLOUD_POLL_S = 10.0  # real AWS: DescribeInstances is rate-limited per account
CLOUD_POLL_LOOPBACK_S = 1.0  # an emulator on loopback (the demo, tests)


class Folder:
    """The poller's callback: each event replaces its node's entries and swaps in a new FleetView."""

    def __init__(self, registry: Registry, source: FleetViewSource, clock: Callable[[], float] = time.time) -> None:
        config = registry.config
        names = [n.name for n in registry.nodes]
        self.detector = Detector.live(config.watch.idle_minutes * 60.0, config.watch.util_below_pct,
                                      poll_s=config.defaults.poll_seconds, judge_s=config.defaults.poll_seconds,
                                      nodes=names)
        self.source = source
        self.clock = clock
        self.snapshots: dict[str, NodeSnapshot] = {}  # a node not yet heard from is absent, not down
        self.seen_at_s: dict[str, float] = {}
        self.idle_s: dict[tuple[str, int], float] = {}
        self.instances: tuple[Instance, ...] | None = None

    def __call__(self, event: PollEvent) -> None:
        now_s = self.clock()
        self.detector.apply(event, now_s)
        if isinstance(event, NodeUpdated):
            snap = event.snapshot
            self.snapshots[snap.name] = snap
            self.seen_at_s[snap.name] = now_s
            for key in [k for k in self.idle_s if k[0] == snap.name]:
                del self.idle_s[key]
            for gpu in snap.gpus:
                quiet_s = self.detector.quiet_for_s(snap.name, gpu.index, now_s)
                if quiet_s is not None and gpu.reservation is not None:
                    self.idle_s[(snap.name, gpu.index)] = quiet_s
        else:
            self.snapshots[event.name] = NodeSnapshot(event.name, reachable=False, error=event.error)
        self.publish()

    def publish(self) -> None:
        self.source.current = FleetView(dict(self.snapshots), dict(self.seen_at_s), dict(self.idle_s),
                                        self.instances)

    def cloud(self, instances: tuple[Instance, ...], gone: list[str]) -> None:
        """A discovery round: the instances, and the cloud nodes that left the fleet."""
        self.instances = instances
        for name in gone:
            self.snapshots.pop(name, None)
            self.seen_at_s.pop(name, None)
        self.publish()


def handler_for(source: FleetViewSource, web: WebConfig | None = None) -> type[BaseHTTPRequestHandler]:
    class Metrics(BaseHTTPRequestHandler):
        """GET /metrics: the exposition of the latest view; anything else 404. Logs nothing."""

        timeout = 10  # a client that stalls (mid-handshake, mid-request) loses its thread, not ours

        def do_GET(self) -> None:
            if web is not None and not web.authorized(self.headers.get("Authorization")):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="gpuconsole"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                self.send_error(404)
                return
            body = render(source(), time.time())
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    return Metrics


class MetricsEndpoint:
    """/metrics for a fleet whose poll events someone else runs (the exporter's own poller, or the
    watcher's): `folder` takes each event, `start()` serves and says where, `close()` stops. A web
    config adds TLS (the handshake runs in the connection's thread, not the accept loop) and basic auth."""

    def __init__(self, registry: Registry, host: str, port: int, web: WebConfig | None = None) -> None:
        self.source = FleetViewSource()
        self.folder = Folder(registry, self.source)
        self.httpd = ThreadingHTTPServer((host, port), handler_for(self.source, web))  # OSError: cannot bind
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if web is not None and web.tls is not None:
            self.httpd.socket = web.tls.wrap_socket(self.httpd.socket, server_side=True,
                                                    do_handshake_on_connect=False)
            self.scheme = "https"
        self.host = host
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)

    def start(self) -> str:
        self.thread.start()
        return f"{self.scheme}://{self.host}:{self.httpd.server_port}/metrics"

    def close(self) -> None:
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.thread.join(5)
        self.httpd.server_close()


async def discover(registry: Registry, folder: Folder) -> None:
    """With `[cloud.aws]`: ask EC2 every CLOUD_POLL_S (1 s on loopback) for the managed instances;
    running ones join the polled fleet, ended ones leave it, and their prices go into the metrics."""
    from gpuconsole.cloud.ec2 import is_loopback_endpoint
    from gpuconsole.cloud.monitor import CloudMonitor

    config = registry.config
    assert config.aws is not None
    interval_s = CLOUD_POLL_LOOPBACK_S if is_loopback_endpoint(config.aws.endpoint_url) else CLOUD_POLL_S
    monitor = CloudMonitor(config)
    on_prem = {n.name for n in config.members()}
    while True:
        view = await monitor.refresh()
        if view.error is None:
            registry.join(view.nodes)
            wanted = {n.name for n in view.nodes}
            gone = registry.leave([n.name for n in registry.nodes if n.name not in on_prem and n.name not in wanted])
            folder.cloud(view.instances, gone)
        await asyncio.sleep(interval_s)


async def serve(registry: Registry, host: str, port: int, ready: Callable[[str], None], stop: asyncio.Event,
                web: WebConfig | None = None) -> None:
    """Poll the fleet and serve /metrics on host:port until `stop` is set; `ready` hears the URL."""
    endpoint = MetricsEndpoint(registry, host, port, web)
    poller = Poller(registry, endpoint.folder)
    poller.start()
    cloud = asyncio.create_task(discover(registry, endpoint.folder)) if registry.config.aws is not None else None
    try:
        ready(endpoint.start())
        await stop.wait()
    finally:
        if cloud is not None:
            cloud.cancel()
        endpoint.close()
        await poller.aclose()
        await registry.aclose()
