"""Stage 1, supernet training: the search loop, its driver, checkpoints, records and observers."""
