"""``python -m cavmae``: the same as the ``cavmae`` command."""

import sys

from cavmae.cli import main

sys.exit(main())
