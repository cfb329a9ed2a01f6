"""The one exception type for problems a user can fix: the CLI prints its message without a traceback."""


class StageError(Exception):
    """A user-facing error: the message names the file and what to do about it."""
