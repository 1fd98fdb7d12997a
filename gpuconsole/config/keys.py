"""The machinery of config keys: readers that check one TOML value each, a key (name, field,
reader, doc) and a section (a table of keys) that reads a TOML table into dataclass fields. Every
error names the file, the line and the key. The tables themselves are in gpuconsole/config/sections.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuconsole.durations import parse_duration_s
from gpuconsole.errors import ConfigError, UsageError

MODES = ("cooperative", "service")
CLUSTER_KINDS = ("slurm",)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
HOST_RE = re.compile(r"^[A-Za-z0-9_.:%-]{1,253}$")
USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")
PATH_RE = re.compile(r"^[A-Za-z0-9_./+~-]+$")
class Locator:
    """Finds the line of a key in the TOML text so errors can say `path:line: key: ...`."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line_of(self, table: str, key: str | None, index: int = 0) -> int:
        header_re = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\"-]+)\s*\]\]?")
        current, seen, table_line = "", -1, 0
        for lineno, raw in enumerate(self.lines, start=1):
            header = header_re.match(raw)
            if header:
                current = header.group(1).replace('"', "")
                if current == table:
                    seen += 1
                    if seen == index:
                        table_line = lineno
                continue
            if key and current == table and seen == index and re.match(
                rf"^\s*\"?{re.escape(key)}\"?\s*=", raw
            ):
                return lineno
        return table_line or 1

    def error(self, table: str, key: str | None, problem: str, index: int = 0) -> ConfigError:
        line = self.line_of(table, key, index)
        label = key if key else f"[{table}]"
        return ConfigError(f"{self.path}:{line}: {label}: {problem}")


AGENT_PATH_RE = re.compile(r"^/[A-Za-z0-9_./+-]+$")
AWS_ID_RE = re.compile(r"^[A-Za-z0-9._:/-]{1,255}$")
INSTANCE_TYPE_RE = re.compile(r"^[a-z0-9-]+\.[a-z0-9-]+$")
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
URL_RE = re.compile(r"^https?://[^\s]+$")
LISTEN_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}$")


@dataclass(frozen=True, slots=True)
class Where:
    """Where a value was read (for its error) and what relative paths are relative to."""

    loc: Locator
    table: str
    key: str
    index: int
    base_dir: Path

    def error(self, problem: str) -> ConfigError:
        return self.loc.error(self.table, self.key, problem, self.index)


Reader = Callable[[Any, Where], Any]  # a present value → the field's value, or raises where.error(...)


def text(pattern: re.Pattern[str] | None = None, *, invalid: str = "contains characters that are not allowed",
         choices: tuple[str, ...] = ()) -> Reader:
    """A non-empty string; matching ``pattern`` (else `'value' <invalid>`), one of ``choices``."""

    def read(value: Any, where: Where) -> str:
        if not isinstance(value, str) or not value:
            raise where.error("must be a non-empty string")
        if pattern is not None and not pattern.match(value):
            raise where.error(f"{value!r} {invalid}")
        if choices and value not in choices:
            raise where.error("must be " + " or ".join(f'"{c}"' for c in choices) + f", not {value!r}")
        return value

    return read


def agent_path(value: Any, where: Where) -> str:
    """An absolute path on the node, without `..`."""
    path: str = text(AGENT_PATH_RE)(value, where)
    if "/../" in path:
        raise where.error(f"{path!r} must be an absolute path without '..'")
    return path


def local_path(value: Any, where: Where) -> str:
    """A path on this machine: `~` expanded, relative to the config file's directory."""
    if not isinstance(value, str) or not value or "\0" in value:
        raise where.error("must be a non-empty path string")
    expanded = Path(value).expanduser()
    return str(expanded if expanded.is_absolute() else where.base_dir / expanded)


def number(minimum: float, maximum: float, *, integer: bool = False) -> Reader:
    """A number in [minimum, maximum] (an int field takes a TOML integer only)."""

    def read(value: Any, where: Where) -> float | int:
        if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
            raise where.error(f"must be {'an integer' if integer else 'a number'}, not {value!r}")
        if not minimum <= value <= maximum:
            raise where.error(f"{value} is out of range [{minimum:g}, {maximum:g}]")
        return int(value) if integer else float(value)

    return read


def duration(value: Any, where: Where) -> float:
    """A duration such as "4h" or 90 (seconds)."""
    try:
        return parse_duration_s(str(value), what=where.key)
    except UsageError as exc:
        raise where.error(str(exc).split(": ", 1)[-1]) from None


def boolean(value: Any, where: Where) -> bool:
    if not isinstance(value, bool):
        raise where.error(f"must be true or false, not {value!r}")
    return value


def names(pattern: re.Pattern[str]) -> Reader:
    """A list of names (or one name) matching ``pattern``."""

    def read(value: Any, where: Where) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) and pattern.match(v) for v in items):
            raise where.error("must be a list of names (letters, digits, '.', '-')")
        return tuple(items)

    return read


def urls(value: Any, where: Where) -> tuple[str, ...]:
    """A URL string or a list of them."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(u, str) for u in items):
        raise where.error("must be a URL string or a list of them")
    return tuple(items)


def prices(value: Any, where: Where) -> tuple[tuple[str, float], ...]:
    """A table of instance type = dollars per hour."""
    if not isinstance(value, dict):
        raise where.error("must be a table of instance type = dollars per hour")
    for type_name, price in value.items():
        if not INSTANCE_TYPE_RE.match(type_name) or isinstance(price, bool) or not isinstance(
            price, int | float
        ) or price < 0:
            raise where.error(f"{type_name} = {price!r}: want an instance type = dollars per hour")
    return tuple((type_name, float(price)) for type_name, price in value.items())


@dataclass(frozen=True, slots=True)
class Key:
    """One config key: its TOML `name`, the dataclass `field` it fills, its reader, what it is for;
    `required` is the error for a key that must be given."""

    name: str
    read: Reader
    doc: str
    field: str = ""
    required: str | None = None

    @property
    def target(self) -> str:
        return self.field or self.name


@dataclass(frozen=True, slots=True)
class Section:
    """A config table and its keys (in the order they are checked)."""

    header: str  # as written in the file: [defaults], [[nodes]], [cloud.aws], [watch]
    table: str  # as errors name it
    keys: tuple[Key, ...]

    def read(self, raw: dict[str, Any], loc: Locator, base_dir: Path, index: int = 0) -> dict[str, Any]:
        """{field: value} of the keys present in ``raw``; unknown keys and bad values are errors."""
        allowed = sorted(key.name for key in self.keys)
        for name in raw:
            if name not in allowed:
                raise loc.error(self.table, name, f"unknown key (allowed: {', '.join(allowed)})", index)
        values: dict[str, Any] = {}
        for key in self.keys:
            value = raw.get(key.name)
            if value is None:
                if key.required is not None:
                    raise loc.error(self.table, key.name, key.required, index)
                continue
            values[key.target] = key.read(value, Where(loc, self.table, key.name, index, base_dir))
        return values
