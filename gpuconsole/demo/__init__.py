"""The demo cluster: real SSH servers on loopback with simulated GPUs, for users, tests and bench."""
