"""The demo cluster: real SSH servers on loopback with simulated GPUs, for users, tests and bench."""

# asyncssh is imported through the ssh package first, so its import starts no ldconfig/gcc/ld.
import gpuconsole.ssh  # noqa: F401
