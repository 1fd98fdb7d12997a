"""Cloud up: how many GPUs, what EC2 would start for that (the quote, asked live) and a confirmation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from gpuconsole.errors import GpuConsoleError
from gpuconsole.textsafe import rich_text

if TYPE_CHECKING:
    from gpuconsole.cloud.monitor import Quote

QuoteFn = Callable[[int], Awaitable["Quote"]]


class CloudUpDialog(ModalScreen["Quote | None"]):
    """Returns the confirmed quote; Start stays disabled until EC2 has answered for the current count."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, quote: QuoteFn, gpus: int = 1) -> None:
        super().__init__()
        self._ask = quote
        self._gpus = gpus
        self.quote: Quote | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Label("Start a cloud GPU node", classes="dialog-title")
            with Grid(classes="form short"):
                yield Label("GPUs")
                yield Input(str(self._gpus), id="gpus", type="integer", max_length=3)
            yield Static("asking EC2 for a quote…", id="quote")
            yield Static("", id="error", classes="dialog-error")
            with Horizontal(classes="buttons"):
                yield Button("Start", variant="primary", id="ok", disabled=True)
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#gpus", Input).focus()
        self.fetch_quote(self._gpus)

    @on(Input.Changed, "#gpus")
    def _count_changed(self, event: Input.Changed) -> None:
        raw = event.value.strip()
        self.quote = None
        self.query_one("#ok", Button).disabled = True
        if not raw.isdigit() or int(raw) < 1:
            self._show("", "GPUs must be a whole number ≥ 1")
            return
        self._show("asking EC2 for a quote…", "")
        self.fetch_quote(int(raw))

    def _show(self, quote_text: str, error: str) -> None:
        self.query_one("#quote", Static).update(rich_text(quote_text))
        self.query_one("#error", Static).update(rich_text(error))

    @work(exclusive=True, group="quote", exit_on_error=False)
    async def fetch_quote(self, gpus: int) -> None:
        """The cheapest allowed type with `gpus` GPUs (EC2 runs in a thread inside the monitor)."""
        try:
            quote = await self._ask(gpus)
        except GpuConsoleError as exc:
            self._show("", str(exc))
            return
        self.quote = quote
        self._show(f"Start {quote.describe()}?", "")
        self.query_one("#ok", Button).disabled = False

    @on(Button.Pressed, "#ok")
    @on(Input.Submitted)
    def submit(self) -> None:
        if self.quote is not None:
            self.dismiss(self.quote)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
