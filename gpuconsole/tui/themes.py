"""Themes from `gpuconsole/themes/*.toml` (shipped in the wheel) as Textual themes."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from textual.theme import Theme

DEFAULT_THEME = "gpuconsole-dark"
BASE_KEYS = ("primary", "secondary", "accent", "warning", "error", "success", "foreground", "background",
             "surface", "panel", "boost")
# App variables every theme must define (defaults here keep third-party themes parseable).
VARIABLE_DEFAULTS = {
    "gc-util-low": "#57AB5A",
    "gc-util-mid": "#F2B134",
    "gc-util-high": "#E5534B",
    "gc-free": "#57AB5A",
    "gc-flag": "#F2B134",
    "gc-stale": "#6B7280",
    "gc-unreachable": "#E5534B",
    "gc-cloud": "#8E7DBE",
}


@dataclass
class ThemeLoad:
    """Themes that loaded, and files that did not (with why), for a notification not a crash."""

    themes: list[Theme] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def theme_from_toml(text: str, origin: str) -> Theme:
    """Build a Theme from one TOML file's text; ValueError names the problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{origin}: {exc}") from None
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{origin}: name is required")
    if "primary" not in data:
        raise ValueError(f"{origin}: primary is required")
    unknown = set(data) - {"name", "dark", "variables", *BASE_KEYS}
    if unknown:
        raise ValueError(f"{origin}: unknown keys {sorted(unknown)}")
    variables = dict(VARIABLE_DEFAULTS)
    variables.update({str(k): str(v) for k, v in (data.get("variables") or {}).items()})
    base: dict[str, Any] = {k: str(data[k]) for k in BASE_KEYS if k in data}
    return Theme(name=name, dark=bool(data.get("dark", True)), variables=variables, **base)


def load_themes(extra_dir: Path | None = None) -> ThemeLoad:
    """The shipped themes, plus `*.toml` from ``extra_dir`` (e.g. ~/.config/gpuconsole/themes)."""
    result = ThemeLoad()
    shipped = sorted(resources.files("gpuconsole.themes").iterdir(), key=lambda e: e.name)
    sources = [(e.name, e.read_text(encoding="utf-8")) for e in shipped if e.name.endswith(".toml")]
    if extra_dir is not None and extra_dir.is_dir():
        sources += [(str(p), p.read_text(encoding="utf-8")) for p in sorted(extra_dir.glob("*.toml"))]
    for origin, text in sources:
        try:
            result.themes.append(theme_from_toml(text, origin))
        except ValueError as exc:
            result.failed.append(str(exc))
    return result
