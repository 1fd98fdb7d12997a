"""Issue 13 item 2: every flag, argument and subcommand of the CLI says what it is for in `--help`."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from gpuconsole.cli.parser import build_parser

Walk = Iterator[tuple[str, argparse.ArgumentParser]]


def _parsers(parser: argparse.ArgumentParser, path: str = "gpuconsole") -> Walk:
    """The parser and every subparser below it (cloud up/ls/down included), each with its command path."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def _subcommand_helps(parser: argparse.ArgumentParser) -> dict[str, str | None]:
    """Each subcommand's one-line help, as the `COMMAND` list of `--help` shows it."""
    helps: dict[str, str | None] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = {choice.dest: choice.help for choice in action._choices_actions}
            helps.update({name: listed.get(name) for name in action.choices})
    return helps


def test_the_walk_reaches_the_cloud_actions() -> None:
    paths = [path for path, _ in _parsers(build_parser())]
    assert {"gpuconsole", "gpuconsole reserve", "gpuconsole cloud up", "gpuconsole cloud down"} <= set(paths)


def test_every_flag_and_argument_has_help() -> None:
    missing = [
        f"{path} {'/'.join(action.option_strings) or action.dest}"
        for path, parser in _parsers(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction | argparse._VersionAction | argparse._SubParsersAction)
        and not (isinstance(action.help, str) and action.help.strip())
    ]
    assert missing == [], "no help text: " + ", ".join(missing)


def test_every_subcommand_has_help() -> None:
    missing = [
        f"{path} {name}"
        for path, parser in _parsers(build_parser())
        for name, text in _subcommand_helps(parser).items()
        if not (text and text.strip())
    ]
    assert missing == [], "no help text: " + ", ".join(missing)
