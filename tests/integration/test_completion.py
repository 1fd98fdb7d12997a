"""Issue 13 item 2: `gpuconsole completion bash|zsh|fish` — scripts that load in each shell and
complete commands, node names from the config and this user's recent ids, in real shells; the
values they get are only ever safe words, and a TAB never prints a traceback."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gpuconsole.demo.cluster import DemoThread
from tests.helpers import REPO, run_cli

SHELLS = ("bash", "zsh", "fish")
CONFIG = textwrap.dedent(
    """\
    [[nodes]]
    name = "gpu-a1"
    host = "127.0.0.1"

    [[nodes]]
    name = "gpu-b2"
    host = "127.0.0.1"
    """
)
HOSTILE_IDS = ["$(touch {marker})", "`touch {marker}`", "a;touch {marker}", "\x1b]2;pwned\x07", "-rf", "r-ok.1"]


def _shell(name: str) -> str:
    """The shell's binary; skipped where it is missing, except in CI (.ci/run installs all three)."""
    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing in CI (.ci/run installs bash, zsh and fish)")
        pytest.skip(f"{name} not installed")
    return found


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """An environment whose `gpuconsole` is this checkout, with a two-node config and an empty
    cache and config dir of its own (so nothing of the real user's leaks in)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "gpuconsole"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m gpuconsole "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    return {
        **os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(REPO),
        "GPUCONSOLE_CONFIG": str(config), "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"), "HOME": str(tmp_path),
    }


def _script(shell: str, tmp_path: Path, env: dict[str, str] | None = None) -> Path:
    result = run_cli("completion", shell, env=env)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    path = tmp_path / f"gpuconsole.{shell}"
    path.write_text(result.stdout)
    return path


def _cache(env: dict[str, str], ids: list[str]) -> None:
    path = Path(env["XDG_CACHE_HOME"]) / "gpuconsole" / "ids"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


# bash: the generated function, called as readline would, with COMP_WORDS/COMP_CWORD set.
BASH_DRIVER = """
eval "$(<"$1")"  # as README says to install it
shift
COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
COMPREPLY=()
_shtab_gpuconsole
printf '%s\\n' "${COMPREPLY[@]}"
"""


def _bash_complete(script: Path, env: dict[str, str], *words: str) -> list[str]:
    result = subprocess.run([_shell("bash"), "--norc", "--noprofile", "-c", BASH_DRIVER, "bash", str(script), *words],
                            capture_output=True, text=True, timeout=30, env=env, stdin=subprocess.DEVNULL)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    return [line for line in result.stdout.splitlines() if line]


def _fish_complete(script: Path, env: dict[str, str], line: str) -> list[str]:
    result = subprocess.run([_shell("fish"), "--no-config", "-c", 'source $argv[1]; complete -C $argv[2]',
                             str(script), line], capture_output=True, text=True, timeout=30, env=env,
                            stdin=subprocess.DEVNULL)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    return [row.split("\t")[0] for row in result.stdout.splitlines() if row]


@pytest.mark.parametrize("shell", SHELLS)
def test_the_script_loads_in_its_shell(shell: str, tmp_path: Path) -> None:
    script = _script(shell, tmp_path)
    result = subprocess.run([_shell(shell), "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert "_gpuconsole_complete_nodes" in script.read_text()  # --node completes from the config


def test_completion_needs_no_config_and_names_a_bad_shell(tmp_path: Path) -> None:
    env = {"GPUCONSOLE_CONFIG": str(tmp_path / "missing.toml")}
    assert run_cli("completion", "bash", env=env).returncode == 0
    bad = run_cli("completion", "tcsh", env=env)
    assert bad.returncode == 2
    assert bad.stderr.startswith("gpuconsole: completion: ") and "bash" in bad.stderr, bad.stderr


def test_completion_imports_no_textual_boto3_asyncssh_or_config() -> None:
    probe = ("import sys\nfrom gpuconsole.cli import main\ncode = main(['completion', 'fish'])\n"
             "heavy = [m for m in ('textual', 'boto3', 'botocore', 'asyncssh', 'gpuconsole.config')\n"
             "         if m in sys.modules]\n"
             "print('LOADED=' + ','.join(heavy), code, file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.stderr.strip().splitlines()[-1] == "LOADED= 0", result.stderr


def test_bash_completes_commands_node_names_and_ids(home: dict[str, str], tmp_path: Path) -> None:
    script = _script("bash", tmp_path, env=home)
    assert _bash_complete(script, home, "gpuconsole", "sta") == ["status"]
    assert _bash_complete(script, home, "gpuconsole", "cloud", "d") == ["down"]
    assert _bash_complete(script, home, "gpuconsole", "status", "--node", "") == ["gpu-a1", "gpu-b2"]
    assert _bash_complete(script, home, "gpuconsole", "reserve", "--gpus", "1", "--node", "gpu-b") == ["gpu-b2"]
    # A --config given on the line is the one read.
    assert _bash_complete(script, home, "gpuconsole", "--config", str(tmp_path / "none.toml"), "status",
                          "--node", "") == []
    _cache(home, ["r-1a2b", "j-9z"])
    assert sorted(_bash_complete(script, home, "gpuconsole", "renew", "")) == ["j-9z", "r-1a2b"]


def test_fish_completes_commands_and_node_names(home: dict[str, str], tmp_path: Path) -> None:
    script = _script("fish", tmp_path, env=home)
    assert _fish_complete(script, home, "gpuconsole sta") == ["status"]
    assert _fish_complete(script, home, "gpuconsole submit --node ") == ["gpu-a1", "gpu-b2"]


def test_zsh_completes_a_node_name_at_a_real_prompt(home: dict[str, str], tmp_path: Path) -> None:
    """zsh completes only inside its line editor: a zpty drives an interactive zsh and reads the line."""
    script = _script("zsh", tmp_path, env=home)
    driver = textwrap.dedent(
        """\
        zmodload zsh/zpty
        zpty z 'zsh -f -i'
        zpty -w z 'PS1="> "; autoload -Uz compinit; compinit -u -D; eval "$(<$SCRIPT)"; print READY'
        zpty -n -w z $'gpuconsole reserve --node gpu-b\\t'
        seen=""
        for i in {1..100}; do
          if zpty -r -t z chunk; then seen+="$chunk"; else sleep 0.1; fi
          [[ $seen == *"--node gpu-b2"* ]] && { print FOUND; break; }
        done
        zpty -d z
        """
    )
    result = subprocess.run([_shell("zsh"), "-f", "-c", driver], capture_output=True, text=True, timeout=60,
                            env={**home, "SCRIPT": str(script)}, stdin=subprocess.DEVNULL)
    assert "FOUND" in result.stdout.splitlines(), result.stdout[-2000:]


def test_hostile_ids_never_reach_the_shell(home: dict[str, str], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _cache(home, [i.format(marker=marker) for i in HOSTILE_IDS])
    values = run_cli("__complete", "ids", env=home)
    assert (values.returncode, values.stdout, values.stderr) == (0, "r-ok.1\n", "")
    script = _script("bash", tmp_path, env=home)
    assert _bash_complete(script, home, "gpuconsole", "cancel", "") == ["r-ok.1"]
    assert not marker.exists()


@pytest.mark.parametrize("case", ["bad-config", "missing-config", "cache-is-a-dir", "unknown-kind", "no-kind"])
def test_a_tab_never_prints_a_traceback(case: str, home: dict[str, str], tmp_path: Path) -> None:
    argv = ["__complete", "nodes"]
    if case == "bad-config":
        Path(home["GPUCONSOLE_CONFIG"]).write_text("[[nodes]\nname = ")
    elif case == "missing-config":
        argv += ["--config", str(tmp_path / "none.toml")]
    elif case == "cache-is-a-dir":
        (Path(home["XDG_CACHE_HOME"]) / "gpuconsole" / "ids").mkdir(parents=True)
        argv = ["__complete", "ids"]
    else:
        argv = ["__complete", "xyzzy"] if case == "unknown-kind" else ["__complete"]
    result = run_cli(*argv, env=home)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_reserve_and_submit_feed_the_id_cache(demo: DemoThread, home: dict[str, str]) -> None:
    """The ids this user's `reserve` and `submit` printed are what `renew`/`logs` <TAB> offer."""
    env = {"XDG_CACHE_HOME": home["XDG_CACHE_HOME"]}
    reserved = run_cli("reserve", "--gpus", "1", "--json", config=demo.config_path, env=env)
    assert reserved.returncode == 0, reserved.stderr
    submitted = run_cli("submit", "--gpus", "1", "--json", "--", "true", config=demo.config_path, env=env)
    assert submitted.returncode == 0, submitted.stderr
    ids = run_cli("__complete", "ids", env=env).stdout.split()
    assert ids == [json.loads(reserved.stdout)["id"], json.loads(submitted.stdout)["id"]]


