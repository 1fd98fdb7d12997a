"""Fixtures of the integration tests that more than one module uses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration import sshd_fixture
from tests.integration.sshd_fixture import GROUP, USERS, SshdNode


@pytest.fixture(scope="module")
def sshd_node() -> Iterator[SshdNode]:
    """sshd as root on 127.0.0.1, two users in one group, one admin-made shared state dir (the
    modules that use it skip themselves where root, sshd or useradd are missing)."""
    with sshd_fixture.running_sshd(USERS, GROUP, sshd_fixture.cooperative_state_dir(GROUP)) as node:
        yield node
