"""The page's own files (``templates/``, ``static/``), read from the installed package.

Read through ``importlib.resources`` so the page works from a wheel or a zip as well as
from a checkout; the callers keep what they read in module constants, once per process.
"""

from __future__ import annotations

from importlib.resources import files


def read(folder: str, name: str) -> str:
    """The text of ``folder/name`` inside ``alft.human.page`` (UTF-8)."""
    return (files("alft.human.page") / folder / name).read_text(encoding="utf-8")
