"""Properties of gpuconsole.textsafe and of the CLI renderers fed arbitrary text (issue 11, item 4):
no control, C1, bidi or separator character survives; printable text is untouched; no text from a
node can make a table raise (rich markup errors were exit 1 for everyone)."""

from __future__ import annotations

import contextlib
import io
import string
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as hs
from rich.text import Text

from gpuconsole.cli.jobs import jobs_table
from gpuconsole.cli.output import console
from gpuconsole.cli.reservations import reservations_table
from gpuconsole.cli.status import render
from gpuconsole.model import Job, NodeSnapshot, QueuedRequest, Reservation
from gpuconsole.model.alerts import Alert
from gpuconsole.textsafe import is_terminal_safe, rich_text, terminal_safe
from gpuconsole.watch.sinks import StdoutSink

UNSAFE = {chr(c) for c in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), 0x061C, 0x200E, 0x200F, 0x2028,
                           0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A), *range(0xD800, 0xE000))}
SPECIAL = sorted(UNSAFE - {chr(c) for c in range(0xD801, 0xDFFF)}) + list("[]/\\:@")
# Any character, surrogates included, with the troublesome ones (and markup's brackets) drawn often.
CHARS = hs.one_of(hs.characters(exclude_categories=()), hs.sampled_from(SPECIAL))
TEXT = hs.text(CHARS, max_size=40)
MARKUP = hs.sampled_from(["[/]", "[bold red]x", "[link=http://x]", "\x1b]52;c;aGVsbG8=\x07", "\x1b]2;t\x07",
                          "\x9b31m", "\u202e", ":smile:", "[", "\\[b]"])
HOSTILE = hs.lists(hs.one_of(TEXT, MARKUP), max_size=4).map("".join)


def unsafe_in(text: str, *, multiline: bool = False) -> set[str]:
    allowed = {"\n", "\t"} if multiline else set()
    return {c for c in text if c in UNSAFE and c not in allowed}


@given(HOSTILE)
def test_terminal_safe_leaves_no_control_bidi_or_surrogate(text: str) -> None:
    shown = terminal_safe(text)
    assert not unsafe_in(shown)
    assert is_terminal_safe(shown)
    assert terminal_safe(shown) == shown  # already safe: returned as it is
    shown.encode("utf-8")  # never a lone surrogate, so it can always be written


@given(HOSTILE)
def test_multiline_keeps_newlines_and_tabs_only(text: str) -> None:
    shown = terminal_safe(text, multiline=True)
    assert not unsafe_in(shown, multiline=True)
    assert shown.count("\n") == text.count("\n") and shown.count("\t") == text.count("\t")


@given(hs.text(hs.sampled_from(string.printable[:95])))  # printable ASCII, no whitespace controls
def test_printable_ascii_is_unchanged(text: str) -> None:
    assert terminal_safe(text) == text
    assert terminal_safe(text, multiline=True) == text


def test_escapes_are_visible_and_named() -> None:
    assert terminal_safe("\x1b]52;c;aGVsbG8=\x07") == "\\x1b]52;c;aGVsbG8=\\x07"
    assert terminal_safe("a\nb\tc\rd") == "a\\nb\\tc\\rd"
    assert terminal_safe("a\nb\tc\rd", multiline=True) == "a\nb\tc\\rd"
    assert terminal_safe("\x9b\x7f\u202e\u2066\ud800") == "\\x9b\\x7f\\u202e\\u2066\\ud800"
    assert terminal_safe("ünï ☃ 日本 [/]") == "ünï ☃ 日本 [/]"


@given(hs.lists(hs.tuples(HOSTILE, hs.sampled_from(["", "bold", "red", "dim"])), max_size=5))
def test_rich_text_keeps_styles_over_escaped_text(parts: list[tuple[str, str]]) -> None:
    text = Text()
    for part, style in parts:
        text.append(part, style=style)  # what a widget builds; rich itself strips only a few controls
    safe = rich_text(text)
    assert not unsafe_in(safe.plain)
    assert all(0 <= span.start <= span.end <= len(safe.plain) for span in safe.spans)
    assert [span.style for span in safe.spans] == [span.style for span in text.spans]


def _printed(renderable: Any) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        console().print(renderable)
    return out.getvalue()


@settings(max_examples=60, deadline=None)
@given(hs.lists(hs.tuples(HOSTILE, HOSTILE, HOSTILE, HOSTILE), min_size=1, max_size=3))
def test_cli_tables_never_raise_and_print_nothing_unsafe(rows: list[tuple[str, str, str, str]]) -> None:
    jobs = [Job.from_agent(node, {"id": f"j-{i}", "name": name, "gpus": [0], "gpus_requested": 1, "owner": owner,
                                  "priority": "normal", "state": "running", "exit_code": None, "command": command})
            for i, (name, node, owner, command) in enumerate(rows)]
    reservations = [Reservation(f"r-{i}", node, (0,), owner, name, "active", command, command)
                    for i, (name, node, owner, command) in enumerate(rows)]
    queue = [QueuedRequest(f"q-{i}", node, 2, owner, name, 1, command) for i, (name, node, owner, command)
             in enumerate(rows)]
    for table in (jobs_table(jobs), reservations_table(reservations, queue)):
        assert not unsafe_in(_printed(table), multiline=True)


@settings(max_examples=60, deadline=None)
@given(HOSTILE, HOSTILE, HOSTILE, HOSTILE)
def test_status_render_never_raises_and_prints_nothing_unsafe(name: str, owner: str, user: str,
                                                              error: str) -> None:
    gpu = {"index": 0, "uuid": "GPU-0", "name": name, "util_pct": 1.0, "mem_used_mib": 1, "mem_total_mib": 2,
           "temperature_c": 30, "power_w": 70,
           "reservation": {"id": owner, "owner": owner, "expires_at": "2026-11-23T13:00:00Z"},
           "processes": [{"pid": 1, "user": user, "command": user, "mem_mib": 1}]}
    data = {"t_wall": 1.0, "cpu_pct": 1.0, "cpu_count": 1, "mem_used_bytes": 1, "mem_total_bytes": 2,
            "gpu_source": "nvml", "gpus": [gpu, dict(gpu, index=1, reservation=None)], "reservations": [],
            "queue": [], "state_error": error or None, "warnings": [error]}
    snapshots = [NodeSnapshot.from_agent("n1", data), NodeSnapshot.unreachable("n2", error)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        render(snapshots)
    assert not unsafe_in(out.getvalue(), multiline=True)


@given(HOSTILE, HOSTILE, HOSTILE)
def test_watch_human_line_is_one_safe_line(message: str, owner: str, node: str) -> None:
    alert = Alert(kind="unreserved_use", node=node, message=message, since="2026-11-23T09:00:00Z", owner=owner)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        StdoutSink(False, lambda: 1795426200.0).write(alert)
    assert out.getvalue().count("\n") == 1 and not unsafe_in(out.getvalue(), multiline=True)
