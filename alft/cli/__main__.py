"""``python -m alft.cli``: the same entry point as the ``alft`` command."""

from alft.cli import app

app()
