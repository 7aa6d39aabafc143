"""Errors that reach the user as a message, not as a traceback.

Every problem the user can fix (a bad file, an unknown plugin, an option that
does not fit) is raised as a ``ReviewToolkitError``. The CLI prints its message
and exits non-zero; library callers can catch it by type.
"""


class ReviewToolkitError(Exception):
    """A problem the user can fix; the message says what and how."""


class DataError(ReviewToolkitError):
    """The input data cannot be used as given (file, column, row or label)."""


class PluginError(ReviewToolkitError):
    """A plugin is unknown, broken, blocked or incompatible with the others chosen."""


class ConfigError(ReviewToolkitError):
    """An option or configuration file value is invalid."""


class RunDirectoryError(ReviewToolkitError):
    """A run directory is missing, incomplete, tampered with or would be overwritten."""


class FileSystemError(ReviewToolkitError):
    """The operating system refused a read or write: full disk, read-only, permissions, bad path."""
