"""``python -m kubeworkers`` is the ``kubeworkers`` command."""

import sys

from kubeworkers.cli import main

sys.exit(main())
