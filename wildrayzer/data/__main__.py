"""``python -m wildrayzer.data synth | import | check`` (same as ``wildrayzer data ...``)."""

import sys

from ..cli import run_guarded
from .cli import main

sys.exit(run_guarded(main, sys.argv[1:]))
