"""`python -m bertrt` is the `bertrt` command."""

import sys

from bertrt.cli import main

sys.exit(main())
