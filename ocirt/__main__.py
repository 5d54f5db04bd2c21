"""`python -m ocirt` runs the CLI."""

import sys

from ocirt.cli import main

sys.exit(main())
