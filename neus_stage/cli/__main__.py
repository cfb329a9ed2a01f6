"""``python -m neus_stage.cli``: the ``neus-stage`` command (as ``python -m neus_stage``)."""

import sys

from . import main

sys.exit(main())
