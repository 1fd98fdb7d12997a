"""The one-line fleet summary at the top."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from gpuconsole.model.fleet import FleetState, Health
from gpuconsole.textsafe import rich_text

Piece = tuple[str, str]  # (text, style); `$warning` in a style is the theme's warning colour


def connecting_text(nodes: int) -> str:
    """What the summary says until the first nodes answer (from the first frame on)."""
    return f"connecting to {nodes} node{'s' if nodes != 1 else ''}…"


class SummaryBar(Widget):
    """Nodes up/total, GPUs free/reserved/busy, queue, cloud, and the alert/idle/unreserved flags.

    A fixed one-line widget that repaints only when its text changes: `Static.update` would ask
    for a full layout pass on every tick, which was most of the console's CPU at 64 nodes. When the
    flags do not fit the width they lose their words, the alert count's first (`▲ 3  ⚑ 2  ⚠ 1`;
    the help screen names the symbols), and then the counts lose theirs and the cloud cell.
    """

    DEFAULT_CSS = "SummaryBar { height: 1; }"

    def __init__(self, text: str = "", **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._variants: list[list[Piece]] = [[(text, "")]]  # longest first

    def render(self) -> Text:
        warning = self.app.current_theme.warning or "yellow"
        width = self.content_size.width
        for pieces in self._variants:
            # Built from (text, style) pieces, never markup: the cloud cell may quote EC2's text.
            text = Text.assemble(*((rich_text(part, style.replace("$warning", warning)) for part, style in pieces)))
            if width <= 0 or text.cell_len <= width:
                break
        return text

    def show(self, fleet: FleetState, cloud: str = "cloud: off", alerts: int = 0, idle_gpus: int = 0) -> None:
        """`idle_gpus`: how many GPUs the idle rule flags now (the detector's, as the GPU table's `⚑`)."""
        t = fleet.totals()
        flags: list[tuple[str, str]] = []  # (full, compact)
        if alerts:
            flags.append((f"▲ {alerts} alert{'s' if alerts != 1 else ''}", f"▲ {alerts}"))
        if idle_gpus:
            flags.append((f"⚑ {idle_gpus} idle", f"⚑ {idle_gpus}"))
        if t["unreserved"]:
            flags.append((f"⚠ {t['unreserved']} unreserved", f"⚠ {t['unreserved']}"))
        connecting = sum(view.health() is Health.CONNECTING for view in fleet.nodes.values())
        text: list[Piece] = [
            ("nodes ", ""), (str(t["up"]), "b"), (f"/{t['nodes']} up", ""),
            (f" · {connecting} connecting…" if connecting else "", ""), ("  │  GPUs ", ""), (str(t["free"]), "b"),
            (f" free · {t['reserved']} reserved · {t['in_use']} busy / {t['gpus']}  │  queue {t['queued']}  │  "
             f"{cloud}", ""),
        ]
        # Narrow (80 columns), the last resort: fewer words, no cloud cell, so the flags still show.
        compact: list[Piece] = [
            (str(t["up"]), "b"), (f"/{t['nodes']} up{' …' if connecting else ''} │ ", ""), (str(t["free"]), "b"),
            (f" free · {t['reserved']} rsv · {t['in_use']} busy /{t['gpus']} │ queue {t['queued']}", ""),
        ]
        if connecting and not t["up"]:
            text = compact = [(connecting_text(connecting), "b"), (f"  │  {cloud}", "")]
        with_cloud = [*compact, (f" │ {cloud}", "")] if compact is not text else compact
        variants = [text, with_cloud, compact]
        if flags:
            words = [full for full, _ in flags]
            shorter = [flags[0][1] if alerts else flags[0][0], *words[1:]]
            shortest = [short for _, short in flags]
            variants = [[*base, ("  │  ", ""), *_joined([(flag, "b $warning") for flag in chosen], ("  ", ""))]
                        for base, chosen in ((text, words), (text, shorter), (text, shortest),
                                             (with_cloud, shortest), (compact, shortest))]
        if variants != self._variants:
            self._variants = variants
            self.refresh()


def _joined(pieces: list[Piece], separator: Piece) -> list[Piece]:
    out: list[Piece] = []
    for index, piece in enumerate(pieces):
        if index:
            out.append(separator)
        out.append(piece)
    return out
