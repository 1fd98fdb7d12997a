"""Headless paths must not pay for Textual or boto3 (and `--help` not even for asyncssh)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent(
    """
    import sys
    from gpuconsole.cli import main
    try:
        code = main({argv!r})
    except SystemExit as exc:
        code = exc.code
    heavy = sorted(m for m in ("textual", "boto3", "botocore", "asyncssh", "rich") if m in sys.modules)
    print("LOADED=" + ",".join(heavy), file=sys.stderr)
    """
)


def _loaded_modules(argv: list[str]) -> set[str]:
    result = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)],
                            capture_output=True, text=True, timeout=60)
    line = [x for x in result.stderr.splitlines() if x.startswith("LOADED=")][-1]
    return set(filter(None, line.removeprefix("LOADED=").split(",")))


def test_help_imports_no_textual_boto3_or_asyncssh() -> None:
    loaded = _loaded_modules(["--help"])
    assert not loaded & {"textual", "boto3", "botocore", "asyncssh"}, loaded


@pytest.mark.parametrize("argv", [["reserve", "--help"], ["reserve", "--gpus", "1"], ["status", "--json"]])
def test_headless_commands_import_no_textual_or_boto3(
    argv: list[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    config = tmp_path_factory.mktemp("cfg") / "c.toml"
    config.write_text("[[nodes]]\nname = 'n1'\nhost = '127.0.0.1'\nport = 1\nconnect_timeout = 1\n")
    loaded = _loaded_modules(["--config", str(config), *argv])
    assert not loaded & {"textual", "boto3", "botocore"}, loaded


def test_json_reserve_path_does_not_import_rich(tmp_path_factory: pytest.TempPathFactory) -> None:
    config = tmp_path_factory.mktemp("cfg") / "c.toml"
    config.write_text("[[nodes]]\nname = 'n1'\nhost = '127.0.0.1'\nport = 1\nconnect_timeout = 1\n")
    loaded = _loaded_modules(["--config", str(config), "reserve", "--gpus", "1", "--json"])
    assert "rich" not in loaded


@pytest.mark.parametrize("argv", [["status", "--json"], ["reservations", "--json"], ["jobs", "--json"],
                                  ["doctor", "--json"]])
def test_json_read_paths_do_not_import_rich(argv: list[str], tmp_path_factory: pytest.TempPathFactory) -> None:
    """Printing JSON (the answers and the unreachable node's error) needs no rich (issue 14)."""
    config = tmp_path_factory.mktemp("cfg") / "c.toml"
    config.write_text("[[nodes]]\nname = 'n1'\nhost = '127.0.0.1'\nport = 1\nconnect_timeout = 1\n")
    loaded = _loaded_modules(["--config", str(config), *argv])
    assert "rich" not in loaded, loaded


def test_model_is_stdlib_only() -> None:
    code = ("import sys, gpuconsole.model, gpuconsole.node.agent, gpuconsole.node.state; "
            "print(','.join(m for m in ('asyncssh','rich','textual','boto3','psutil') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
