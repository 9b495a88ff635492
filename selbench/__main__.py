"""``python -m selbench``: the ``selbench`` command."""
import sys

from selbench.cli import main

sys.exit(main())
