"""``python -m clsvc`` (needed by ``torchrun -m clsvc train ...``)."""

import sys

from .cli import main

sys.exit(main())
