"""``python -m ttame`` runs the command line."""

import sys

from ttame.cli import main

sys.exit(main())
