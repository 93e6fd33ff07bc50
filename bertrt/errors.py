"""The one exception type users see: the CLI prints its message on one line and exits with code 2."""


class BertrtError(Exception):
    """Bad input or a failed check that the user can act on (not a bug in bertrt)."""
