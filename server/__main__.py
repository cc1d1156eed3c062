"""`python -m server serve ...`: the daemon without the core CLI (see server.cli)."""

import sys

from server.cli import main

sys.exit(main())
