"""`python -m llmsafespace exec|run ...` (the same as `llmsafespace exec|run`)."""
import sys

from .cli import main

if sys.argv[1:2] not in (["exec"], ["run"]):
    sys.stderr.write("usage: python -m llmsafespace exec|run ... (--help for either)\n")
    sys.exit(2)
sys.exit(main(sys.argv[1], sys.argv[2:]))
