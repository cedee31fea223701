"""The one error type a user sees.

Every problem with the user's input (a config key, a dataset folder, a checkpoint)
is raised as :class:`UdasError` with a one-line message that names the key or the
path and says what to do. Entry points print it as ``error: <message>`` and exit 2.
"""


class UdasError(Exception):
    """A user-facing error: a single line naming the offending key or path."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
