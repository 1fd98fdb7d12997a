"""Modal dialogs: reserve GPUs, confirm a destructive action, help."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from gpuconsole.durations import parse_duration_s
from gpuconsole.errors import UsageError
from gpuconsole.textsafe import rich_text

AUTO_NODE = "__auto__"


@dataclass(frozen=True, slots=True)
class ReserveForm:
    """What the reserve dialog returns."""

    gpus: int
    ttl_s: float
    node: str | None
    preemptible: bool
    burst: bool = False  # start a cloud node if no node has room now


class ReserveDialog(ModalScreen[ReserveForm | None]):
    """GPU count, duration, node (or auto), preemptible and, with a cloud configured, burst;
    validated before it closes."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, nodes: list[str], default_duration: str, default_node: str | None = None,
                 *, cloud: bool = False) -> None:
        super().__init__()
        self.nodes = nodes
        self.default_duration = default_duration
        self.default_node = default_node
        self.cloud = cloud

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Label("Reserve GPUs", classes="dialog-title")
            with Grid(classes="form"):
                yield Label("GPUs")
                yield Input("1", id="gpus", type="integer", max_length=3)
                yield Label("for")
                yield Input(self.default_duration, id="duration", placeholder="90s, 30m, 4h, 1d")
                yield Label("node")
                chosen = self.default_node if self.default_node in self.nodes else AUTO_NODE
                yield Select([("auto (best fit)", AUTO_NODE), *[(rich_text(n), n) for n in self.nodes]],
                             value=chosen, id="node", allow_blank=False)
                yield Label("")
                if self.cloud:
                    with Horizontal(classes="checks"):
                        yield Checkbox("preemptible", id="preemptible")
                        yield Checkbox("burst to cloud", id="burst")
                else:
                    yield Checkbox("preemptible", id="preemptible")
            yield Static("", id="error", classes="dialog-error")
            with Horizontal(classes="buttons"):
                yield Button("Reserve", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#gpus", Input).focus()

    def _form(self) -> ReserveForm:
        raw = self.query_one("#gpus", Input).value.strip()
        if not raw.isdigit() or int(raw) < 1:
            raise UsageError("GPUs must be a whole number ≥ 1")
        ttl_s = parse_duration_s(self.query_one("#duration", Input).value, what="duration")
        node = self.query_one("#node", Select).value
        burst = self.cloud and self.query_one("#burst", Checkbox).value
        if burst and node != AUTO_NODE:
            raise UsageError("burst picks the node itself: choose auto")
        return ReserveForm(int(raw), ttl_s, None if node == AUTO_NODE else str(node),
                           self.query_one("#preemptible", Checkbox).value, burst)

    @on(Checkbox.Changed, "#burst")
    def _burst_toggled(self, event: Checkbox.Changed) -> None:
        if event.value:  # a burst picks the node itself
            self.query_one("#node", Select).value = AUTO_NODE

    @on(Button.Pressed, "#ok")
    @on(Input.Submitted)
    def submit(self) -> None:
        try:
            self.dismiss(self._form())
        except UsageError as exc:
            self.query_one("#error", Static).update(rich_text(str(exc)))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmDialog(ModalScreen[bool]):
    """Yes/no for destructive actions (release, preempt, terminate): `y` confirms, `n`/`esc` cancels,
    and the buttons say so. The question wraps: it may carry a cost or a long node name."""

    BINDINGS = [Binding("escape,n", "no", "No"), Binding("y", "yes", "Yes")]

    def __init__(self, question: str, confirm_label: str = "Yes", cancel_label: str = "Cancel") -> None:
        super().__init__()
        self.question = question
        self.confirm_label = confirm_label
        self.cancel_label = cancel_label

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Static(rich_text(self.question), id="question", classes="dialog-title")
            with Horizontal(classes="buttons"):
                yield Button(Text(f"{self.confirm_label} (y)"), variant="error", id="yes")
                yield Button(Text(f"{self.cancel_label} (n/esc)"), id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed, "#yes")
    def action_yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def action_no(self) -> None:
        self.dismiss(False)


class LogScreen(ModalScreen[None]):
    """A job's output (stdout, then stderr in the error colour), followed while the job runs: new
    lines scroll into view while the view is at its end (scrolled up, it stays where it is)."""

    BINDINGS = [Binding("escape,q,l", "close", "Close")]

    def __init__(self, job_id: str, title: str) -> None:
        super().__init__()
        self.job_id = job_id
        self.title_text = title

    def compose(self) -> ComposeResult:
        from textual.widgets import RichLog

        with Vertical(id="dialog", classes="dialog logs"):
            yield Label(rich_text(f"{self.title_text} · following…"), id="log-title", classes="dialog-title")
            yield RichLog(id="log", wrap=True, markup=False, highlight=False, auto_scroll=False)
            yield Button("Close", id="close")

    def add_output(self, stream: str, text: str) -> None:
        from textual.widgets import RichLog

        log = self.query_one("#log", RichLog)
        style = (self.app.current_theme.error or "red") if stream == "stderr" else ""
        at_end = log.scroll_y >= log.max_scroll_y  # the reader has not scrolled up
        # Shown inside the console, so escaped even for its owner (lines and tabs kept).
        # Before the view has its size, writes wait and scroll when they land; after, scroll now (not
        # after a refresh, which would undo a scroll up that came in between): the next chunk must find
        # the view at its end too.
        log.write(rich_text(text.rstrip("\n"), style, multiline=True), scroll_end=at_end and not log.lines)
        if at_end and log.lines:
            log.scroll_end(animate=False, immediate=True, x_axis=False)

    def ended(self, state: str) -> None:
        """The job ended (or this view has read all there is): the title says so."""
        self.query_one("#log-title", Label).update(rich_text(f"{self.title_text} · {state}"))

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(None)


HELP_TEXT = """\
[b]Keys[/b]
  r        reserve GPUs (dialog)          x   release the selected reservation
  e        renew the selected reservation  /   filter nodes by name (enter keeps it)
  c        cancel the selected job         esc clear the filter
  p        preempt the selected job        o   sort nodes: config, name, free, util
  l        the selected job's output       (in the Jobs tab)
  u        start a cloud node (quote)      D   terminate the selected instance
  tab      next panel                      t   next theme
  ctrl+p   command palette                 ?   this help
  q        quit

[b]In dialogs[/b]
  y        confirm (release, cancel, terminate)   n, esc   keep / cancel
  enter    submit the form                        tab      next field
  esc, q   close the output and help views

[b]Reading the screen[/b]
  ● up   ◌ stale (last data, dimmed)   ✕ unreachable
  ⚑ idle   a reserved GPU below 5% utilization for a minute or more
  ⚠ unreserved   processes on a GPU that no reservation covers
  ▲ alerts   what `gpuconsole watch` would send (Alerts tab, newest first)

The selected reservation is the row under the cursor in the Reservations tab,
or else the reservation of the GPU under the cursor. The selected instance is
the row under the cursor in the Cloud tab.
"""


class HelpScreen(ModalScreen[None]):
    """Keys and symbols."""

    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog help"):
            yield Label("gpuconsole help", classes="dialog-title")
            yield Static(HELP_TEXT)
            yield Button("Close", id="close")

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(None)
