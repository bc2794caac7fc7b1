"""``python -m streamser``."""

import sys

from .cli import main

sys.exit(main())
