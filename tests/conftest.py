"""Shared test set-up: the dev services package on the path and its real-server fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "dev") not in sys.path:
    sys.path.insert(0, str(ROOT / "dev"))

from edgefwd_dev.pytest_fixtures import *  # noqa: E402,F401,F403
