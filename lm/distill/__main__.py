"""`python -m lm.distill`: see `lm.distill`."""
import sys

from lm.distill.cli import main
from lm.errors import run_cli

sys.exit(run_cli(main))
