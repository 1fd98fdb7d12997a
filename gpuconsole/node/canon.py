"""The canonical body of a state (sorted keys, no spaces), encoded record by record so that a commit
re-encodes only the records that changed: behind 1,000 queued jobs a submit changes two records of
two thousand, and encoding the rest again was most of its time.

The output is byte for byte `json.dumps(body, sort_keys=True, separators=(",", ":"))`.
"""

from __future__ import annotations

import json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Mapping, Tuple

    Fragments = Dict[str, Dict[str, Tuple[Any, str]]]

# The state's maps of records by id (state.new_state): encoded a record at a time.
RECORD_MAPS = frozenset({"applied", "jobs", "leases", "queue"})


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _copy(value: Any) -> Any:
    """A copy of a record's containers that shares its (immutable) leaves, so comparing the record
    with it later mostly compares objects with themselves."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


class RecordEncoder:
    """canonical() with a memory: each record's encoding is reused while the record still equals the
    private copy taken when it was encoded (so a record changed in place is always re-encoded)."""

    def __init__(self) -> None:
        self._fragments: Fragments = {}

    def body(self, state: Mapping[str, Any]) -> str:
        """The canonical body of `state` without its checksum."""
        fragments: Fragments = {}
        parts = []
        for key in sorted(k for k in state if k != "checksum"):
            value = state[key]
            encoded = self._record_map(value, self._fragments.get(key, {})) if key in RECORD_MAPS else None
            if encoded is None:
                parts.append(json.dumps(key) + ":" + _dumps(value))
            else:
                parts.append(json.dumps(key) + ":{" + ",".join(text for _copy, text in encoded.values()) + "}")
                fragments[key] = encoded
        self._fragments = fragments
        return "{" + ",".join(parts) + "}"

    @staticmethod
    def _record_map(records: Any, known: dict[str, tuple[Any, str]]) -> dict[str, tuple[Any, str]] | None:
        """Each record's (copy, `"id":{...}` text) in id order; None when not a map of str ids."""
        if not isinstance(records, dict):
            return None
        encoded = {}
        for record_id in sorted(records):  # a non-str id among str ones fails here: TypeError
            record = records[record_id]
            entry = known.get(record_id)
            if entry is None or entry[0] != record:
                if not isinstance(record_id, str):
                    return None
                entry = (_copy(record), json.dumps(record_id) + ":" + _dumps(record))
            encoded[record_id] = entry
        return encoded
