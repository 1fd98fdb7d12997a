"""The CLI's typed arguments: every command line becomes its command's frozen dataclass in one place
(gpuconsole.cli.parser.options), and no handler takes `Any`."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import typing

import pytest

from gpuconsole.cli import options as o
from gpuconsole.cli.parser import COMMANDS, build_parser, options, parse
from gpuconsole.core.keeper_fleet import KeeperFleet
from gpuconsole.core.registry import Registry
from gpuconsole.errors import UsageError

LINES = [
    ([], o.ConsoleArgs(None, None, False)),
    (["--theme", "t", "--readonly", "--config", "c.toml"], o.ConsoleArgs("c.toml", "t", True)),
    (["status", "--node", "n", "--json", "--watch"], o.StatusArgs(None, "n", True, 2.0)),
    (["status", "--gpus", "--free", "--sort", "util", "--user", "ann"],
     o.StatusArgs(None, None, False, None, gpus=True, free=True, sort="util", user="ann")),
    (["reserve", "--gpus", "2", "--for", "1h", "--wait", "--timeout", "5m", "--priority", "high", "--preemptible"],
     o.ReserveArgs(None, 2, None, "1h", True, "5m", "high", True, False, False, False)),
    (["reserve", "--gpus", "1", "--export"],
     o.ReserveArgs(None, 1, None, None, False, None, "normal", False, False, False, True)),
    (["release", "a", "b", "--token", "7", "--config", "x"], o.ReleaseArgs("x", ("a", "b"), False, 7, False)),
    (["release", "--mine", "--json"], o.ReleaseArgs(None, (), True, None, True)),
    (["renew", "r-1", "--for", "2h"], o.RenewArgs(None, "r-1", "2h", None, False)),
    (["reservations", "--json"], o.ReservationsArgs(None, True)),
    (["reservations", "--mine"], o.ReservationsArgs(None, False, mine=True)),
    (["reservations", "--user", "ann"], o.ReservationsArgs(None, False, user="ann")),
    (["submit", "--gpus", "1", "--name", "x", "--grace", "3", "--requeue", "--", "python", "-c", "1"],
     o.SubmitArgs(None, 1, None, "normal", False, True, "x", 3.0, False, False, ("--", "python", "-c", "1"))),
    (["submit", "--gpus", "1", "--array", "0-9:2", "--", "true"],
     o.SubmitArgs(None, 1, None, "normal", False, False, None, None, False, False, ("--", "true"), array="0-9:2")),
    (["reserve", "--gpus", "1", "--burst", "--yes"],
     o.ReserveArgs(None, 1, None, None, False, None, "normal", False, True, False, False, True)),
    (["jobs"], o.JobsArgs(None, False)),
    (["jobs", "--mine", "--user", "bob", "--state", "queued"], o.JobsArgs(None, False, True, "bob", "queued")),
    (["logs", "j-1", "-f"], o.LogsArgs(None, "j-1", True)),
    (["logs", "j-1", "-f", "--tail", "5"], o.LogsArgs(None, "j-1", True, 5)),
    (["preempt", "j-1", "--grace", "0"], o.PreemptArgs(None, "j-1", 0.0)),
    (["cancel", "j-1", "--json"], o.CancelArgs(None, "j-1", True)),
    (["cloud", "up", "--gpus", "4", "--spot"], o.CloudUpArgs(None, None, 4, True, 1, False, "10m", False)),
    (["cloud", "ls", "--all"], o.CloudLsArgs(None, True, False)),
    (["cloud", "down", "i-0123456789abcdef0", "--stop"], o.CloudDownArgs(None, ("i-0123456789abcdef0",), True, False)),
    (["cloud", "down", "--mine", "--idle", "--force"], o.CloudDownArgs(None, (), False, False, True, True, True)),
    (["watch", "--once", "--notify", "a://", "--notify", "b://"], o.WatchArgs(notify=("a://", "b://"), once=True)),
    (["watch"], o.WatchArgs()),
    (["doctor", "--json"], o.DoctorArgs(None, True)),
    (["init", "--host", "a", "--host", "b", "--force"], o.InitArgs(None, False, True, ("a", "b"))),
    (["init", "-y"], o.InitArgs(None, True, False)),
    (["node-install", "--print", "--simulate-gpus", "2"], o.NodeInstallArgs(None, True, None, None, None, 2)),
    (["completion", "zsh"], o.CompletionArgs(None, "zsh")),
    (["keeper", "status", "--json"], o.KeeperArgs(None, "status", True)),
    (["--no-keeper", "keeper", "stop"], o.KeeperArgs(None, "stop")),
    (["shell", "--gpus", "2", "--node", "n", "--for", "6s", "--keep"], o.ShellArgs(None, 2, "n", "6s", None, True, ())),
    (["shell", "--reservation", "r-1", "--", "nvidia-smi", "-L"],
     o.ShellArgs(None, None, None, None, "r-1", False, ("--", "nvidia-smi", "-L"))),
]


@pytest.mark.parametrize(("argv", "expected"), LINES, ids=[" ".join(a) or "console" for a, _ in LINES])
def test_a_command_line_becomes_its_typed_arguments(argv: list[str], expected: o.Options) -> None:
    assert parse(argv) == expected


def test_demo_arguments_carry_the_console_flags() -> None:
    opts = parse(["--theme", "t", "demo", "--nodes", "2", "--no-cloud"])
    assert isinstance(opts, o.DemoArgs)
    assert (opts.nodes, opts.no_cloud, opts.theme, opts.readonly) == (2, True, "t", False)


def test_a_bad_line_is_still_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--gpus"):
        parse(["reserve", "--gpus", "0"])


def test_options_are_frozen() -> None:
    opts = parse(["jobs"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.json = True  # type: ignore[misc,union-attr]


HANDLER_MODULES = ("cloud", "completion", "console", "demo", "doctor", "init", "jobs", "keeper", "node_install",
                   "reservations", "shell", "status", "watch")


@pytest.mark.parametrize("module", HANDLER_MODULES)
def test_no_handler_takes_any(module: str) -> None:
    """Every public `run_*` handler is annotated with the typed arguments of its command."""
    mod = importlib.import_module(f"gpuconsole.cli.{module}")
    handlers = [f for name, f in vars(mod).items() if name.startswith("run_") and inspect.isfunction(f)
                and f.__module__ == mod.__name__]
    assert handlers
    typed = set(COMMANDS.values()) | {o.CloudUpArgs, o.CloudLsArgs, o.CloudDownArgs}
    for handler in handlers:
        # A handler may name Registry or Members for type checking only (cli/status.py,
        # cli/reservations.py: asyncssh is imported when the keeper does not answer).
        hints = typing.get_type_hints(handler, {"Registry": Registry, "Members": Registry | KeeperFleet, **vars(mod)})
        hints.pop("return", None)
        assert typing.Any not in hints.values(), handler.__name__
        last = list(hints.values())[-1]
        members = set(typing.get_args(last)) or {last}
        assert members <= typed, f"{handler.__name__}: {last}"


@pytest.mark.parametrize("argv", [
    ["reserve", "--gpus", "2", "--json"], ["--config", "jobs", "reserve", "--gpus", "1"], ["--theme", "status"],
    ["status", "--json", "--node", "reserve"], ["submit", "--gpus", "1", "--", "jobs", "--json"],
    ["cloud", "up", "--gpus", "1"], ["jobs", "--no-keeper"], ["--no-color", "keeper", "status"],
])
def test_one_commands_branch_parses_as_the_whole_tree(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """parse() builds only the branch of the first word naming a command; when that word was
    something else (an option's value), the whole tree decides, so the answer is always the same."""
    # parse() sets NO_COLOR and GPUCONSOLE_KEEPER for --no-color / --no-keeper: undone after the test
    # (a NO_COLOR left behind turns every later console snapshot in this process colourless).
    monkeypatch.setenv("NO_COLOR", "")  # recorded as absent before: undone by deleting it
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("GPUCONSOLE_KEEPER", "0")
    assert parse(argv) == options(build_parser().parse_args(argv))
