import sys

from msldm.cli import main

sys.exit(main())
