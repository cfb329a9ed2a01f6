"""``python -m neus_stage``: the ``neus-stage`` command, for environments whose bin folder is not on PATH."""

import sys

from .cli import main

sys.exit(main())
