"""Ground truth: every cell of a small space trained stand-alone (``selbench tabulate``), kept as a table."""
