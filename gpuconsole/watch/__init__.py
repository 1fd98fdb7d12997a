"""`gpuconsole watch`: the idle-GPU alert watcher.

Pure parts (reusable from the console): `detect` (telemetry → current conditions) and `tracker`
(conditions → onset / repeat / resolved alerts). I/O parts: `statefile`, `sinks`, `actions`,
`runner`. Nothing here imports Textual or boto3.
"""
