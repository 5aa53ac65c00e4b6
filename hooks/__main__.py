"""`python -m hooks` = the `llmsafespace` command (hooks/offline/cli.py)."""
import sys

from .offline.cli import main

sys.exit(main())
