"""The harness's error for bad input, below every other harness module."""


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit status 2."""
