"""``python -m orcnn_ros.replay``: the same as ``orcnn replay``."""

import sys

from orcnn_ros.replay.cli import main

sys.exit(main())
