"""Command palette entries (ctrl+p): the same actions as the keys, searchable by name."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, cast

from textual.command import DiscoveryHit, Hit, Provider


class PaletteApp(Protocol):
    """What the palette needs of its app (GpuConsoleApp), without importing it (app.py imports us)."""

    @property
    def readonly(self) -> bool:
        """True in --readonly mode: no action that changes a node is offered."""
        ...


COMMANDS = (
    ("Reserve GPUs…", "reserve", "open the reserve dialog", True),
    ("Release selected reservation", "release", "end the reservation under the cursor", True),
    ("Renew selected reservation", "renew", "extend it by the default duration", True),
    ("Cancel selected job", "cancel_job", "Jobs tab: SIGTERM, grace, SIGKILL", True),
    ("Preempt selected job", "preempt_job", "Jobs tab: stop it; --requeue jobs run again later", True),
    ("Show job output", "job_logs", "Jobs tab: stdout and stderr of the selected job", False),
    ("Cloud up: start a GPU node…", "cloud_up", "quote the cheapest allowed EC2 type, then launch it", True),
    ("Terminate selected instance", "cloud_down", "Cloud tab: terminate the instance under the cursor", True),
    ("Filter nodes", "filter", "show only nodes whose name contains text", False),
    ("Next theme", "next_theme", "cycle dark → light → high contrast", False),
    ("Help", "help", "keys and symbols", False),
)


class ConsoleCommands(Provider):
    """Palette hits for console actions; mutating ones are absent in --readonly mode."""

    def _commands(self) -> list[tuple[str, str, str]]:
        app = cast(PaletteApp, self.app)
        return [(name, action, help_text) for name, action, help_text, mutating in COMMANDS
                if not (mutating and app.readonly)]

    async def discover(self) -> AsyncIterator[DiscoveryHit]:
        for name, action, help_text in self._commands():
            yield DiscoveryHit(name, self._runner(action), help=help_text)

    async def search(self, query: str) -> AsyncIterator[Hit]:
        matcher = self.matcher(query)
        for name, action, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), self._runner(action), help=help_text)

    def _runner(self, action: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            await self.app.run_action(action)
        return run
