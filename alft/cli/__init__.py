"""The ``alft`` command line: run, serve, strategies, status, compare, export, label, labels, target.

``app`` (defined in ``alft.cli.app``) is the console entry point ``alft = "alft.cli:app"``.
Each command module registers its commands on it when imported; ``alft --help`` lists
them in the order they were registered, so the import order below is the help order.
"""

from alft.cli.app import app

# run, strategies, status, compare, export, label, serve, target; then the `labels` group
from alft.cli import run, status, export, labels, serve, target  # noqa: F401  # isort: skip

__all__ = ["app"]
