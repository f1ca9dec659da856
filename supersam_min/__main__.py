"""python -m supersam_min: the `supersam` command line, for a checkout that is not installed."""

import sys

from supersam_min.cli import main

sys.exit(main())
