"""``python -m wildrayzer.pseudolabel`` == ``wildrayzer pseudolabel``."""

import sys

from ..cli import run_guarded
from .cli import main

sys.exit(run_guarded(main, sys.argv[1:]))
