"""The shell mode's checks on the node (node/ptyshell.py): only the caller's own live reservation
opens a shell, its GPUs come from the node's record, and the request line is checked field by field."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from gpuconsole.node import ptyshell
from gpuconsole.node import state as st


def _state() -> Any:
    lease = {"id": "r-mine", "uid": 1000, "owner": "alice", "gpus": [2, 5], "token": 1, "priority": 1,
             "exp_bt": 200.0, "exp_wall": 0.0, "created_wall": 0.0}
    return {"leases": {"r-mine": lease,
                       "r-old": {**lease, "id": "r-old", "exp_bt": 99.0},
                       "r-bob": {**lease, "id": "r-bob", "uid": 1001, "owner": "bob"},
                       "j-job": {**lease, "id": "j-job", "job": True}},
            "queue": {"r-wait": {"id": "r-wait"}}}


@pytest.mark.parametrize(("rid", "code"), [("r-old", "not_found"), ("r-gone", "not_found"), ("r-wait", "not_found"),
                                           ("r-bob", "permission"), ("j-job", "invalid")])
def test_only_the_callers_live_reservation_opens_a_shell(rid: str, code: str) -> None:
    ctx = st.Ctx(1000, "alice", 100.0, 0.0, 8, admin=True)  # an admin too: a shell is never on others' GPUs
    with pytest.raises(st.OpError) as refused:
        ptyshell.check_lease(_state(), ctx, rid)
    assert refused.value.code == code


def test_the_gpus_come_from_the_nodes_record() -> None:
    assert ptyshell.check_lease(_state(), st.Ctx(1000, "alice", 100.0, 0.0, 8), "r-mine") == [2, 5]


@pytest.mark.parametrize("line", [b"not json\n", b"[]\n", b'{"hello": {}, "reservation": 3}\n',
                                  b'{"hello": {}, "reservation": "r-1", "argv": []}\n',
                                  b'{"hello": {}, "reservation": "r-1", "argv": ["a\\u0000b"]}\n',
                                  b'{"hello": [], "reservation": "r-1"}\n'])
def test_a_bad_request_line_is_refused(line: bytes) -> None:
    with pytest.raises(st.OpError) as refused:
        ptyshell.read_request(io.BytesIO(line))
    assert refused.value.code == "invalid"


def test_a_request_line_is_read_whole() -> None:
    line = json.dumps({"hello": {"node": "n"}, "reservation": "r-1", "argv": ["nvidia-smi", "-L"]}).encode() + b"\n"
    assert ptyshell.read_request(io.BytesIO(line)) == ({"node": "n"}, "r-1", ["nvidia-smi", "-L"])
