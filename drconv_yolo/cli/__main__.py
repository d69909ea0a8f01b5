"""``python -m drconv_yolo.cli ...`` is ``drconv-yolo ...``."""

import sys

from . import main

sys.exit(main())
