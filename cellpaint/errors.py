"""What the command line reports as the user's mistake: one line, exit code 2, never a traceback."""

EXIT_INPUT = 2


class UsageError(Exception):
    """A problem with what the user gave us: printed as one line, exit 2."""
