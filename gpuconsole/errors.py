"""Exit codes of the CLI contract and the errors that carry them."""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Process exit codes promised by the CLI contract (docs/design.md section 3.3)."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    NO_CAPACITY = 3
    PERMISSION = 4
    UNREACHABLE = 5
    NOT_FOUND = 6
    INTEGRITY = 7  # `audit`: a node's ledger chain is broken


class GpuConsoleError(Exception):
    """An expected failure: printed as one line on stderr and mapped to an exit code."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(GpuConsoleError):
    """Bad flag, value or duration."""

    exit_code = ExitCode.USAGE


class ConfigError(GpuConsoleError):
    """Missing or malformed configuration; the message names file, line and key."""

    exit_code = ExitCode.USAGE


class NoCapacityError(GpuConsoleError):
    """Not enough free GPUs now, or a wait timed out."""

    exit_code = ExitCode.NO_CAPACITY


class PermissionDeniedError(GpuConsoleError):
    """The node refused because the caller does not own the object."""

    exit_code = ExitCode.PERMISSION


class UnreachableError(GpuConsoleError):
    """SSH connection, host key or authentication failure."""

    exit_code = ExitCode.UNREACHABLE


class NotFoundError(GpuConsoleError):
    """Unknown node, reservation, job or instance id."""

    exit_code = ExitCode.NOT_FOUND


# Error codes the node agent puts in its replies, mapped to client exceptions.
AGENT_ERROR_TYPES: dict[str, type[GpuConsoleError]] = {
    "invalid": UsageError,
    "insufficient": NoCapacityError,
    "permission": PermissionDeniedError,
    "not_found": NotFoundError,
    "stale_token": NotFoundError,
    # The node cannot serve changes now (state lock held too long, unreadable state, a full or
    # unwritable state dir): like an unreachable node, other nodes may still take the request.
    "busy": UnreachableError,
    "corrupt": UnreachableError,
    "io": UnreachableError,
    "too_large": UsageError,
}


class AgentError(GpuConsoleError):
    """The agent answered with an error; `code` is the agent's error code."""

    def __init__(self, node: str, error: dict[str, Any]) -> None:
        self.code = str(error.get("code", "internal"))
        self.detail = error
        message = f"{node}: {error.get('message', self.code)}"
        # Our agent's "internal" is a bug (exit 1); a code no agent of ours sends is the node's fault:
        # exit 5 like any other node that cannot serve, never the client's "internal error".
        default = GpuConsoleError if self.code == "internal" else UnreachableError
        super().__init__(message, AGENT_ERROR_TYPES.get(self.code, default).exit_code)
