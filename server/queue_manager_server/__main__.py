"""``python -m queue_manager_server`` is ``qm serve``."""

import sys

from queue_manager_server.cli import main

sys.exit(main())
