"""Human `status` and `reservations` output that fits and reads like a person's (issue 13, item 1):
whole ids and GPU lists at 80 columns (lesser columns dropped instead), times as "3h58m left" and
"until 23:16 UTC (in 3h58m)", job grants labelled as jobs, a one-line-per-node summary when the
per-GPU table does not fit the screen, the --free/--user/--sort/--mine filters and a totals footer."""

from __future__ import annotations

import contextlib
import io
import re
import sys
from collections.abc import Callable

from rich.cells import cell_len

from gpuconsole.cli.output import console
from gpuconsole.cli.reservations import reservations_table
from gpuconsole.cli.status import render
from gpuconsole.cli.status_view import View
from gpuconsole.demo.cluster import DemoThread
from gpuconsole.model import NodeSnapshot, QueuedRequest, Reservation
from gpuconsole.textsafe import terminal_safe
from tests.helpers import FORBIDDEN, HOSTILE, cli_json, run_cli, submit_job, wait_for

ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d")
NARROW = {"COLUMNS": "80"}
WIDE = {"COLUMNS": "160"}


def assert_fits(text: str, columns: int) -> None:
    too_wide = [line for line in text.splitlines() if cell_len(line.rstrip()) > columns]
    assert not too_wide, f"lines wider than {columns}: {too_wide}"
    assert "…" not in text, text  # nothing was cut short


