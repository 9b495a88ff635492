"""Stage 2, selection: the selector contract, the context a selector works in, and ``select()``."""
