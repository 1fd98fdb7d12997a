"""Text from a node or another user, made safe for a terminal: the one owner of that rule.

GPU names, process users and commands, owners, job names and commands, error and warning texts are
hostile input. Before any of them reaches a terminal (CLI tables and lines, stderr, the watcher's
human lines, every console widget) it passes through `terminal_safe`, and it reaches rich or Textual
only as a `Text` object (`rich_text`), never as markup. JSON output keeps the exact strings.

Every character a terminal could act on is replaced by a visible escape, so nothing is hidden and a
person can still read what was there:

- C0 controls U+0000-U+001F (ESC, BEL, CR, BS…), DEL U+007F and C1 controls U+0080-U+009F (CSI,
  OSC, ST…): ESC becomes the four characters ``\\x1b``; newline and tab become ``\\n`` and ``\\t``
  (a table cell or a one-line message stays one line and keeps its columns). With ``multiline``,
  newline and tab pass (a job's output shown as text); CR is escaped even then, since it lets a line
  overwrite what came before it.
- Bidirectional overrides, embeddings, isolates and marks (U+202A-U+202E, U+2066-U+2069, U+200E,
  U+200F, U+061C): they reorder what is shown ("Trojan Source"), so ``\\u202e``.
- Line and paragraph separators U+2028, U+2029: some renderers break lines on them.
- Lone surrogates U+D800-U+DFFF (a JSON ``"\\ud800"`` decodes to one): printing one raises
  UnicodeEncodeError, so ``\\ud800``.

Printable ASCII (and all other printable text) is returned unchanged; a backslash is not escaped, so
the shown form is for reading, not for parsing back (that is what ``--json`` is for).

Stdlib only; rich is imported by `rich_text` alone, when it is called.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.text import Text

# Everything but the C0 range, which differs: multiline text keeps newline (0x0a) and tab (0x09).
_OTHERS = "\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE = re.compile(f"[\x00-\x1f{_OTHERS}]")
_UNSAFE_MULTILINE = re.compile(f"[\x00-\x08\x0b-\x1f{_OTHERS}]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: str, *, multiline: bool = False) -> str:
    """`text` with every control, bidi and separator character replaced by a visible escape
    (see the module docstring); with `multiline`, newline and tab are kept."""
    pattern = _UNSAFE_MULTILINE if multiline else _UNSAFE
    if pattern.search(text) is None:  # the common case: no copy
        return text
    return pattern.sub(_escape, text)


def is_terminal_safe(text: str, *, multiline: bool = False) -> bool:
    """Whether `terminal_safe` would leave `text` as it is."""
    return (_UNSAFE_MULTILINE if multiline else _UNSAFE).search(text) is None


def rich_text(value: str | Text, style: str = "", *, multiline: bool = False) -> Text:
    """A rich `Text` that shows `value` literally (never parsed as markup) with `terminal_safe`
    applied; a `Text` passed in keeps its styles, their spans moved past any escapes."""
    from rich.text import Span, Text

    if isinstance(value, str):
        return Text(terminal_safe(value, multiline=multiline), style=style)
    plain = value.plain
    if is_terminal_safe(plain, multiline=multiline):
        return value
    # Escapes are longer than what they replace: map every old offset to its new one.
    pieces = [terminal_safe(char, multiline=multiline) for char in plain]
    offsets = [0]
    for piece in pieces:
        offsets.append(offsets[-1] + len(piece))
    spans = [Span(offsets[s.start], offsets[min(s.end, len(plain))], s.style) for s in value.spans]
    return Text("".join(pieces), style=value.style, justify=value.justify, overflow=value.overflow,
                no_wrap=value.no_wrap, end=value.end, tab_size=value.tab_size, spans=spans)
