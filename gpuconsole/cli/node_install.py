"""`gpuconsole node-install`: the service-mode setup of a node, and the agent file an admin installs.

Service mode (README "Trust model") needs an admin on each node once: a service account, a state
dir only it can write, the service agent program (root-owned, at a fixed path) and one sudoers
line that lets the gpu group run exactly that program as the service account. `doctor` prints the
same steps for a node whose service mode is not set up.
"""

from __future__ import annotations

import sys

from gpuconsole.cli.options import NodeInstallArgs
from gpuconsole.cli.output import say
from gpuconsole.config import DEFAULT_SERVICE_AGENT, DEFAULT_SERVICE_USER, DEFAULT_STATE_DIR, NodeConfig
from gpuconsole.errors import UsageError
from gpuconsole.node.service import sudoers_line

SUDOERS_FILE = "/etc/sudoers.d/gpuconsole"
USERS_GROUP = "gpu"


def setup_steps(*, user: str, state_dir: str, agent_path: str, node: str | None = None) -> list[str]:
    """The exact commands, in order; the agent file comes from `node-install --print`."""
    source = f"--node {node}" if node else f"--state-dir {state_dir} --service-user {user}"
    line = sudoers_line(user, agent_path, USERS_GROUP)
    return [
        f"sudo useradd --system --no-create-home --shell /usr/sbin/nologin {user}",
        f"sudo install -d -m 0755 -o {user} -g {user} {state_dir}",
        f"gpuconsole node-install --print {source} > gcagent.py   # on your machine; copy it to the node",
        f"sudo install -D -m 0755 -o root -g root gcagent.py {agent_path}",
        f"printf '%s\\n' '{line}' > gpuconsole.sudoers",
        f"sudo visudo -cf gpuconsole.sudoers && sudo install -m 0440 -o root -g root gpuconsole.sudoers "
        f"{SUDOERS_FILE}",
    ]


def node_steps(cfg: NodeConfig) -> list[str]:
    return setup_steps(user=cfg.service_user, state_dir=cfg.state_dir, agent_path=cfg.service_agent,
                       node=cfg.name)


def run_node_install(args: NodeInstallArgs) -> int:
    """Print the setup steps, or (--print) the service agent program for the chosen settings."""
    from gpuconsole.ssh.bundle import service_program

    user, state_dir, agent_path, simulate = DEFAULT_SERVICE_USER, DEFAULT_STATE_DIR, DEFAULT_SERVICE_AGENT, 0
    node_name = args.node
    if node_name:
        from gpuconsole.config import load_config

        cfg = load_config(args.config).node(node_name)
        user, state_dir, agent_path, simulate = cfg.service_user, cfg.state_dir, cfg.service_agent, cfg.simulate_gpus
    user = args.service_user or user
    state_dir = args.state_dir or state_dir
    simulate = args.simulate_gpus if args.simulate_gpus is not None else simulate
    from gpuconsole.config import PATH_RE, USER_RE

    if not USER_RE.match(user):
        raise UsageError(f"node-install: --service-user {user!r} is not a user name")
    if not state_dir.startswith("/") or not PATH_RE.match(state_dir) or "/../" in state_dir:
        raise UsageError(f"node-install: --state-dir {state_dir!r} must be an absolute path")
    if not 0 <= simulate <= 64:
        raise UsageError("node-install: --simulate-gpus must be 0..64")
    if args.print:
        sys.stdout.buffer.write(service_program(user=user, state_dir=state_dir, simulate_gpus=simulate))
        sys.stdout.flush()
        return 0
    say(f"service-mode setup (run on the node as an admin; users in group {USERS_GROUP} may then use it):")
    for step in setup_steps(user=user, state_dir=state_dir, agent_path=agent_path, node=node_name):
        say(f"  {step}")
    say('then set mode = "service" for the node (or in [defaults]) and check with `gpuconsole doctor`')
    return 0
