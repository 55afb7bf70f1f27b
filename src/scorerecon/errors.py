"""Errors that are the user's to fix.

A :class:`UserError` carries one line that names the problem and the fix.  The command line
prints it and exits with status 2; library callers may catch it like any ``ValueError``.
"""


class UserError(ValueError):
    """A problem with the user's input (file, option, shape) rather than a bug."""
