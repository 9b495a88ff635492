"""Errors that mean "the user asked for something wrong", reported as one line by the CLI."""


class SelbenchError(Exception):
    """A user-facing error: the message says what went wrong, where, and what to do."""


class PluginError(SelbenchError):
    """A plugin registered something invalid or clashing."""


class GenotypeError(SelbenchError):
    """A genotype is malformed or not valid in its search space."""


class CheckpointError(SelbenchError):
    """A checkpoint file is missing, corrupt, or does not match the requested supernet."""


class OptionError(SelbenchError):
    """An unknown or ill-typed option was given to a plugin."""


class StoreError(SelbenchError):
    """A unit configuration cannot be keyed, or a store operation was misused."""