def table_rows(text: str) -> list[list[str]]:
    """The cells of each body row of the rich tables in `text`."""
    return [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")]


def test_reservations_at_80_columns_keep_whole_ids_gpu_lists_and_label_job_grants(demo: DemoThread) -> None:
    config = demo.config_path
    grant = cli_json("reserve", "--gpus", "3", "--node", "node-01", config=config)
    job = submit_job(config, "train", "--gpus", "1", "--node", "node-02",
                     argv=[sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        narrow = wait_for(lambda: (lambda r: r if job["id"] in r.stdout else None)(
            run_cli("reservations", config=config, env=NARROW)), timeout_s=20, message="the job's grant listed")
        assert narrow.returncode == 0, narrow.stderr
        assert_fits(narrow.stdout, 80)
        rows = {row[0]: row for row in table_rows(narrow.stdout)}
        assert set(rows) == {grant["id"], job["id"]}, narrow.stdout
        assert rows[grant["id"]][2:5] == ["node-01", "0,1,2", grant["owner"]], narrow.stdout
        assert rows[grant["id"]][1] == "reservation" and rows[job["id"]][1] == "job", narrow.stdout
        assert re.fullmatch(r"3h5\dm left", rows[grant["id"]][-1]), narrow.stdout  # a 4h lease, in words
        assert rows[job["id"]][-1] == "with job", narrow.stdout  # not a one-minute lease
        assert not ISO_TIME.search(narrow.stdout), narrow.stdout

        wide = run_cli("reservations", config=config, env=WIDE)
        assert wide.returncode == 0, wide.stderr
        header = next(line for line in wide.stdout.splitlines() if line.startswith("┃"))
        assert [h.strip() for h in header.split("┃")[1:-1]] == [
            "id", "kind", "node", "gpus", "owner", "priority", "state", "created", "expires"]
        row = {r[0]: r for r in table_rows(wide.stdout)}[grant["id"]]
        assert re.fullmatch(r"until \d\d:\d\d UTC \(in 3h5\dm\)", row[-1]) and row[-2].endswith("s ago"), row

        mine = run_cli("reservations", "--mine", config=config, env=NARROW)
        assert {r[0] for r in table_rows(mine.stdout)} == {grant["id"], job["id"]}, mine.stdout
        nobody = run_cli("reservations", "--user", "nobody-here", config=config)
        assert nobody.returncode == 0 and nobody.stdout == "no reservations of nobody-here\n", nobody.stdout
        listed = cli_json("reservations", "--user", grant["owner"], config=config)["reservations"]
        assert {r["id"] for r in listed} == {grant["id"], job["id"]}
        assert grant["expires_at"] in {r["expires_at"] for r in listed}  # JSON keeps ISO 8601
        both = run_cli("reservations", "--mine", "--user", "x", config=config)
        assert both.returncode == 2 and "not both" in both.stderr
    finally:
        run_cli("cancel", job["id"], config=config)


def test_status_summary_filters_sort_and_footer(demo: DemoThread) -> None:
    config = demo.config_path
    grant = cli_json("reserve", "--gpus", "4", "--node", "node-01", config=config)
    small = {"COLUMNS": "80", "LINES": "12"}  # 2 nodes × 4 GPUs do not fit 12 lines: one line per node

    summary = run_cli("status", config=config, env=small)
    assert summary.returncode == 0, summary.stderr
    assert_fits(summary.stdout, 80)
    assert "\nGPUs" not in summary.stdout and grant["id"] not in summary.stdout, summary.stdout
    rows = {row[0]: row for row in table_rows(summary.stdout)}
    assert set(rows) == {"node-01", "node-02"}
    assert "◐◐◐◐" in rows["node-01"] and "0/4" in rows["node-01"], rows  # four reserved GPUs, none free
    assert "○○○○" in rows["node-02"] and "4/4" in rows["node-02"], rows
    footer = summary.stdout.splitlines()[-1]
    assert footer.startswith("2/2 nodes up · 8 GPUs: ○ 4 free · ◐ 4 reserved") and "--gpus" in footer, footer

    every = run_cli("status", "--gpus", config=config, env=small)
    assert every.returncode == 0, every.stderr
    assert_fits(every.stdout, 80)
    gpu_rows = [r for r in table_rows(every.stdout) if len(r) > 1 and r[1].isdigit()]
    assert len(gpu_rows) == 8, every.stdout
    held = [r for r in gpu_rows if grant["id"] in r]
    assert len(held) == 4 and all(re.fullmatch(r"3h5\dm left", r[-1]) for r in held), every.stdout

    free = run_cli("status", "--free", config=config, env=NARROW)
    assert {r[0] for r in table_rows(free.stdout)} == {"node-02"}, free.stdout
    assert "showing 1 of 2 nodes" in free.stdout
    assert [n["name"] for n in cli_json("status", "--free", config=config)["nodes"]] == ["node-02"]
    users = run_cli("status", "--user", grant["owner"], "--gpus", config=config, env=NARROW)
    assert {r[0] for r in table_rows(users.stdout)} == {"node-01"}, users.stdout
    nobody = run_cli("status", "--user", "nobody-here", config=config)
    assert nobody.returncode == 0 and nobody.stdout == "no node matches\n", nobody.stdout  # no empty tables
    assert [n["name"] for n in cli_json("status", "--sort", "free", config=config)["nodes"]] == ["node-02", "node-01"]
    bad = run_cli("status", "--sort", "colour", config=config)
    assert bad.returncode == 2 and "--sort" in bad.stderr


def _printed(draw: Callable[[], None]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        draw()
    return out.getvalue()


def test_hostile_ids_and_owners_stay_whole_and_escaped_at_80_columns() -> None:
    reservation = Reservation(f"r-{HOSTILE}", "n1", (0, 1, 2, 3), HOSTILE, "normal", "active",
                              "2026-11-23T09:00:00Z", "2026-11-23T13:00:00Z", expires_in_s=3600.0)
    queued = QueuedRequest("q-1", "n1", 2, HOSTILE, "normal", 1, "2026-11-23T09:00:00Z")
    text = _printed(lambda: console(80).print(reservations_table([reservation], [queued], width=80)))
    assert not {c for c in text if c in FORBIDDEN}, text
    assert_fits(text, 80)
    ids = "".join(row[0] for row in table_rows(text)).replace(" ", "")
    assert ids == (terminal_safe(reservation.id) + "q-1").replace(" ", ""), text  # folded, never cut
    assert "0,1,2,3" in text

    gpu = {"index": 0, "uuid": "GPU-0", "name": HOSTILE, "util_pct": 1.0, "mem_used_mib": 1, "mem_total_mib": 2,
           "temperature_c": 30, "power_w": 70, "processes": [],
           "reservation": {"id": f"r-{HOSTILE}", "owner": HOSTILE, "expires_at": "2026-11-23T13:00:00Z"}}
    snap = NodeSnapshot.from_agent("n1", {"t_wall": 1795426200.0, "gpus": [gpu], "reservations": [], "queue": []})
    shown = _printed(lambda: render([snap], view=View(per_gpu=True), width=80))
    assert not {c for c in shown if c in FORBIDDEN}, shown
    assert_fits(shown, 80)
    assert "\\x1b]52;c;aGVsbG8=" in shown and "1 GPU: ○ 0 free · ◐ 1 reserved" in shown


def test_reserve_and_renew_say_when_the_lease_ends_as_people_read_it(demo: DemoThread) -> None:
    """The human lines of `reserve`, `reserve --export` (stderr) and `renew`: 'until 23:16 UTC (in
    3h59m)', never an ISO stamp (JSON keeps ISO 8601)."""
    config = demo.config_path
    reserved = run_cli("reserve", "--gpus", "1", "--for", "4h", config=config)
    assert reserved.returncode == 0, reserved.stderr
    line = reserved.stdout.splitlines()[0]
    assert re.search(r" until \d\d:\d\d UTC \(in 3h5\dm\)$", line) and not ISO_TIME.search(line), line
    rid = line.split()[1]
    exported = run_cli("reserve", "--gpus", "1", "--for", "30m", "--export", config=config)
    assert re.search(r" until \d\d:\d\d UTC \(in (29|30)m\)$", exported.stderr.strip()), exported.stderr
    renewed = run_cli("renew", rid, "--for", "6h", config=config)  # a renewal never shortens a lease
    assert renewed.returncode == 0, renewed.stderr
    assert re.fullmatch(rf"renewed {rid} on node-0\d until \d\d:\d\d UTC \(in (5h59m|6h)\)", renewed.stdout.strip())
