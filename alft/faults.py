"""Fault injection for the crash-and-resume tests: SIGKILL this process at a named point.

``ALFT_FAULT=r1.train.start`` kills the process when round 1's train step starts;
``r1.labels.commit`` kills it inside the store transaction that records round 1's labels.
The pattern is an ``fnmatch`` pattern (``r*.track.start``). Unset (always, outside tests),
``point()`` is a dictionary lookup and nothing else.

Named points: ``r{round}.{step}.start`` (a step about to compute) and ``r{round}.{step}.commit``
(inside the transaction that records it) for the seven steps (``alft.campaign.run_step``);
``r{round}.labels.submit`` (inside the transaction of a human submission, ``alft.labeling``);
``r{round}.prelabel.commit`` (inside the transaction storing a batch's proposals, ``alft.campaign.prelabel``);
``embed.flush`` (vectors committed to the cache); ``r{round}.track.start`` and ``r{round}.track``
(MLflow round logging begins; everything logged, the store not yet told).

``ALFT_FAULT_SIGNAL=STOP`` sends SIGSTOP instead of SIGKILL: the process pauses at the
point (a test then changes the world, e.g. stops the MLflow server, and sends SIGCONT).
"""

from __future__ import annotations

import fnmatch
import os
import signal


def point(name: str) -> None:
    target = os.environ.get("ALFT_FAULT")
    if target and fnmatch.fnmatchcase(name, target):
        sig = os.environ.get("ALFT_FAULT_SIGNAL", "KILL").upper().removeprefix("SIG")
        os.kill(os.getpid(), getattr(signal, f"SIG{sig}", signal.SIGKILL))
