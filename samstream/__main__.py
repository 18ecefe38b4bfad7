"""`python -m samstream` = the `samstream` command."""

import sys

from samstream.cli import main

sys.exit(main())
