"""The cold path of a headless command: what it must not pay for (issue 14, item 2)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# Python's audit hook sees every process this interpreter starts (subprocess, posix_spawn, system, exec).
SPAWN_PROBE = textwrap.dedent(
    """
    import json, sys
    spawned = []
    def hook(event, args):
        if event in ("subprocess.Popen", "os.posix_spawn", "os.system", "os.exec", "os.spawn", "os.fork"):
            spawned.append([event, str(args[0])])
    sys.addaudithook(hook)
    import {module}
    import asyncssh
    print(json.dumps({{
        "spawned": spawned,
        "kex": sorted(a.decode() for a in asyncssh.kex.get_kex_algs()),
        "mac": sorted(a.decode() for a in asyncssh.mac.get_mac_algs()),
    }}))
    """
)


def _import_report(module: str) -> dict[str, list[object]]:
    result = subprocess.run([sys.executable, "-c", SPAWN_PROBE.format(module=module)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report: dict[str, list[object]] = json.loads(result.stdout.splitlines()[-1])
    return report


def test_importing_the_ssh_layer_spawns_no_process() -> None:
    """asyncssh's import probes for liboqs/libnettle with ctypes.util.find_library (ldconfig, gcc, ld)."""
    report = _import_report("gpuconsole.ssh.connection")
    assert report["spawned"] == []


def test_the_demo_server_import_spawns_no_process() -> None:
    assert _import_report("gpuconsole.demo.nodes")["spawned"] == []


def test_the_quiet_import_offers_the_same_algorithms_as_a_plain_one() -> None:
    """Same answer as ctypes' own probe: the key exchanges and MACs asyncssh offers are unchanged."""
    quiet = _import_report("gpuconsole.ssh.connection")
    plain = _import_report("json")
    assert plain["spawned"], "the plain import is expected to probe with subprocesses on this machine"
    assert quiet["kex"] == plain["kex"]
    assert quiet["mac"] == plain["mac"]


def test_the_linker_cache_answers_as_ctypes_does() -> None:
    """Every name the in-process lookup answers gets ctypes' own (ldconfig/gcc/ld) answer."""
    import ctypes.util

    from gpuconsole.ssh.quietimport import cached_soname

    answered = 0
    for name in ("c", "m", "z", "ssl", "crypto", "ffi", "nettle", "oqs", "gcc_s", "no-such-library-x"):
        ok, soname = cached_soname(name)
        if ok:
            answered += 1
            assert soname == ctypes.util.find_library(name), name
    assert answered or sys.platform != "linux"
