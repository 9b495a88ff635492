"""``python -m selbench.cli``: the ``selbench`` command."""
import sys

from selbench.cli import main

sys.exit(main())
