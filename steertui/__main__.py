"""`python -m steertui` is the `steertui` command."""

import sys

from steertui.cli import main

sys.exit(main())
