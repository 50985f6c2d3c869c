"""Fault injection for crash tests: ``ALFRAME_KILL_AT=<point>:<n>`` sends SIGKILL to the
process the ``n``-th time (1-based) it reaches ``point``, as a power cut or the OOM killer
would. Without the variable every :func:`point` call is a no-op.

Points: ``fit`` / ``fit_done`` (a round's training), ``score`` / ``query_done`` (pool
scoring and the strategy), ``oracle`` / ``oracle_done`` (around the oracle's answer),
``state_saved`` (pool state written, ``queries.csv`` not yet), ``logged`` (a round's metrics
sent to MLflow).

``ALFRAME_KILL_HOLD=<file>`` holds the process at the kill point first: it writes its PID into
``<file>`` and waits until the file is removed, so a test can try a second process against the
run folder while the first one is alive, at that very point, before the SIGKILL.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

_counts: Counter[str] = Counter()


def point(name: str) -> None:
    """Count a pass through ``name`` and SIGKILL this process when ``ALFRAME_KILL_AT`` says so."""
    target = os.environ.get("ALFRAME_KILL_AT")
    if not target:
        return
    _counts[name] += 1
    where, _, n = target.partition(":")
    if where == name and _counts[name] == int(n or 1):
        hold = os.environ.get("ALFRAME_KILL_HOLD")
        if hold:
            with open(hold + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.replace(hold + ".tmp", hold)
            while os.path.exists(hold):
                time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)
