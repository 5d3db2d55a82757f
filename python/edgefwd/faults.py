"""Deterministic crash points, for the crash tests only.

``EDGEFWD_CRASH_AT=<point>:<n>`` makes the process SIGKILL itself the n-th time it passes
<point> (n defaults to 1).  Unset, ``crash_point`` returns at once: it is called once per
commit or batch, never per message.

Points: ``ingest.after_commit`` (durable, not yet acked), ``ingest.after_ack`` (acks handed
to paho, next commit not begun), ``queue.evict`` (inside an eviction transaction, before
it commits), ``queue.expire`` (likewise for max_age), ``drainer.after_produce`` (records
handed to librdkafka, batch not deleted), ``drainer.before_delete`` (delivery reports in,
delete not committed).
"""

from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("EDGEFWD_CRASH_AT", "")
_POINT, _, _NTH = _SPEC.partition(":")
_remaining = int(_NTH or 1) if _POINT else 0


def crash_point(name: str) -> None:
    global _remaining
    if name != _POINT or _remaining <= 0:
        return
    _remaining -= 1
    if _remaining == 0:
        os.kill(os.getpid(), signal.SIGKILL)
