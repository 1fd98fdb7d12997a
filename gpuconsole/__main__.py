"""`python -m gpuconsole` entry point."""

import sys

from gpuconsole.cli import main

sys.exit(main())
