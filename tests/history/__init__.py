"""A Jepsen/Knossos-style history harness: concurrent clients, a nemesis, and a checker (issue 11)."""