def test_the_id_cache_keeps_the_newest_safe_ids(home: dict[str, str]) -> None:
    """Thirty ids at most, newest last, each once; a node's hostile id is never stored."""
    code = ("from gpuconsole.cli.completion import remember_id\n"
            "for n in range(40): remember_id(f'r-{n}')\n"
            "remember_id('r-5'); remember_id('$(reboot)'); remember_id('j-\\x1b[31m')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=home,
                            cwd=REPO)
    assert (result.returncode, result.stderr) == (0, "")
    ids = run_cli("__complete", "ids", env=home).stdout.split()
    assert ids == [f"r-{n}" for n in range(11, 40)] + ["r-5"]
    assert len(ids) == 30


def test_a_fifo_as_the_id_cache_never_hangs_a_tab_or_a_reserve(home: dict[str, str]) -> None:
    """The cache is read as a regular file of bounded size: a FIFO in its place (or a link to one)
    would block every TAB, and `reserve`'s remember_id after the grant, forever."""
    path = Path(home["XDG_CACHE_HOME"]) / "gpuconsole" / "ids"
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    result = run_cli("__complete", "ids", env=home, timeout_s=10)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    remember = subprocess.run([sys.executable, "-c", "from gpuconsole.cli.completion import remember_id\n"
                               "remember_id('r-after')\n"], capture_output=True, text=True, timeout=10, env=home,
                              cwd=REPO)
    assert (remember.returncode, remember.stderr) == (0, "")
    assert run_cli("__complete", "ids", env=home, timeout_s=10).stdout == "r-after\n"
