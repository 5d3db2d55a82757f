"""What the gateway knows about its own clock: synchronization state and the boot id."""

from __future__ import annotations

import ctypes
import uuid

_TIME_ERROR = 5  # adjtimex(2): "clock not synchronized"


def _load_adjtimex():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.adjtimex
    except (OSError, AttributeError):
        return None


_adjtimex = _load_adjtimex()


def clock_synchronized() -> bool:
    """True when the kernel says the system clock is disciplined (NTP/chrony/GPS).

    adjtimex with modes=0 only reads; the kernel reports TIME_ERROR until a time daemon has
    synchronized the clock.  Without adjtimex we cannot tell, and say synchronized so that
    records are not marked on platforms that lack the call.
    """
    if _adjtimex is None:
        return True
    buf = ctypes.create_string_buffer(512)  # struct timex, zeroed: modes = 0
    return _adjtimex(buf) != _TIME_ERROR


def boot_id() -> bytes:
    """The kernel's id of this boot (16 bytes); monotonic times compare only within one boot."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return uuid.UUID(f.read().strip()).bytes
    except (OSError, ValueError):
        return bytes(16)
