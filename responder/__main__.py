"""`python -m responder` runs the `responder` command."""

import sys

from responder.cli import main

sys.exit(main())
