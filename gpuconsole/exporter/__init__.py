"""`gpuconsole exporter`: the fleet as Prometheus metrics (the only package that imports
prometheus_client), from the same poller as the console and the watcher."""
