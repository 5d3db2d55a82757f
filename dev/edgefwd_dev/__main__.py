"""python -m edgefwd_dev up|down|status [--dir DIR]  (what scripts/services.sh runs)."""

import sys

from .services import main

sys.exit(main())
