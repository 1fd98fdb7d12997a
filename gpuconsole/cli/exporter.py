"""`gpuconsole exporter [--listen HOST:PORT]`: the fleet as Prometheus metrics on /metrics
(gpuconsole/exporter), on 127.0.0.1:9400 unless told otherwise; it runs until SIGTERM or Ctrl-C and
prints `serving URL` on stderr once it listens (port 0: a free one, named there)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from gpuconsole.cli.options import ExporterArgs
from gpuconsole.cli.output import warn
from gpuconsole.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from gpuconsole.config import Config
    from gpuconsole.core.registry import Registry
    from gpuconsole.exporter.webconfig import WebConfig

DEFAULT_LISTEN = "127.0.0.1:9400"


def parse_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:9400' or '[::1]:9400' → (host, port); anything else is a usage error (exit 2)."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen {text!r}: give HOST:PORT, e.g. 127.0.0.1:9400")
    return host, int(port)


def web_config_for(config: Config, flag: str | None) -> WebConfig | None:
    """--web-config, else `[exporter] web_config`, loaded and checked before anything listens."""
    chosen = flag or config.exporter.web_config
    if chosen is None:
        return None
    from gpuconsole.exporter.webconfig import load_web_config

    return load_web_config(Path(chosen).expanduser())


def run_exporter(registry: Registry, args: ExporterArgs) -> int:
    host, port = parse_listen(args.listen or registry.config.exporter.listen or DEFAULT_LISTEN)
    web = web_config_for(registry.config, args.web_config)
    from gpuconsole.exporter.server import serve

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(registry, host, port, lambda url: warn(f"serving {url}"), stop, web)

    try:
        asyncio.run(main())
    except OSError as exc:  # the address is taken or not ours to bind
        raise UsageError(f"--listen {host}:{port}: {exc.strerror or exc}") from None
    return int(ExitCode.OK)
