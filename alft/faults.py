"""Fault injection for the crash-and-resume tests: SIGKILL this process at a named point.

``ALFT_FAULT=r1.train.start`` kills the process when round 1's train step starts;
``r1.labels.commit`` kills it inside the store transaction that records round 1's labels.
Unset (always, outside tests), ``point()`` is a dictionary lookup and nothing else.
"""

from __future__ import annotations

import fnmatch
import os
import signal


def point(name: str) -> None:
    target = os.environ.get("ALFT_FAULT")
    if target and fnmatch.fnmatchcase(name, target):
        os.kill(os.getpid(), signal.SIGKILL)
