"""``python -m minidiff ...``: see :mod:`minidiff.cli`."""
import sys

from .cli import main

sys.exit(main())
