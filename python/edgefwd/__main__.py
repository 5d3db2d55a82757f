import sys

from edgefwd.cli import main

sys.exit(main())
