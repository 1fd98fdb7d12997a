"""Checks for JSON that comes from outside (agent replies): strict types, sanitized numbers, and one
error that names where the value went wrong (`gpus[0].index: expected an integer, got 'abc'`).

A check is a function `(value, path) -> clean value`; it raises WireError or returns a value of the
declared type. Numbers that are measurements (None = not available) become None when not finite or
absurdly large, so nothing downstream ever sees NaN or inf; structural numbers (indices, counts,
tokens) must be in range or the whole reply is refused.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

Check = Callable[[Any, str], Any]
INT64_MAX = 2**63 - 1
MAX_DEPTH = 32  # deeper than any agent reply; bounds the recursion of plain()
_DESCRIBE_CHARS = 40
# ISO 8601 UTC as the agent writes it (st.iso_utc), optionally with fractions of a second.
_ISO_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z", re.ASCII)


class WireError(Exception):
    """A value that does not fit its schema: `path` says where, `problem` what."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path or 'reply'}: {problem}")
        self.path = path
        self.problem = problem


def describe(value: Any) -> str:
    """A short, printable description of a bad value (never its whole text)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int) and value.bit_length() > 64:
        return "a huge integer"
    text = repr(value)  # repr escapes control characters
    return text if len(text) <= _DESCRIBE_CHARS else text[: _DESCRIBE_CHARS - 1] + "…"


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def integer(lo: int = 0, hi: int = INT64_MAX) -> Check:
    """A whole number in [lo, hi] (a float with no fraction is accepted as one)."""

    def check(value: Any, path: str) -> int:
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise WireError(path, f"expected an integer, got {describe(value)}")
        if not lo <= value <= hi:
            raise WireError(path, f"{describe(value)} is out of range {lo}..{hi}")
        return value

    return check


def _finite(value: Any, path: str) -> float | None:
    """A measurement as a float; None when missing, not finite or beyond int64 (a broken sensor)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WireError(path, f"expected a number, got {describe(value)}")
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) and abs(number) <= INT64_MAX else None


def metric(value: Any, path: str) -> float | None:
    """A measured quantity (percent, watts, seconds): float or None."""
    return _finite(value, path)


def metric_int(value: Any, path: str) -> int | None:
    """A measured count (bytes, MiB, bytes per second): int or None."""
    number = _finite(value, path)
    return None if number is None else int(value if isinstance(value, int) else number)


def string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise WireError(path, f"expected a string, got {describe(value)}")
    return value


def boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise WireError(path, f"expected true or false, got {describe(value)}")
    return value


def iso_time(value: Any, path: str) -> str:
    """An ISO 8601 UTC time such as 2030-01-01T00:00:00Z that datetime can read."""
    text = string(value, path)
    if _ISO_UTC.fullmatch(text):
        try:
            datetime.fromisoformat(text.replace("Z", "+00:00"))
            return text
        except ValueError:
            pass
    raise WireError(path, f"expected an ISO 8601 UTC time, got {describe(value)}")


def nullable(check: Check) -> Check:
    """`check`, or null."""

    def nullable_check(value: Any, path: str) -> Any:
        return None if value is None else check(value, path)

    return nullable_check


def list_of(item: Check, *, unique: str | None = None) -> Check:
    """A list whose items all pass `item`; with `unique`, no two items share that field's value."""

    def check(value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise WireError(path, f"expected a list, got {describe(value)}")
        out = [item(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if unique is not None:
            seen: set[Any] = set()
            for i, v in enumerate(out):
                if v[unique] in seen:
                    raise WireError(f"{path}[{i}].{unique}", f"duplicate {describe(v[unique])}")
                seen.add(v[unique])
        return out

    return check


ABSENT: Any = object()  # an Opt default: a field absent from the reply stays absent


@dataclass(frozen=True, slots=True)
class Opt:
    """An optional field: `default` is filled in when the key is absent (unless it is ABSENT)."""

    check: Check
    default: Any = None


def obj(fields: Mapping[str, Check | Opt]) -> Check:
    """An object with these fields (a bare check means required). Other keys are kept, made
    plain (so JSON output of them stays valid), for fields this client does not know yet."""

    def check(value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise WireError(path, f"expected an object, got {describe(value)}")
        out = {key: plain(v, join(path, key)) for key, v in value.items() if key not in fields}
        for key, spec in fields.items():
            where = join(path, key)
            if isinstance(spec, Opt):
                if key in value:
                    out[key] = spec.check(value[key], where)
                elif spec.default is not ABSENT:
                    out[key] = _copy(spec.default)
            elif key in value:
                out[key] = spec(value[key], where)
            else:
                raise WireError(where, "missing")
        return out

    return check


def variant(key: str, cases: Mapping[str, Check]) -> Check:
    """An object whose shape depends on the string in `key` (e.g. state granted / queued)."""

    def check(value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise WireError(path, f"expected an object, got {describe(value)}")
        tag = value.get(key)
        if not isinstance(tag, str) or tag not in cases:
            choices = " or ".join(repr(c) for c in cases)
            raise WireError(join(path, key), f"expected {choices}, got {describe(tag)}")
        result: dict[str, Any] = cases[tag](value, path)
        return result

    return check


def plain(value: Any, path: str = "", depth: int = 0) -> Any:
    """Any JSON value, with non-finite numbers as null and a bounded depth."""
    if depth > MAX_DEPTH:
        raise WireError(path, "nested too deeply")
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [plain(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): plain(v, join(path, str(k)), depth + 1) for k, v in value.items()}
    raise WireError(path, f"not a JSON value: {describe(value)}")


def _copy(default: Any) -> Any:
    return list(default) if isinstance(default, list) else default
