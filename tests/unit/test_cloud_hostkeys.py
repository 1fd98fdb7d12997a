"""Host keys of EC2 instances without an emulator's host_map: learnt from the console block, learnt
afresh when EC2 hands an address to a new instance, and a key not learnt yet means "try again"."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuconsole.cloud.hostkeys import cloud_known_hosts_path, parse_console_host_keys
from gpuconsole.cloud.inventory import host_keys_learnt, learn_host_keys
from gpuconsole.config import AwsConfig, parse_config
from gpuconsole.model.cloud import Instance

OLD_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE9sZA=="
NEW_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE5ldw=="


class Consoles:
    """EC2's GetConsoleOutput as cloud-init fills it: per instance, the text so far."""

    def __init__(self) -> None:
        self.text: dict[str, str] = {}

    def boot(self, instance_id: str, key: str) -> None:
        self.text[instance_id] = (f"cloud-init…\n-----BEGIN SSH HOST KEY KEYS-----\n{key} root@ip\n"
                                  "-----END SSH HOST KEY KEYS-----\n")

    def console_host_keys(self, instance_id: str) -> list[str]:
        return parse_console_host_keys(self.text.get(instance_id, "booting…"))


def _running(instance_id: str, address: str) -> Instance:
    return Instance(instance_id, "g6.xlarge", "running", False, 1, 0.8, 0.0, True, "me", address, "10.0.0.9")


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    base = parse_config("", tmp_path / "c.toml")
    import dataclasses

    return dataclasses.replace(base, aws=AwsConfig(region="us-east-1", ami="ami-1", address="public"))


def test_a_reused_address_is_learnt_afresh(config) -> None:  # type: ignore[no-untyped-def]
    consoles = Consoles()
    first, second = _running("i-0000000000000001", "54.1.2.3"), _running("i-0000000000000002", "54.1.2.3")
    consoles.boot(first.id, OLD_KEY)
    learn_host_keys(consoles, config, [first])
    assert f"54.1.2.3 {OLD_KEY}" in cloud_known_hosts_path().read_text()
    assert host_keys_learnt(config, first)
    # The first instance is gone; EC2 gives its address to a new one with its own keys.
    consoles.boot(second.id, NEW_KEY)
    assert not host_keys_learnt(config, second)
    learn_host_keys(consoles, config, [second])
    text = cloud_known_hosts_path().read_text()
    assert NEW_KEY in text and OLD_KEY not in text
    assert host_keys_learnt(config, second)


def test_keys_that_arrive_after_sshd_are_learnt_on_a_later_round(config) -> None:  # type: ignore[no-untyped-def]
    consoles = Consoles()
    instance = _running("i-0000000000000003", "54.9.9.9")
    learn_host_keys(consoles, config, [instance])  # sshd may answer already; the console has no keys yet
    assert not host_keys_learnt(config, instance)  # wait_ready retries instead of failing on the host key
    consoles.boot(instance.id, NEW_KEY)
    learn_host_keys(consoles, config, [instance])
    assert host_keys_learnt(config, instance)
