"""The node side: stdlib-only modules that the client ships to each node and runs with python3.

Nothing in this package may import from the rest of gpuconsole or from third-party packages
(pynvml and psutil are optional, imported inside functions): `gpuconsole/ssh/bundle.py` sends these files to
nodes that have only Python 3.8+ and the NVIDIA driver.
"""
