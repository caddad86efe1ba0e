"""User-facing errors.

A :class:`UserError` is something the user can fix (bad file, bad key, wrong view count). The CLI prints its message
as one line and exits with code 2; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

EXIT_USER_ERROR = 2


class UserError(Exception):
    """An error caused by user input; the message must say what is wrong and what to do."""


class ConfigError(UserError):
    """Unknown config key, wrong value type, missing config file."""


class DataError(UserError):
    """Missing or malformed dataset file."""


class CheckpointError(UserError):
    """Missing, foreign, truncated or mismatched checkpoint."""
