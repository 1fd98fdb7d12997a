"""`gpuconsole init`: a first config, written from the `Host` entries of ~/.ssh/config and checked
with `doctor`.

The file explains every key in comments (from the one table of keys in gpuconsole/config), with the
chosen hosts as `[[nodes]]`: `host` is the alias, so the ssh config stays the one place that says
where and as whom. Host keys are never added: a node whose key is not in known_hosts gets doctor's
failure line and the command that adds it after an out-of-band check.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from gpuconsole.cli.options import InitArgs
from gpuconsole.cli.output import say, warn
from gpuconsole.config import (
    AWS,
    CLUSTERS,
    DEFAULTS,
    EXPORTER,
    NAME_RE,
    NODES,
    WATCH,
    AwsConfig,
    ClusterConfig,
    Defaults,
    ExporterConfig,
    NodeConfig,
    WatchConfig,
    parse_config,
    resolve_config_path,
)
from gpuconsole.config.keys import Section
from gpuconsole.errors import ExitCode, UsageError

# Example values of keys without a default (uncommented, each is valid: tests/integration/test_init.py).
EXAMPLES = {
    "user": '"alice"', "identity_file": '"~/.ssh/id_ed25519"', "known_hosts": '"~/.ssh/known_hosts"',
    "ssh_config": '"~/.ssh/config"', "theme": '"gpuconsole-dark"', "name": '"dgx-01"', "host": '"dgx-01.lab"',
    "port": "22", "reserve_for": '"4h"', "region": '"us-east-1"', "endpoint_url": '"http://127.0.0.1:5000"',
    "ami": '"ami-0123456789abcdef0"', "key_name": '"team-key"', "subnet_id": '"subnet-0123456789abcdef0"',
    "security_group_ids": '["sg-0123456789abcdef0"]', "instance_types": '["g6.xlarge", "g5.xlarge"]',
    "prices": '{ "g5.xlarge" = 1.006 }', "host_map": '"hosts.json"', "notify": '["ntfy://ntfy.sh/our-gpus"]',
    "exec": '"/usr/local/bin/page-owner"', "listen": '"127.0.0.1:9400"', "web_config": '"web.yml"',
    "kind": '"slurm"', "login": '"login.hpc"',
}


def run_init(opts: InitArgs) -> int:
    from gpuconsole.ssh.localfiles import USER_SSH_CONFIG, host_aliases

    path = resolve_config_path(opts.config)
    aliases = host_aliases()
    interactive = sys.stdin.isatty()
    if path.exists() and not (opts.force or opts.yes):
        if not interactive:
            raise UsageError(f"init: {path} exists; --force (or --yes) overwrites it (the old one is kept as "
                             f"{path.name}.bak)")
        if not _ask(f"{path} exists: overwrite it (the old one is kept as {path.name}.bak)? [y/N] "):
            say(f"left {path} as it was")
            return int(ExitCode.OK)
    chosen = _choose(opts, aliases, interactive, USER_SSH_CONFIG)
    text = config_text(chosen)
    config = parse_config(text, path)  # what is written always loads
    _write(path, text)
    say(f"wrote {path} with {len(chosen)} node(s)" + ("" if chosen else ": add [[nodes]] entries to it"))
    if not chosen:
        return int(ExitCode.OK)
    from gpuconsole.cli.doctor import examine, show
    from gpuconsole.core.registry import Registry

    say("checking them with `gpuconsole doctor`:")
    document, code = examine(Registry(config))
    show(document, len(config.nodes))
    if code != int(ExitCode.OK):
        say("the config is written; fix what failed above, then run `gpuconsole doctor`")
    return int(ExitCode.OK)


def _ask(question: str) -> bool:
    try:
        return input(question).strip().lower() in ("y", "yes")
    except (EOFError, UnicodeDecodeError):  # no answer, or bytes that are no text: no
        return False


def _choose(opts: InitArgs, aliases: list[str], interactive: bool, ssh_config: str) -> list[str]:
    """The hosts to write as nodes: --host's, every alias with --yes, else the terminal's answer."""
    if opts.hosts:
        chosen = list(dict.fromkeys(opts.hosts))
    elif opts.yes or not aliases:
        chosen = aliases
    elif not interactive:
        raise UsageError(f"init: choose nodes with --host NAME (repeatable) or --yes for every Host of {ssh_config}: "
                         + ", ".join(aliases))
    else:
        chosen = _pick(aliases, ssh_config)
    bad = [name for name in chosen if not NAME_RE.fullmatch(name)]  # fullmatch: `$` takes a final \n
    if bad and (opts.hosts or not interactive):
        raise UsageError(f"init: not a valid node name (letters, digits, '.', '_', '-'): {', '.join(bad)}")
    for name in bad:
        warn(f"init: {name!r} left out: not a valid node name (letters, digits, '.', '_', '-')")
    return [name for name in chosen if NAME_RE.fullmatch(name)]


def _pick(aliases: list[str], ssh_config: str) -> list[str]:
    """Ask on the terminal which Host entries become nodes (all by default)."""
    from gpuconsole.ssh.localfiles import resolve

    say(f"Host entries in {ssh_config}:")
    for number, alias in enumerate(aliases, start=1):
        try:
            target = resolve(alias).target()
        except (OSError, ValueError):
            target = "?"
        say(f"  {number:>3}  {alias}  ({target})")
    while True:
        try:
            answer = input("nodes to include (numbers or names, space-separated; 'all'; 'none') [all]: ").strip()
        except (EOFError, UnicodeDecodeError):
            answer = "none"
        if answer in ("", "all"):
            return aliases
        if answer == "none":
            return []
        picked, unknown = [], []
        for word in answer.replace(",", " ").split():
            if word.isdigit() and 1 <= int(word) <= len(aliases):
                picked.append(aliases[int(word) - 1])
            elif word in aliases:
                picked.append(word)
            else:
                unknown.append(word)
        if not unknown:
            return list(dict.fromkeys(picked))
        say(f"not in the list: {', '.join(unknown)}")


def config_text(hosts: list[str]) -> str:
    """The commented config: every key of every section with what it is for (commented out at
    its default or an example), and one [[nodes]] entry per host (its ssh config alias)."""
    parts = [
        "# gpuconsole config, written by `gpuconsole init`. Every key is listed with what it is for;\n",
        "# a commented-out key keeps its default, the value shown unless marked (example). README \"Configuration\".\n",
        "\n",
        *_section(DEFAULTS, Defaults(), header=True),
    ]
    for host in hosts:
        parts += [
            "\n",
            f"# {host}: where and as whom to connect come from your ssh config (Host {host})\n",
            "[[nodes]]\n",
            f"name = {json.dumps(host)}\n",
            f"host = {json.dumps(host)}\n",
        ]
    parts += ["\n", "# Another node: every [[nodes]] key ([defaults] gives the ones left out).\n",
              *_section(NODES, NodeConfig(name="", host=""), header=False)]
    parts += ["\n", "# A Slurm cluster, fronted through its login node (Slurm decides; README \"Slurm clusters\").\n",
              *_section(CLUSTERS, ClusterConfig(name="", kind="", login=""), header=False,
                        examples={"name": '"hpc"'})]
    parts += ["\n", "# EC2 burst (credentials come from the boto3 chain: AWS_PROFILE, `aws configure`).\n",
              *_section(AWS, AwsConfig(region=""), header=False)]
    parts += ["\n", "# The idle-GPU watcher (`gpuconsole watch`) and the console's Alerts tab.\n",
              *_section(WATCH, WatchConfig(), header=True)]
    parts += ["\n", "# Prometheus metrics (`gpuconsole exporter`, `watch --metrics`).\n",
              *_section(EXPORTER, ExporterConfig(), header=False)]
    return "".join(parts)


def _section(section: Section, defaults: object, header: bool, examples: dict[str, str] | None = None) -> list[str]:
    """The section's lines: its header (commented unless ``header``), then each key commented out
    (`examples`: this section's own example values, where another section's would clash)."""
    examples = {**EXAMPLES, **(examples or {})}
    lines = [(section.header if header else f"# {section.header}") + "\n"]
    values = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(defaults)}  # type: ignore[arg-type]
    for key in section.keys:
        default = values.get(key.target)
        example = default in (None, "", ()) or key.name in ("name", "host")
        value = examples[key.name] if example or key.name in examples else _literal(default)
        lines.append(f"# {key.name} = {value}    # {key.doc}{' (example)' if example else ''}\n")
    return lines


def _literal(value: object) -> str:
    """A default as TOML (a key whose default is empty has an example instead)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise AssertionError(f"no example for a key whose default is {value!r}: add one to EXAMPLES")


def _write(path: Path, text: str) -> None:
    """Write atomically; an existing config is kept as PATH.bak."""
    from gpuconsole.node.fileio import write_atomic  # the one atomic write

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():  # a copy, so the config path is never without a config
        write_atomic(str(path.with_name(path.name + ".bak")), path.read_bytes(), 0o600)
    write_atomic(str(path), text.encode("utf-8"), 0o600)
