import sys
from pathlib import Path

_DEV = str(Path(__file__).resolve().parents[2] / "dev")
if _DEV not in sys.path:
    sys.path.insert(0, _DEV)

from edgefwd_dev.pytest_fixtures import *  # noqa: E402,F401,F403
