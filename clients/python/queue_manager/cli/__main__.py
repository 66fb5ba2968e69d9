"""``python -m queue_manager.cli``."""

import sys

from queue_manager.cli import main

sys.exit(main())
