"""``python -m wildrayzer <command> ...``: the console entry point, for machines where the package is on PYTHONPATH
but not installed (e.g. a GPU node running tools/gpu_schedule.sh from a checkout)."""

import sys

from .cli import main

sys.exit(main())
