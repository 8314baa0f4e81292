"""The version of asyncbench (one place: the package, the CLI, the files it writes)."""

__version__ = "0.1.0"
