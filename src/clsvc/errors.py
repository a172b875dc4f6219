"""The one exception type users see.

Every failure caused by the user's input (files, configs, checkpoints, names) is raised as
:class:`ClsvcError` with a message that names the offending file or value *and* the fix. The CLI
prints that single line and exits non-zero; library callers can catch it.
"""


class ClsvcError(Exception):
    """A user-facing error: the message is complete and is printed without a traceback."""
