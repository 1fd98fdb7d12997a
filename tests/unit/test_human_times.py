"""Times as people read them (gpuconsole.format): tables and the console say 'until 23:16 UTC (in 3h58m)',
'3h58m left', 'ended 5m ago'; a node's garbage time is shown as a dash, never crashes."""

from __future__ import annotations

import pytest

from gpuconsole.format import NA, ago_h, epoch_s, left_h, until_h

NOW_S = epoch_s("2026-12-01T19:18:00Z")


def test_future_end_reads_as_clock_and_countdown() -> None:
    assert NOW_S is not None
    assert until_h("2026-12-01T23:16:00Z", NOW_S) == "until 23:16 UTC (in 3h58m)"
    assert left_h("2026-12-01T23:16:00Z", NOW_S) == "3h58m left"


def test_past_end_reads_as_ago() -> None:
    assert NOW_S is not None
    assert until_h("2026-12-01T19:13:00Z", NOW_S) == "ended 5m ago"
    assert left_h("2026-12-01T19:13:00Z", NOW_S) == "expired 5m ago"
    assert ago_h("2026-12-01T19:13:00Z", NOW_S) == "5m ago"


@pytest.mark.parametrize("garbage", ["", "soon", "2026-13-45T99:00:00Z", "\x1b]2;x\x07", "9" * 400])
def test_a_nodes_garbage_time_is_a_dash(garbage: str) -> None:
    assert NOW_S is not None
    assert until_h(garbage, NOW_S) == left_h(garbage, NOW_S) == ago_h(garbage, NOW_S) == NA


def test_an_end_more_than_a_day_out_names_its_date() -> None:
    assert NOW_S is not None
    assert until_h("2026-12-03T23:16:00Z", NOW_S) == "until Dec 03 23:16 UTC (in 2d3h)"
