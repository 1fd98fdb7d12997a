"""gpuconsole: a terminal console for shared GPU clusters."""

__version__ = "0.1.0"
