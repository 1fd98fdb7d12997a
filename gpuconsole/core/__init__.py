"""Headless logic shared by the CLI, the TUI and the watcher: fleet fan-out, polling, reservations."""
