"""``python -m app.cli`` (e.g. under ``torchrun``): the ``xnet`` command."""

import sys

from app.cli import main

sys.exit(main())
