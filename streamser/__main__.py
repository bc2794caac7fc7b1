"""``python -m streamser``."""

import sys

from streamser.cli import main

sys.exit(main())
