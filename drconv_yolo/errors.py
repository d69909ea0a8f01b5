"""The one exception type for mistakes a user can fix (a bad argument, a missing or malformed file).

Library code raises a subclass of :class:`UserError` with a message that names what is wrong; the command line
prints it as one line and exits with :data:`EXIT_USER_ERROR`. Anything else is a bug and keeps its traceback.
"""

EXIT_OK = 0
EXIT_FAILURE = 1  # an unexpected error (a bug, or a failure outside the user's input): traceback printed
EXIT_USER_ERROR = 2  # a usage or input error, as argparse uses for usage errors
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it


class UserError(Exception):
    """A mistake in the user's arguments or files; the message says what and where (file, line, layer, option)."""
