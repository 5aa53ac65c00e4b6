"""`python -m hooks` = the `llmsafespace` command (hooks/cli.py)."""
import sys

from .cli import main

sys.exit(main())
