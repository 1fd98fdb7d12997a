"""`gpuconsole completion bash|zsh|fish`: a completion script that shtab generates from the very
parser the CLI runs (a new flag completes with no extra work), and the hidden
`gpuconsole __complete nodes|ids [--config PATH]` that the scripts call for values.

Values come only from local files — the config's node names and a small cache of the ids this
user's `reserve` and `submit` printed — so a TAB never contacts a node. A value reaches the shell
only if it matches SAFE_VALUE: bash's `compgen -W` expands every word it is given, so a node name
or id with `$(…)` in it would otherwise run.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from gpuconsole.cli.options import CompletionArgs

COMPLETE_COMMAND = "__complete"  # hidden: the scripts' way back in, not part of the CLI contract
SAFE_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_IDS = 30  # the newest ids kept for completion; older ones have usually ended anyway
MAX_CACHE_BYTES = 64 << 10  # far above MAX_IDS safe values; a bigger file is not ours and is ignored
_ID_COMMANDS = ("release", "renew", "logs", "preempt", "cancel")  # whose ID argument is ours

# The functions the scripts call for values. Each passes on a `--config PATH` typed earlier on the
# line and silences stderr; `__complete` filters the values, so the shells only list them.
_BASH = """
_gpuconsole_complete_{kind}() {{
  local i config=()
  for ((i = 1; i + 1 < COMP_CWORD; i++)); do
    [[ ${{COMP_WORDS[i]}} == --config ]] && config=(--config "${{COMP_WORDS[i+1]}}")
  done
  compgen -W "$(gpuconsole {command} {kind} "${{config[@]}}" 2>/dev/null)" -- "$1"
}}
"""
_ZSH = """
_gpuconsole_complete_{kind}() {{
  local -a values config
  [[ -n ${{opt_args[--config]}} ]] && config=(--config "${{opt_args[--config]}}")
  values=(${{(f)"$(gpuconsole {command} {kind} "${{config[@]}}" 2>/dev/null)"}})
  compadd -a values
}}
"""
_FISH = """
function _gpuconsole_complete_{kind}
  set -l tokens (commandline -opc)
  set -l config
  set -l at (contains -i -- --config $tokens)
  and test $at -lt (count $tokens)
  and set config --config $tokens[(math $at + 1)]
  gpuconsole {command} {kind} $config 2>/dev/null
end
"""


def _completer(kind: str) -> dict[str, object]:
    """A shtab `.complete` value: `gpuconsole __complete KIND` in each shell's own syntax."""
    fill = {"kind": kind, "command": COMPLETE_COMMAND}
    name = f"_gpuconsole_complete_{kind}"
    return {
        "bash": name, "zsh": name, "fish": f"({name})",
        "preamble": {"bash": _BASH.format(**fill), "zsh": _ZSH.format(**fill), "fish": _FISH.format(**fill)},
    }


Walk = Iterator[tuple[tuple[str, ...], argparse.Action]]


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Walk:
    """Every action of the parser and its subparsers, with the command path it belongs to."""
    for action in parser._actions:
        yield path, action
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, (*path, name))


def _takes_our_id(path: tuple[str, ...], action: argparse.Action) -> bool:
    """`--reservation ID`, or the ID argument of a command on this user's reservations and jobs."""
    if action.option_strings:
        return action.dest == "reservation"
    return action.dest in ("id", "ids") and bool(path) and path[0] in _ID_COMMANDS


def completing_parser() -> argparse.ArgumentParser:
    """The CLI's parser, its value arguments told what to complete: `--node` the config's node
    names, the ID of release/renew/logs/preempt/cancel and `--reservation` this user's recent ids,
    PATH a file."""
    import shtab

    from gpuconsole.cli.parser import build_parser

    parser = build_parser()
    for path, action in _walk(parser):
        if action.option_strings and action.dest == "node":
            action.complete = _completer("nodes")  # type: ignore[attr-defined]
        elif _takes_our_id(path, action):
            action.complete = _completer("ids")  # type: ignore[attr-defined]
        elif action.metavar == "PATH":
            action.complete = shtab.FILE  # type: ignore[attr-defined]
        elif action.metavar == "DIR":
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
    return parser


def completion_script(shell: str) -> str:
    """The completion script for `shell`: bash, zsh or fish (the parser's choices)."""
    import shtab

    return str(shtab.complete(completing_parser(), shell=shell))


def run_completion(args: CompletionArgs) -> int:
    """`completion SHELL`: print the script (needs no config: it is read on each TAB instead)."""
    sys.stdout.write(completion_script(args.shell))
    return 0


def print_candidates(argv: Sequence[str]) -> int:
    """The hidden `__complete nodes|ids [--config PATH]`: safe values, one a line, always exit 0.
    It runs inside the user's shell on every TAB, so whatever goes wrong it prints nothing."""
    try:
        kind, rest = (argv[0], list(argv[1:])) if argv else ("", [])
        config = rest[1] if rest[:1] == ["--config"] and len(rest) > 1 else None
        values = _node_names(config) if kind == "nodes" else recent_ids() if kind == "ids" else []
        sys.stdout.write("".join(f"{value}\n" for value in values if SAFE_VALUE.fullmatch(value)))
        sys.stdout.flush()
    except Exception:  # a bad config, an unreadable cache, a closed pipe: no candidates, no noise
        pass
    return 0


def _node_names(config_path: str | None) -> list[str]:
    """The config file's node names (cloud nodes would need an AWS call: not for a TAB)."""
    from gpuconsole.config import load_config

    return [node.name for node in load_config(config_path).nodes]


def ids_cache_path() -> Path:
    """`$XDG_CACHE_HOME/gpuconsole/ids`: this user's recent reservation and job ids."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gpuconsole" / "ids"


def recent_ids() -> list[str]:
    """The cached ids, newest last (a missing or unreadable cache is empty). Read as a regular file
    of bounded size: a FIFO or a link in its place would otherwise hang every TAB and `reserve`."""
    from gpuconsole.node.fileio import read_regular

    try:
        text = read_regular(str(ids_cache_path()), limit=MAX_CACHE_BYTES).decode("utf-8", errors="replace")
    except (OSError, ValueError):
        return []
    return [line for line in text.splitlines() if SAFE_VALUE.fullmatch(line)]


def remember_id(value: str) -> None:
    """Add an id `reserve` or `submit` just printed to the completion cache. Best effort: a cache
    that cannot be written never fails the command, and two commands racing may drop one id."""
    if not SAFE_VALUE.fullmatch(value):
        return
    from gpuconsole.node.fileio import write_atomic

    path = ids_cache_path()
    kept = [*[line for line in recent_ids() if line != value][-(MAX_IDS - 1):], value]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(str(path), "".join(f"{line}\n" for line in kept).encode("utf-8"), 0o600)
    except OSError:
        pass
