"""Modal dialogs: reserve GPUs, confirm a destructive action, help."""

from __future__ import annotations

from dataclasses import dataclass

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
                yield Select([("auto (best fit)", AUTO_NODE), *[(rich_text(n), n) for n in self.nodes]],
                             value=AUTO_NODE, id="node", allow_blank=False)
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
    """Yes/no for destructive actions (release, preempt); `y` confirms, `n`/escape cancels."""

    BINDINGS = [Binding("escape,n", "no", "No"), Binding("y", "yes", "Yes")]

    def __init__(self, question: str, confirm_label: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Label(rich_text(self.question), classes="dialog-title")
            with Horizontal(classes="buttons"):
                yield Button(self.confirm_label, variant="error", id="yes")
                yield Button("Cancel", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed, "#yes")
    def action_yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def action_no(self) -> None:
        self.dismiss(False)


class LogScreen(ModalScreen[None]):
    """A job's output (stdout, then stderr in the error colour), fetched when opened."""

    BINDINGS = [Binding("escape,q,l", "close", "Close")]

    def __init__(self, job_id: str, title: str) -> None:
        super().__init__()
        self.job_id = job_id
        self.title_text = title

    def compose(self) -> ComposeResult:
        from textual.widgets import RichLog

        with Vertical(id="dialog", classes="dialog logs"):
            yield Label(rich_text(self.title_text), classes="dialog-title")
            yield RichLog(id="log", wrap=True, markup=False, highlight=False)
            yield Button("Close", id="close")

    def add_output(self, stream: str, text: str) -> None:
        from textual.widgets import RichLog

        style = (self.app.current_theme.error or "red") if stream == "stderr" else ""
        # Shown inside the console, so escaped even for its owner (lines and tabs kept).
        self.query_one("#log", RichLog).write(rich_text(text.rstrip("\n"), style, multiline=True))

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(None)


HELP_TEXT = """\
[b]Keys[/b]
  r        reserve GPUs (dialog)          x   release the selected reservation
  e        renew the selected reservation  /   filter nodes by name
  c        cancel the selected job         p   preempt the selected job
  l        the selected job's output       (in the Jobs tab)
  u        start a cloud node (quote)      D   terminate the selected instance
  tab      next panel                      t   next theme
  ctrl+p   command palette                 ?   this help
  q        quit

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
