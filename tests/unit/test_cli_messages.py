"""Issue 13 item 2 (first slice): `--version`, one `gpuconsole:` prefix on argparse's errors, and
"did you mean" for a mistyped command — through the real entry point."""

from __future__ import annotations

from gpuconsole import __version__
from tests.helpers import run_cli


def test_version_prints_the_version_on_stdout() -> None:
    result = run_cli("--version")
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, f"gpuconsole {__version__}", "")


def test_a_mistyped_command_gets_one_prefix_and_a_suggestion() -> None:
    result = run_cli("stauts")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gpuconsole: ") and lines[0].count("gpuconsole") == 1, lines[0]
    assert "did you mean 'status'?" in lines[0]


def test_a_subcommand_error_names_the_subcommand_once() -> None:
    result = run_cli("reserve", "--gpus", "two")
    assert result.returncode == 2
    assert result.stderr.startswith("gpuconsole: reserve: "), result.stderr
    assert result.stderr.count("gpuconsole") == 1, result.stderr


def test_nothing_close_gets_no_suggestion() -> None:
    result = run_cli("xyzzy")
    assert result.returncode == 2
    assert "did you mean" not in result.stderr
    assert "invalid choice: 'xyzzy'" in result.stderr
