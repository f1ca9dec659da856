"""python -m reproductions: the `repro` command line, for a checkout that is not installed."""

import sys

from reproductions.cli import main

sys.exit(main())
